"""The fused LoRA through ComfyUI's own LoRA machinery, as ``LoraLoader`` applies a LoRA.

``comfy.sd.load_lora_for_models`` is: key map of the model and the CLIP
(``comfy.lora.model_lora_keys_unet`` / ``model_lora_keys_clip``), ``comfy.lora_convert.convert_lora``,
``comfy.lora.load_lora`` (file -> patch per model weight), then ``clone()`` and ``add_patches`` on the
model patcher and on the CLIP. The NP-LoRA loader does the same with two patch sets, in the order
a user chains two ``LoraLoader`` nodes: the content LoRA (strength wc) and then the style LoRA
(strength ws). The style's patches are ComfyUI's own, unchanged; in the content's, every module the
fusion projects gets the projected down factor (``projection.projected_downs``). So ComfyUI's
offloading, low-VRAM modes, weight dtypes and key mapping treat the result like any LoRA, the base
model is never modified, and with nothing projected (mu = 0) it is the stock two-loader stack.

A content patch whose file module is a plain LoRA (``LoRAAdapter`` without mid / DoRA / reshape)
keeps its up, alpha and shape, only its down replaced (reshaped to the file's). Other kinds
(LoHa, LoKr, Tucker, full) and modules the reader splits into parts (a fused qkv) are rebuilt from
the engine's canonical factors: a ``LoRAAdapter`` (up * scale, A_c', alpha None = scale 1) per
part, on the part's row slice of the weight (a patch key ``(weight, (0, row, rows))``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

import comfy.lora
import comfy.lora_convert
from comfy.weight_adapter import LoRAAdapter

from .. import arch as archmod
from ..errors import UnsupportedModuleError
from ..lora import LoraSet


def lora_key_map(model, clip) -> dict:
    """LoRA file key stem -> model weight key (or (key, slice[, function])), as
    ``comfy.sd.load_lora_for_models`` builds it."""
    key_map: dict = {}
    if model is not None:
        key_map = comfy.lora.model_lora_keys_unet(model.model, key_map)
    if clip is not None:
        key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, key_map)
    return key_map


def comfy_patches(state_dict: dict, key_map: dict) -> dict:
    """ComfyUI's patches of a LoRA state dict (``convert_lora`` then ``load_lora``; ComfyUI logs
    the keys it does not load, as it does for ``LoraLoader``)."""
    return comfy.lora.load_lora(comfy.lora_convert.convert_lora(state_dict), key_map)


def _file_keys(state_dict: dict) -> dict[int, str]:
    """id(tensor) -> its key: finds which file module a ComfyUI patch was read from
    (``convert_lora`` renames keys, never copies tensors)."""
    return {id(t): k for k, t in state_dict.items()}


def _adapter_tensors(adapter) -> list[torch.Tensor]:
    weights = getattr(adapter, "weights", None)
    if weights is None and isinstance(adapter, tuple) and len(adapter) == 2:
        weights = adapter[1]
    return [t for t in (weights or ()) if isinstance(t, torch.Tensor)]


def _plain(adapter) -> bool:
    if type(adapter) is not LoRAAdapter:
        return False
    _, _, _, mid, dora, reshape = adapter.weights
    return mid is None and dora is None and reshape is None


@dataclass
class ContentPatches:
    """The content's patches with the projection applied.

    Attributes:
        patches: patch key -> adapter, for ``add_patches``.
        projected: canonical names whose down factor was replaced.
        missed: canonical names the fusion projects that no ComfyUI patch carries (the model's key
            map has no weight for them: ComfyUI would not load them either).
    """

    patches: dict
    projected: set[str] = field(default_factory=set)
    missed: list[str] = field(default_factory=list)


def project_patches(patches: dict, state_dict: dict, content: LoraSet, downs: dict[str, torch.Tensor]) -> ContentPatches:
    """Replace the down factor of every projected module in ComfyUI's content patches.

    Args:
        patches: ``comfy_patches`` of the content file's ``state_dict`` (not modified).
        content: the same file read by the engine (canonical modules, their source keys).
        downs: ``projection.projected_downs`` (canonical name -> (r_c, n) float32).

    Raises:
        UnsupportedModuleError: a projected module ComfyUI holds in a form that cannot carry it
            (a patch with a transform function on a split weight); names the module.
    """
    out = ContentPatches(dict(patches))
    if not downs:
        return out
    by_key: dict[str, list[str]] = {}
    for name, mod in content.modules.items():
        if mod.is_lowrank:
            for k in mod.source_keys:
                by_key.setdefault(k, []).append(name)
    ids = _file_keys(state_dict)
    a = archmod.get(content.arch)
    for key, adapter in patches.items():
        names: list[str] = []
        for t in _adapter_tensors(adapter):
            names = by_key.get(ids.get(id(t), ""), [])
            if names:
                break
        if not any(n in downs for n in names):
            continue
        if len(names) == 1 and _plain(adapter):
            n = names[0]
            up, down, alpha, mid, dora, reshape = adapter.weights
            new = downs[n].reshape(down.shape)
            out.patches[key] = LoRAAdapter(adapter.loaded_keys, (up, new, alpha, mid, dora, reshape))
            out.projected.add(n)
            continue
        weight, offset = (key, None) if isinstance(key, str) else (key[0], key[1])
        if (not isinstance(key, str) and len(key) > 2) or (len(names) > 1 and offset is not None):
            raise UnsupportedModuleError("ComfyUI holds this module in a form NP-LoRA cannot project in place",
                                         path=content.path, module=names[0],
                                         hint="Save the fusion with NP-LoRA Save and load that file with LoraLoader")
        del out.patches[key]
        for n in names:
            f = content.modules[n].factors
            down = downs.get(n, f.down.float())
            lora = LoRAAdapter(set(), (f.up.float() * f.scale, down, None, None, None, None))
            if len(names) == 1:
                out.patches[key] = lora
            else:
                spec = a.modules[n]
                out.patches[(weight, (0, spec.row_offset, spec.out_features))] = lora
            if n in downs:
                out.projected.add(n)
    out.missed = sorted(n for n in downs if n not in out.projected)
    return out


def apply_all(model, clip, patch_sets: list[tuple[dict, float]]):
    """Clones of ``model`` and ``clip`` with each (patches, strength) added in order, as that many
    chained ``LoraLoader`` nodes do (a strength of 0 adds nothing, as there): several contents,
    each with its projected downs at own weight x wc, then the styles at own weight x ws.
    Returns (model, clip, keys none took)."""
    new_model = model.clone() if model is not None else None
    new_clip = clip.clone() if clip is not None else None
    left = []
    for patches, w in patch_sets:
        if w == 0:
            continue
        taken: set = set()
        if new_model is not None:
            taken.update(new_model.add_patches(patches, w))
        if new_clip is not None:
            taken.update(new_clip.add_patches(patches, w))
        left += [k for k in patches if k not in taken]
    return new_model, new_clip, left
