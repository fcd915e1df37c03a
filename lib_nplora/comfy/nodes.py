"""The ComfyUI nodes: NP-LoRA Loader, NP-LoRA Save, NP-LoRA Analyze, NP-LoRA Set (category ``loaders/NP-LoRA``).

Several contents and styles: NP-LoRA Set nodes chain (lora name + own weight + the previous set)
into an ``NPLORA_SET``; connected to a node's optional ``contents`` / ``styles`` input it replaces
that side's picker. Without one, a node fuses its two pickers, as before sets existed.

Their inputs come from ``params.PARAMS`` (``inputs.py``); names come from ComfyUI's ``loras`` list
(``folders.py``). Every file goes first through the engine's hardened reader (through the shared
cache: a mu sweep over queued prompts reads each file and computes each style subspace once);
an ``NpLoraError`` (bad name, a pair for another model, a bad file) is raised as it is, so ComfyUI
reports it as that node's error for that prompt and keeps serving.
"""

from __future__ import annotations

import os
from pathlib import Path

import comfy.utils

from ..app.index import check_name
from ..app.request import FusionRequest, set_text
from ..app.service import FusionService, default_output_name
from ..cli import format_analysis
from ..formats.atomic import file_version
from .chart_image import chart_image
from .folders import ComfyLoraIndex, lora_names
from ..params import MAX_WEIGHT
from .inputs import SET_TYPE, params_inputs, request_of, set_inputs, set_refs
from .models import arch_of
from .patching import apply_all, comfy_patches, lora_key_map, project_patches
from .projection import projected_set

CATEGORY = "loaders/NP-LoRA"
SERVICE = FusionService()


def _log(text: str) -> None:
    print(f"NP-LoRA: {text}", flush=True)


class _StateDicts:
    """The files' tensors as ComfyUI reads them (``comfy.utils.load_torch_file``, as ``LoraLoader``),
    kept per node for the last request's files (at least two) and read again when a file changes."""

    def __init__(self):
        self._kept: dict[str, tuple[tuple, dict]] = {}

    def get(self, path: str, keep: int = 2) -> dict:
        version = file_version(os.stat(path))
        hit = self._kept.get(path)
        if hit is not None and hit[0] == version:
            return hit[1]
        sd = comfy.utils.load_torch_file(path, safe_load=True)
        self._kept = {k: v for k, v in self._kept.items() if k != path}
        while len(self._kept) >= max(keep, 2):
            self._kept.pop(next(iter(self._kept)))
        self._kept[path] = (version, sd)
        return sd


class NpLoraLoader:
    """Fuse a content and a style LoRA and apply the result to MODEL and CLIP."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL", "CLIP")
    OUTPUT_TOOLTIPS = ("The diffusion model with the fused LoRA.", "The CLIP model with the fused LoRA.")
    FUNCTION = "load"
    DESCRIPTION = ("NP-LoRA: the content LoRA with the style's principal input directions projected out "
                   "(mu: 0 = the two LoRAs stacked, 0.5 = the paper), plus the style LoRA. Applied through "
                   "ComfyUI's own LoRA patching; the base model is not modified.")

    def __init__(self):
        self._files = _StateDicts()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "The diffusion model the fusion is applied to."}),
                             "clip": ("CLIP", {"tooltip": "The CLIP model the fusion is applied to."}),
                             **params_inputs(lora_names())},
                "optional": {**params_inputs(lora_names(), later=True), **set_inputs()}}

    def load(self, model, clip, contents=None, styles=None, **values):
        request = request_of(dict(values, contents=contents, styles=styles))
        p = request.params
        index = ComfyLoraIndex()
        before = SERVICE.caches.stats().misses
        c_loras, s_loras = SERVICE.load_all(index, request, arch_of(model))
        read = SERVICE.caches.stats().misses > before
        downs, computed = projected_set(c_loras, s_loras, p, SERVICE.caches)
        key_map = lora_key_map(model, clip)
        keep = len(c_loras) + len(s_loras)
        patch_sets, projected, missed = [], 0, 0
        for (lo, w), d in zip(c_loras, downs):
            sd = self._files.get(lo.path, keep)
            cp = project_patches(comfy_patches(sd, key_map), sd, lo, d)
            patch_sets.append((cp.patches, w * p.content_weight))
            projected, missed = projected + len(cp.projected), missed + len(cp.missed)
        for lo, w in s_loras:
            patch_sets.append((comfy_patches(self._files.get(lo.path, keep), key_map), w * p.style_weight))
        new_model, new_clip, left = apply_all(model, clip, patch_sets)
        if len(c_loras) == len(s_loras) == 1:
            what = f"{c_loras[0][0].name} + {s_loras[0][0].name}"
        else:
            def side(loras, noun):
                return f"{len(loras)} {noun}{'s' if len(loras) > 1 else ''} (" \
                       + ", ".join(f"{lo.name}*{w:g}" for lo, w in loras) + ")"
            what = f"{side(c_loras, 'content')} + {side(s_loras, 'style')}"
        _log(f"{what}, {p.label()}: {projected} modules projected"
             + (f", {missed} projected modules have no weight in this model" if missed else "")
             + f"; inputs {'read' if read else 'from the cache'}, style subspace "
             + ("computed" if computed else "from the cache" if any(downs) else "not needed"))
        for key in left[:10]:
            _log(f"not loaded: {key}")
        return (new_model, new_clip)


class NpLoraSet:
    """One LoRA and its own weight, added to an optional previous set: a chain of these is the
    several contents (or styles) of a Loader, Save or Analyze."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (SET_TYPE,)
    RETURN_NAMES = ("lora_set",)
    OUTPUT_TOOLTIPS = ("The previous set's LoRAs and this one, in chain order: connect to contents or styles.",)
    FUNCTION = "add"
    DESCRIPTION = ("NP-LoRA Set: chain these (lora_set -> previous) to give NP-LoRA several content or several "
                   "style LoRAs, each with its own weight (times the side's content_weight / style_weight). "
                   "Connected to contents / styles, the chain replaces that side's picker.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"lora_name": (lora_names(), {"tooltip": "A LoRA from ComfyUI's loras list"}),
                             "weight": ("FLOAT", {"default": 1.0, "min": -MAX_WEIGHT, "max": MAX_WEIGHT,
                                                  "step": 0.05, "tooltip": "This LoRA's own weight"})},
                "optional": {"previous": (SET_TYPE, {"tooltip": "The set so far (another NP-LoRA Set)"})}}

    def add(self, lora_name, weight, previous=None):
        refs = set_refs(previous, "previous") if previous is not None else ()
        refs = set_refs(refs + ((check_name(lora_name, "LoRA name", folders=True), weight),), "LoRA")
        FusionRequest.of_sets(refs, refs[:1], folders=True)  # the set's own checks (names, twice, MAX_SET) now
        return (refs,)


class NpLoraSave:
    """Write the fused LoRA into ComfyUI's loras folder."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("lora_name",)
    OUTPUT_TOOLTIPS = ("The saved file's name in the LoRA list.",)
    FUNCTION = "save"
    OUTPUT_NODE = True
    DESCRIPTION = ("Save the NP-LoRA fusion as a LoRA file (kohya format, rank r_s + r_c) that LoraLoader "
                   "and the WebUIs load. Never writes over an input; over another file only with overwrite.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**params_inputs(lora_names()),
                             "file_name": ("STRING", {"default": "", "tooltip": "Name of the new file in the "
                                                      "loras folder; empty: content+style_nplora_<mode>"}),
                             "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace a file of that name "
                                                       "(never one of the inputs)"})},
                "optional": {**params_inputs(lora_names(), later=True), **set_inputs()}}

    def save(self, file_name: str, overwrite: bool, contents=None, styles=None, **values):
        request = request_of(dict(values, contents=contents, styles=styles))
        index = ComfyLoraIndex()
        stems = [set_text((Path(n).stem, w) for n, w in refs) for refs in (request.contents, request.styles)]
        name = (file_name or "").strip() or default_output_name(FusionRequest(*stems, request.params))
        saved = SERVICE.save(index, request, name, overwrite=bool(overwrite))
        listed = Path(saved.path).name
        _log(f"saved {saved.path} ({saved.tensors} tensors)")
        return {"ui": {"text": [f"saved {listed}"]}, "result": (listed,)}


class NpLoraAnalyze:
    """How much of the content lies in the style's principal subspace, per block."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("chart", "numbers")
    OUTPUT_TOOLTIPS = ("Per block: share of the content inside the style's top-k directions (red) and style "
                       "energy those k keep (blue).", "The same numbers as text.")
    FUNCTION = "analyze"
    DESCRIPTION = "Per-block overlap of the content LoRA with the style LoRA's principal input subspace."

    @classmethod
    def INPUT_TYPES(cls):
        def which(p):
            return p.kind == "lora" or p.analysis
        return {"required": params_inputs(lora_names(), which),
                "optional": {**params_inputs(lora_names(), which, later=True), **set_inputs()}}

    def analyze(self, contents=None, styles=None, **values):
        request = request_of(dict(values, contents=contents, styles=styles))
        result = SERVICE.analyze(ComfyLoraIndex(), request)
        return (chart_image(result), format_analysis(result))


NODE_CLASS_MAPPINGS = {"NpLoraLoader": NpLoraLoader, "NpLoraSave": NpLoraSave, "NpLoraAnalyze": NpLoraAnalyze,
                       "NpLoraSet": NpLoraSet}
NODE_DISPLAY_NAME_MAPPINGS = {"NpLoraLoader": "NP-LoRA Loader (content + style)", "NpLoraSave": "NP-LoRA Save",
                              "NpLoraAnalyze": "NP-LoRA Analyze", "NpLoraSet": "NP-LoRA Set"}
