"""Run by ``test_e2e_comfyui.py`` with ComfyUI's Python, in the ComfyUI folder: the node pack's
patching against ComfyUI's real key maps of SD1.5, SDXL, FLUX.1, Chroma and Qwen-Image.

For each architecture it builds ComfyUI's own model (``comfy.supported_models.<config>.get_model``)
and text-encoder model (the config's ``clip_target``) on the ``meta`` device (keys and shapes, no
memory), writes a content and a style LoRA with a module on every weight NP-LoRA's table lists
(rank 1) and runs what the NP-LoRA Loader runs: ``lora_key_map`` (ComfyUI's
``model_lora_keys_unet`` / ``model_lora_keys_clip``), ``comfy_patches`` (its ``load_lora``), the
engine's projection and ``project_patches``. Prints one JSON line per (architecture, format).

Formats: ``kohya`` (``lora_unet_<flat original path>``, fused weights as one module: FLUX/Chroma
qkv and linear1, which the engine splits and patches on row slices); ``peft`` (diffusers names,
``transformer.…`` with ``lora_A/B``, fused weights as their parts: ComfyUI itself maps those to row
slices of the fused weight; only the modules ComfyUI's map places on a weight of the model are
written, the others are counted as ``host_unmapped``: for Chroma the diffusers names ComfyUI
derives from FLUX.1's layout, which Chroma's guidance layer lacks); ``written``: the content is
the file NP-LoRA writes (``formats.writer.save_fused`` of the kohya pair's fusion, rank 2, fused
weights joined back), fused again with the kohya style.

    python tests/e2e/comfyui_keymaps.py <repository root> <temp folder>
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import torch

#: full UNet / DiT configs of the three models, as comfy.model_detection derives them from a checkpoint
SD15 = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
            adm_in_channels=None, in_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
            transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
            use_linear_in_transformer=False, context_dim=768, num_heads=8,
            transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], use_temporal_attention=False,
            use_temporal_resblock=False)
SDXL = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
            num_classes="sequential", adm_in_channels=2816, in_channels=4, model_channels=320,
            num_res_blocks=[2, 2, 2], transformer_depth=[0, 0, 2, 2, 10, 10], channel_mult=[1, 2, 4],
            transformer_depth_middle=10, use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
            transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], use_temporal_attention=False,
            use_temporal_resblock=False)
FLUX = dict(image_model="flux", in_channels=16, patch_size=2, out_channels=16, vec_in_dim=768, context_in_dim=4096,
            hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56],
            theta=10000, qkv_bias=True, guidance_embed=True)
#: as comfy/model_detection.py derives them (a125cd84); the same as tools/check_host_layouts.py
CHROMA = dict(image_model="chroma", in_channels=64, out_channels=64, patch_size=2, context_in_dim=4096,
              hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38,
              axes_dim=[16, 56, 56], theta=10000, qkv_bias=True, in_dim=64, out_dim=3072, hidden_dim=5120,
              n_layers=5)
QWENIMAGE = dict(image_model="qwen_image")
#: (architecture, format) in the order printed
CASES = (("sd1", "kohya"), ("sdxl", "kohya"), ("flux", "kohya"), ("flux", "peft"), ("chroma", "kohya"),
         ("chroma", "peft"), ("chroma", "written"), ("qwenimage", "kohya"), ("qwenimage", "peft"),
         ("qwenimage", "written"))


class Patcher:
    """What the key map reads of a MODEL / CLIP: ``.model`` and ``.cond_stage_model``."""

    def __init__(self, model=None, cond=None):
        self.model, self.cond_stage_model = model, cond


def models(arch: str):
    import comfy.supported_models as sm

    config_cls, unet = {"sd1": (sm.SD15, SD15), "sdxl": (sm.SDXL, SDXL), "flux": (sm.Flux, FLUX),
                        "chroma": (sm.Chroma, CHROMA), "qwenimage": (sm.QwenImage, QWENIMAGE)}[arch]
    config = config_cls(dict(unet))
    model = config.get_model({}, device="meta")
    target = config.clip_target()
    cond = target.clip(device="meta", dtype=torch.float16)
    return Patcher(model=model), Patcher(cond=cond)


def main() -> None:
    root, tmp = Path(sys.argv[1]), Path(sys.argv[2])
    sys.path[:0] = [os.getcwd(), str(root), str(root / "tests")]  # ComfyUI's folder first
    import comfy.options

    comfy.options.enable_args_parsing()
    sys.argv[1:] = ["--cpu"]
    import comfy.utils
    import lora_factory as lf
    from lib_nplora.cache import Caches
    from lib_nplora.comfy.models import arch_of
    from lib_nplora.comfy.patching import comfy_patches, lora_key_map, project_patches
    from lib_nplora.comfy.projection import projected_downs
    from lib_nplora.formats.writer import save_fused
    from lib_nplora.fusion.merge import fuse
    from lib_nplora.params import FuseParams

    missing: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: missing.append(record.getMessage()) if "not loaded" in record.getMessage() else None
    logging.getLogger().addHandler(handler)
    built: dict = {}
    for arch, fmt in CASES:
        if arch not in built:
            built = {arch: models(arch)}  # one architecture's meta models at a time
        model, clip = built[arch]
        key_map = lora_key_map(model, clip)
        shapes = {k: tuple(v.shape) for k, v in model.model.state_dict().items()}
        weights = set(shapes) | set(clip.cond_stage_model.state_dict())
        rows = [r for r in lf.table(arch) if ":" not in r["name"] and r["kind"] != "norm"]
        unmapped = 0
        if fmt == "peft":  # diffusers names: the modules diffusers has, fused ones as their parts
            rows = [r for r in rows if r["name"].startswith("unet.") and (r["aliases"] or r.get("parts"))]
            placed = [r for r in rows if all(_target(key_map.get(lf.peft_key(arch, p))) in weights
                                             for p in (lf.parts_of(arch, r) or [r]))]
            unmapped, rows = len(rows) - len(placed), placed
        stem = f"{arch}_{fmt}"
        c_path, s_path = tmp / f"{stem}_c.safetensors", tmp / f"{stem}_s.safetensors"
        lf.make_lora(c_path, arch, rows, fmt="kohya" if fmt == "written" else fmt, rank=1, seed=1,
                     dtype=torch.float16)
        lf.make_lora(s_path, arch, rows, fmt="kohya" if fmt == "written" else fmt, rank=1, seed=2,
                     dtype=torch.float16)
        caches = Caches()
        if fmt == "written":
            kc, ks = caches.load_pair(c_path, s_path, arch)
            w_path = tmp / f"{stem}_fused.safetensors"
            save_fused(fuse(kc, ks, FuseParams(mu=0.5, scope="all"), dtype=torch.float16), w_path)
            c_path = w_path
        content, style = caches.load_pair(c_path, s_path, arch)
        downs, _ = projected_downs(content, style, FuseParams(mu=0.5, scope="all"), caches)
        sd_c, sd_s = (comfy.utils.load_torch_file(str(p), safe_load=True) for p in (c_path, s_path))
        missing.clear()
        patches_c, patches_s = comfy_patches(sd_c, key_map), comfy_patches(sd_s, key_map)
        cp = project_patches(patches_c, sd_c, content, downs)
        targets = {_target(k) for k in cp.patches}
        print(json.dumps({"arch": arch, "format": fmt, "detected": arch_of(model), "modules": len(rows),
                          "file_modules": len({k.rsplit(".lora_", 1)[0] for k in sd_c if ".lora_" in k}),
                          "host_unmapped": unmapped, "canonical": len(content.modules),
                          "projected": len(cp.projected), "to_project": len(downs), "missed": cp.missed,
                          "not_loaded": missing[:20], "patched_weights": len(targets),
                          "style_weights": len({_target(k) for k in patches_s}),
                          "off_model": sorted(t for t in targets if t not in weights)[:20],
                          "slices": sum(_sliced(k) for k in cp.patches),
                          "sliced_weights": len({k[0] for k in cp.patches if _sliced(k)}),
                          "untiled": _untiled(cp.patches, shapes)[:20]}), flush=True)


def _sliced(key) -> bool:
    """A patch key on a row slice of a weight: (name, (dim, start, length)[, function]); ComfyUI
    also keys whole weights with a transform as (name, None, function)."""
    return not isinstance(key, str) and key[1] is not None


def _untiled(patches: dict, shapes: dict) -> list[str]:
    """Weights patched on row slices whose slices do not tile all their rows exactly once (a
    part left out, overlapping or out of range); a whole-weight patch next to slices counts too."""
    rows: dict[str, list[tuple[int, int]]] = {}
    for k in patches:
        if _sliced(k):
            dim, start, length = k[1]
            rows.setdefault(k[0], []).append((start, length) if dim == 0 else (-1, 0))
    whole = {_target(k) for k in patches if not _sliced(k)}
    bad = []
    for weight, spans in rows.items():
        spans.sort()
        ends = [0] + [s + n for s, n in spans]
        if weight in whole or [s for s, _ in spans] != ends[:-1] or ends[-1] != shapes[weight][0]:
            bad.append(weight)
    return sorted(bad)


def _target(key) -> str | None:
    """The model weight of a key map value / patch key (a name, or (name, slice[, function]))."""
    return key if key is None or isinstance(key, str) else key[0]

if __name__ == "__main__":
    main()
