"""Forge (lllyasviel main, ``backend/``): the fused LoRA as patches on cloned patchers.

How Forge applies LoRAs: the model object holds ``forge_objects`` (UNet patcher, CLIP, VAE, ...),
``forge_objects_original`` and ``forge_objects_after_applying_lora``. The builtin
``sd_forge_lora`` rebuilds the latter from the originals when the set of ``<lora:…>`` changes
(and returns early, touching nothing, when it did not). Before sampling, processing copies
``forge_objects_after_applying_lora`` into ``forge_objects``; when a patcher object that is not
the one loaded goes to the device, its ``LoraLoader`` restores the backed-up weights and merges
the patches of every identifier in ``patcher.lora_patches``.

So NP-LoRA, after every extra network activated (each pass, hires included):

* takes the *base*: the current ``forge_objects_after_applying_lora`` (or ``forge_objects`` where
  that is None: Forge Classic leaves it None while no ``<lora:…>`` is active), or the one it
  replaced if the current one is NP-LoRA's own (the builtin's early return hands it back);
* clones the base UNet and CLIP patchers and adds the fused LoRA's patches under the identifier
  ``nplora:<digest>`` (unique to inputs + parameters, so a changed mu re-merges);
* puts the clones into ``forge_objects_after_applying_lora`` and ``forge_objects`` (the hires
  conditioning reads the latter) and remembers (base, patched) on the model object;
* after the job, or when a pass runs without NP-LoRA, puts the base back: the next load of the
  base patcher restores the exact backed-up weights.

The patched objects of the last fusion are kept on the model object after the job: a repeated
generation with the same fusion over the same base hands the host the very same patcher objects,
so its memory manager finds them loaded and nothing is cloned, re-patched or re-merged (what the
builtin's early return gives stacked ``<lora:…>``).

Patches are built by the host's own loader (``backend.patcher.lora``: its key maps and
``load_lora``) from the fused LoRA in kohya form (``formats.writer.to_state_dict``), so every
architecture and module type Forge reads is handled as Forge handles it. They are cached by
(digest, model) and dropped on model load.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections import OrderedDict
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from ...formats.keys import split_key
from ...formats.writer import to_state_dict
from ...fused import FusedLora
from . import Applied, HostAdapter, HostError

MAX_CACHED_PATCHES = 4
IDENT_PREFIX = "nplora:"
STATE_ATTR = "_nplora_state"
LAST_ATTR = "_nplora_last"
PARTS = ("unet", "clip", "vae", "clipvision")


def same_parts(a, b) -> bool:
    """Two ForgeObjects hold the very same patchers (Classic copies the objects every batch)."""
    return a is b or (a is not None and b is not None
                      and all(getattr(a, n, None) is getattr(b, n, None) for n in PARTS))


def _parameter(root, key: str):
    """``root``'s parameter at the dotted ``key`` (``diffusion_model.layers.0.attention.qkv.weight``),
    or None (no such parameter, or ``root`` is no module)."""
    try:
        return root.get_parameter(key)
    except (AttributeError, TypeError):
        return None


_REQUANTIZES: dict[type, bool] = {}


def _requantizes(gguf_cls) -> bool:
    """Whether the host can quantize a merged weight back into ``gguf_cls`` (Forge's and Neo's
    ``LoraLoader.refresh`` call ``gguf_cls.quantize_pytorch``, which calls
    ``quantize_blocks_pytorch``; the classes without one, the K-quants and IQ types, inherit a
    ``NotImplementedError``). Found by quantizing one zero block; cached per class."""
    known = _REQUANTIZES.get(gguf_cls)
    if known is not None:
        return known
    ok = True
    try:
        block = getattr(gguf_cls, "block_size", None) or 32
        args = [torch.zeros(1, block), block, getattr(gguf_cls, "type_size", 0)]
        fn = gguf_cls.quantize_blocks_pytorch
        try:  # Neo: (blocks, block_size, type_size, parent); Forge main: (blocks, block_size, type_size)
            with_parent = len(inspect.signature(fn).parameters) >= 4
        except (TypeError, ValueError):
            with_parent = True
        if with_parent:
            args.append(SimpleNamespace(computation_dtype=torch.float16))
        fn(*args)
    except NotImplementedError:
        ok = False
    except Exception:  # any other failure is not this rule's to judge: the host decides
        ok = True
    _REQUANTIZES[gguf_cls] = ok
    return ok


def unmergeable_gguf(patcher, keys) -> dict[str, list[str]]:
    """GGUF type name -> the ``keys`` of ``patcher``'s model stored in that type that the host's
    offline merge cannot quantize again (empty when every patched weight can take a merged LoRA).
    ``patcher``: a UNet patcher or a CLIP (its ``patcher``)."""
    patcher = getattr(patcher, "patcher", patcher)
    model = getattr(patcher, "model", None)
    out: dict[str, list[str]] = {}
    for key in keys:
        w = _parameter(model, key if isinstance(key, str) else key[0])
        gguf_cls = getattr(w, "gguf_cls", None)
        if gguf_cls is not None and not _requantizes(gguf_cls):
            out.setdefault(getattr(gguf_cls, "__name__", str(gguf_cls)), []).append(str(key))
    return out


@dataclass
class PatchState:
    """What NP-LoRA swapped into one model object (kept on that object: dies with the model)."""

    base: object        # the ForgeObjects NP-LoRA cloned from
    patched: object     # the ForgeObjects NP-LoRA put in its place
    ident: str
    report: Applied
    in_slot: bool = True  # patched went into forge_objects_after_applying_lora (not None there)
    online: bool = False  # the patches' online mode (the builtin's rule at the time)


@dataclass
class Patches:
    """Host-native patches for one fusion on one model.

    Attributes:
        patches: param key -> the host's patch value, as its ``load_lora`` returns them.
        modules: kohya module keys in the fused LoRA.
        unmatched: those the host's key maps do not know.
    """

    patches: dict
    modules: list[str]
    unmatched: list[str]


class Adapter(HostAdapter):
    """Forge with the ``backend/`` patcher (``ModelPatcher.lora_patches``, identifier-keyed)."""

    name = "forge"
    label = "Forge"
    backend_module = "backend.patcher.lora"

    def __init__(self, networks, lora_backend=None, dynamic_args=None, shared=None, lora_dir=None):
        super().__init__(networks, lora_dir)
        self.lora = lora_backend if lora_backend is not None else importlib.import_module(self.backend_module)
        self._dynamic_args = dynamic_args
        self._shared = shared
        self._lock = threading.Lock()
        self._patches: OrderedDict[tuple, Patches] = OrderedDict()

    def current_model(self):
        if self._shared is None:
            from modules import shared

            self._shared = shared
        return getattr(self._shared, "sd_model", None)

    # ------------------------------------------------------------------ host specifics
    def check_patcher(self, patcher) -> None:
        if not hasattr(patcher, "lora_patches"):
            raise HostError("this Forge's model patcher has no lora_patches",
                            hint="Update Forge, or report the Forge version you use")

    def online_mode(self, base) -> bool:
        """The builtin's rule: per-forward LoRA only for low-bit storage with 'online LoRA' on."""
        args = self._dynamic_args
        if args is None:
            try:
                args = importlib.import_module("backend.args").dynamic_args
            except (ImportError, AttributeError):
                return False
        online = bool(args.get("online_lora", False))
        storage = getattr(getattr(base.unet, "model", None), "storage_dtype", None)
        if storage in (torch.float32, torch.float16, torch.bfloat16):
            online = False
        return online

    def refuse_unmergeable(self, unet, unet_keys, clip, clip_keys) -> None:
        """HostError when an offline merge would reach GGUF weights the host cannot quantize again
        (its refresh would raise mid-generation): nothing is handed over, the job says why."""
        bad = unmergeable_gguf(unet, unet_keys)
        if clip is not None:
            for name, keys in unmergeable_gguf(clip, clip_keys).items():
                bad.setdefault(name, []).extend(keys)
        if bad:
            n = sum(len(v) for v in bad.values())
            raise HostError(f"{self.label} cannot merge a LoRA into this GGUF model's {', '.join(sorted(bad))} "
                            f"weights ({n} of the fused LoRA's, e.g. {next(iter(bad.values()))[0]}): it cannot "
                            "quantize them again",
                            hint='In "Diffusion in Low Bits" choose "Automatic (fp16 LoRA)" (LoRAs are then '
                                 "applied at every step), or use a Q8_0 / Q5_0 / Q4_0 GGUF")

    def add_patches(self, patcher, patches: dict, ident: str, online: bool):
        """Clone ``patcher`` and add ``patches`` under ``ident``: (clone, accepted keys)."""
        clone = patcher.clone()
        accepted = clone.add_patches(filename=ident, patches=patches, strength_patch=1.0, online_mode=online)
        return clone, set(accepted or ())

    # ------------------------------------------------------------------ patches
    def key_map(self, base) -> dict:
        km = dict(self.lora.model_lora_keys_unet(base.unet.model, {}))
        if base.clip is not None:
            km.update(self.lora.model_lora_keys_clip(base.clip.cond_stage_model, {}))
        return km

    def patches_for(self, fused: FusedLora, base) -> Patches:
        key = (fused.digest, id(base.unet.model), id(getattr(base.clip, "cond_stage_model", None)))
        with self._lock:
            hit = self._patches.get(key)
            if hit is not None:
                self._patches.move_to_end(key)
                return hit
        state, _notes = to_state_dict(fused)
        all_keys = frozenset(state)
        modules = sorted({hit[0] for k in state if (hit := split_key(k, all_keys)) is not None})
        km = self.key_map(base)
        result = self.lora.load_lora(state, km)
        patches = result[0] if isinstance(result, tuple) else result
        built = Patches(dict(patches), modules, [m for m in modules if m not in km])
        with self._lock:
            self._patches[key] = built
            while len(self._patches) > MAX_CACHED_PATCHES:
                self._patches.popitem(last=False)
        return built

    # ------------------------------------------------------------------ apply / restore
    @staticmethod
    def _state(sd_model) -> PatchState | None:
        return getattr(sd_model, STATE_ATTR, None)

    def base_objects(self, sd_model):
        """The ForgeObjects without NP-LoRA for this pass."""
        current = sd_model.forge_objects_after_applying_lora
        st = self._state(sd_model)
        if current is None:  # Forge Classic while no <lora:…> is active: processing uses forge_objects
            live = sd_model.forge_objects
            if st is not None and same_parts(live, st.patched):
                return st.base
            # a snapshot: activate writes the patchers into the live object, which must not
            # change the base (the hires pass without NP-LoRA puts the base's patchers back)
            return live.shallow_copy()
        if st is not None and same_parts(current, st.patched):
            return st.base
        return current

    def patched_objects(self, base, fused: FusedLora, ident: str):
        """Clones of the base patchers with the fusion's patches under ``ident``: (ForgeObjects,
        Applied); HostError when the model takes none of them."""
        built = self.patches_for(fused, base)
        online = self.online_mode(base)
        unet, unet_keys = self.add_patches(base.unet, built.patches, ident, online)
        clip, clip_keys = (None, set()) if base.clip is None else self.add_patches(
            base.clip, built.patches, ident, online)
        if not unet_keys and not clip_keys:
            raise HostError("none of the fused modules fits the loaded model",
                            hint="Check that both LoRAs were made for the loaded checkpoint's base model")
        if not online:
            self.refuse_unmergeable(unet, unet_keys, clip, clip_keys)
        new = base.shallow_copy()
        new.unet = unet if unet_keys else base.unet
        new.clip = clip if clip_keys else base.clip
        warnings = []
        if built.unmatched:
            warnings.append(f"{len(built.unmatched)} of {len(built.modules)} module(s) have no weight in "
                            f"this model and were skipped (first: {built.unmatched[0]})")
        skipped = set(built.patches) - unet_keys - clip_keys
        if skipped:
            warnings.append(f"{len(skipped)} patch(es) were refused by the model and skipped "
                            f"(first: {sorted(map(str, skipped))[0]})")
        return new, Applied(ident, len(unet_keys) + len(clip_keys), bool(clip_keys), warnings)

    def activate(self, p, fused: FusedLora) -> Applied:
        sd_model = getattr(p, "sd_model", None) or self.current_model()
        if getattr(sd_model, "forge_objects_after_applying_lora", None) is None and \
                getattr(sd_model, "forge_objects", None) is None:
            raise HostError("the loaded model has no Forge objects", hint="Load a checkpoint first")
        base = self.base_objects(sd_model)
        self.check_patcher(base.unet)
        ident = IDENT_PREFIX + fused.digest
        st = self._state(sd_model) or getattr(sd_model, LAST_ATTR, None)
        online = self.online_mode(base)
        if st is not None and same_parts(st.base, base) and st.ident == ident and st.online == online:
            new, report = st.patched, st.report  # same fusion, same base: the same patcher objects
        else:
            new, report = self.patched_objects(base, fused, ident)
        in_slot = sd_model.forge_objects_after_applying_lora is not None
        if in_slot:
            sd_model.forge_objects_after_applying_lora = new
        current = getattr(sd_model, "forge_objects", None)
        if current is not None:  # the hires conditioning is computed from forge_objects directly
            current.unet, current.clip = new.unet, new.clip
        state = PatchState(base, new, ident, report, in_slot, online)
        setattr(sd_model, STATE_ATTR, state)
        setattr(sd_model, LAST_ATTR, state)
        return Applied(report.ident, report.modules, report.touches_text_encoder, list(report.warnings))

    def deactivate(self, p) -> None:
        sd_model = getattr(p, "sd_model", None) if p is not None else None
        sd_model = sd_model or self.current_model()
        st = self._state(sd_model)
        if st is None:
            return
        if st.in_slot and sd_model.forge_objects_after_applying_lora is st.patched:
            sd_model.forge_objects_after_applying_lora = st.base
        current = getattr(sd_model, "forge_objects", None)
        if current is not None:
            if current.unet is st.patched.unet:
                current.unet = st.base.unet
            if current.clip is st.patched.clip:
                current.clip = st.base.clip
        setattr(sd_model, STATE_ATTR, None)

    def begin_job(self, p) -> None:
        self.deactivate(p)

    def forget_model(self) -> None:
        with self._lock:
            self._patches.clear()
