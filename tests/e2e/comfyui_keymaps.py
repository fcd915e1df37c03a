"""Run by ``test_e2e_comfyui.py`` with ComfyUI's Python, in the ComfyUI folder: the node pack's
patching against ComfyUI's real key maps of SD1.5, SDXL and FLUX.

For each architecture it builds ComfyUI's own model (``comfy.supported_models.<config>.get_model``)
and text-encoder model (the config's ``clip_target``) on the ``meta`` device (keys and shapes, no
memory), writes a content and a style LoRA with a module on every weight NP-LoRA's table lists
(kohya names, and FLUX's in diffusers/PEFT names too; rank 1), and runs what the NP-LoRA Loader runs: ``lora_key_map`` (ComfyUI's
``model_lora_keys_unet`` / ``model_lora_keys_clip``), ``comfy_patches`` (its ``load_lora``), the
engine's projection and ``project_patches``. Prints one JSON line per architecture.

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


class Patcher:
    """What the key map reads of a MODEL / CLIP: ``.model`` and ``.cond_stage_model``."""

    def __init__(self, model=None, cond=None):
        self.model, self.cond_stage_model = model, cond


def models(arch: str):
    import comfy.supported_models as sm

    config_cls, unet = {"sd1": (sm.SD15, SD15), "sdxl": (sm.SDXL, SDXL), "flux": (sm.Flux, FLUX)}[arch]
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
    from lib_nplora.comfy.patching import comfy_patches, lora_key_map, project_patches
    from lib_nplora.comfy.projection import projected_downs
    from lib_nplora.params import FuseParams

    missing: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: missing.append(record.getMessage()) if "not loaded" in record.getMessage() else None
    logging.getLogger().addHandler(handler)
    for arch, fmt in (("sd1", "kohya"), ("sdxl", "kohya"), ("flux", "kohya"), ("flux", "peft")):
        rows = [r for r in lf.table(arch) if ":" not in r["name"] and r["kind"] != "norm"]
        if fmt == "peft":  # diffusers names: the UNet/transformer modules diffusers has
            rows = [r for r in rows if r["name"].startswith("unet.") and r["aliases"]]
        c_path, s_path = tmp / f"{arch}_{fmt}_c.safetensors", tmp / f"{arch}_{fmt}_s.safetensors"
        lf.make_lora(c_path, arch, rows, fmt=fmt, rank=1, seed=1, dtype=torch.float16)
        lf.make_lora(s_path, arch, rows, fmt=fmt, rank=1, seed=2, dtype=torch.float16)
        model, clip = models(arch)
        key_map = lora_key_map(model, clip)
        caches = Caches()
        content, style = caches.load_pair(c_path, s_path, arch)
        downs, _ = projected_downs(content, style, FuseParams(mu=0.5, scope="all"), caches)
        sd_c, sd_s = (comfy.utils.load_torch_file(str(p), safe_load=True) for p in (c_path, s_path))
        missing.clear()
        patches_c, patches_s = comfy_patches(sd_c, key_map), comfy_patches(sd_s, key_map)
        cp = project_patches(patches_c, sd_c, content, downs)
        weights = set(model.model.state_dict()) | set(clip.cond_stage_model.state_dict())
        targets = {k if isinstance(k, str) else k[0] for k in cp.patches}
        print(json.dumps({"arch": arch, "format": fmt, "modules": len(rows), "canonical": len(content.modules),
                          "projected": len(cp.projected), "to_project": len(downs), "missed": cp.missed,
                          "not_loaded": missing[:20], "patched_weights": len(targets),
                          "style_weights": len({k if isinstance(k, str) else k[0] for k in patches_s}),
                          "off_model": sorted(t for t in targets if t not in weights)[:20],
                          "slices": sum(not isinstance(k, str) for k in cp.patches)}), flush=True)


if __name__ == "__main__":
    main()
