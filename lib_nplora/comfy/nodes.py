"""The ComfyUI nodes: NP-LoRA Loader, NP-LoRA Save, NP-LoRA Analyze (category ``loaders/NP-LoRA``).

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

from ..app.request import FusionRequest
from ..app.service import FusionService, default_output_name
from ..cli import format_analysis
from ..formats.atomic import file_version
from .chart_image import chart_image
from .folders import ComfyLoraIndex, lora_names
from .inputs import params_inputs, request_of
from .models import arch_of
from .patching import apply, comfy_patches, lora_key_map, project_patches
from .projection import projected_downs

CATEGORY = "loaders/NP-LoRA"
SERVICE = FusionService()


def _log(text: str) -> None:
    print(f"NP-LoRA: {text}", flush=True)


class _StateDicts:
    """The files' tensors as ComfyUI reads them (``comfy.utils.load_torch_file``, as ``LoraLoader``),
    kept per node for the last two files and read again when a file changes."""

    def __init__(self):
        self._kept: dict[str, tuple[tuple, dict]] = {}

    def get(self, path: str) -> dict:
        version = file_version(os.stat(path))
        hit = self._kept.get(path)
        if hit is not None and hit[0] == version:
            return hit[1]
        sd = comfy.utils.load_torch_file(path, safe_load=True)
        self._kept = {k: v for k, v in self._kept.items() if k != path}
        while len(self._kept) >= 2:
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
                "optional": params_inputs(lora_names(), later=True)}

    def load(self, model, clip, **values):
        request = request_of(values)
        p = request.params
        index = ComfyLoraIndex()
        before = SERVICE.caches.stats().misses
        content, style = SERVICE.load_inputs(index, request, arch_of(model))
        read = SERVICE.caches.stats().misses > before
        downs, computed = projected_downs(content, style, p, SERVICE.caches)
        key_map = lora_key_map(model, clip)
        c_sd, s_sd = self._files.get(content.path), self._files.get(style.path)
        cp = project_patches(comfy_patches(c_sd, key_map), c_sd, content, downs)
        sp = comfy_patches(s_sd, key_map)
        new_model, new_clip, left = apply(model, clip, cp.patches, p.content_weight, sp, p.style_weight)
        _log(f"{content.name} + {style.name}, {p.label()}: {len(cp.projected)} modules projected"
             + (f", {len(cp.missed)} projected modules have no weight in this model" if cp.missed else "")
             + f"; inputs {'read' if read else 'from the cache'}, style subspace "
             + ("computed" if computed else "from the cache" if downs else "not needed"))
        for key in left[:10]:
            _log(f"not loaded: {key}")
        return (new_model, new_clip)


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
                                                       "(never one of the two inputs)"})},
                "optional": params_inputs(lora_names(), later=True)}

    def save(self, file_name: str, overwrite: bool, **values):
        request = request_of(values)
        index = ComfyLoraIndex()
        name = (file_name or "").strip() or default_output_name(
            FusionRequest(Path(request.content).stem, Path(request.style).stem, request.params))
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
                "optional": params_inputs(lora_names(), which, later=True)}

    def analyze(self, **values):
        request = request_of(values)
        result = SERVICE.analyze(ComfyLoraIndex(), request)
        return (chart_image(result), format_analysis(result))


NODE_CLASS_MAPPINGS = {"NpLoraLoader": NpLoraLoader, "NpLoraSave": NpLoraSave, "NpLoraAnalyze": NpLoraAnalyze}
NODE_DISPLAY_NAME_MAPPINGS = {"NpLoraLoader": "NP-LoRA Loader (content + style)", "NpLoraSave": "NP-LoRA Save",
                              "NpLoraAnalyze": "NP-LoRA Analyze"}
