"""Turn a ComfyUI checkout into a host that ``tests/e2e/test_e2e_comfyui.py`` can start on CPU, offline.

Run with the ComfyUI venv's Python (it needs ComfyUI's own packages)::

    /hosts/comfyui-venv/bin/python tools/e2e-hosts/prepare_comfyui.py /hosts/comfyui [--seed 0]

* Writes ``models/checkpoints/nplora-random-sd15.safetensors``: an SD1.5 checkpoint of random
  weights in the real checkpoint layout, built from ComfyUI's own model classes (its UNet, its
  AutoencoderKL, its CLIP-L text model from ``comfy/sd1_clip_config.json``) and saved under the SD1
  checkpoint prefixes (``model.diffusion_model.``, ``first_stage_model.``,
  ``cond_stage_model.transformer.``) that ComfyUI's loader detects. ComfyUI ships the CLIP
  tokenizer files, so nothing is downloaded.
* Every floating tensor gets seeded random values scaled by 1/sqrt(fan-in) (ComfyUI's layers skip
  initialisation, and the zero-initialised ones would make the UNet ignore any LoRA); stored in
  float16, as the common SD1.5 files are.

It carries no upstream code: the model classes are imported from the checkout given. The test links
this repository into ``custom_nodes`` itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

CHECKPOINT = "nplora-random-sd15.safetensors"

#: the SD1.5 UNet (v1-inference.yaml), in the keyword form of ComfyUI's UNetModel
SD15_UNET = dict(image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
                 channel_mult=[1, 2, 4, 4], num_heads=8, num_head_channels=-1,
                 transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1,
                 transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], context_dim=768,
                 use_spatial_transformer=True, use_linear_in_transformer=False, legacy=False, adm_in_channels=None,
                 use_temporal_attention=False, use_temporal_resblock=False)
SD1_VAE = {'double_z': True, 'z_channels': 4, 'resolution': 256, 'in_channels': 3, 'out_ch': 3, 'ch': 128,
           'ch_mult': [1, 2, 4, 4], 'num_res_blocks': 2, 'attn_resolutions': [], 'dropout': 0.0}


def build(seed: int) -> dict[str, torch.Tensor]:
    import comfy.options
    comfy.options.enable_args_parsing()  # as main.py does: comfy.cli_args then reads --cpu (no GPU probing)
    sys.argv[1:] = ["--cpu"]
    import comfy.ops
    from comfy.clip_model import CLIPTextModel
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    ops = comfy.ops.disable_weight_init
    unet = UNetModel(**SD15_UNET, dtype=torch.float32, device="cpu", operations=ops)
    vae = AutoencoderKL(ddconfig=SD1_VAE, embed_dim=4)
    clip_config = json.loads((Path("comfy") / "sd1_clip_config.json").read_text())
    clip = CLIPTextModel(clip_config, torch.float32, "cpu", ops)
    parts = {"model.diffusion_model.": unet, "first_stage_model.": vae, "cond_stage_model.transformer.": clip}
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for prefix, module in parts.items():
        for key, t in module.state_dict().items():
            if not t.is_floating_point():
                out[prefix + key] = t.clone()
                continue
            if key.endswith("position_ids"):
                out[prefix + key] = torch.arange(t.shape[-1]).expand(t.shape).to(t.dtype)
                continue
            if t.dim() == 1:  # norms' weights near 1, biases near 0
                base = 1.0 if key.endswith("weight") else 0.0
                values = base + 0.02 * torch.randn(t.shape, generator=gen)
            else:
                fan_in = max(1, t[0].numel())
                values = torch.randn(t.shape, generator=gen) / fan_in ** 0.5
            out[prefix + key] = values.to(torch.float16)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("comfyui", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ns = ap.parse_args()
    root = ns.comfyui.resolve()
    os.chdir(root)
    sys.path.insert(0, str(root))
    target = root / "models" / "checkpoints" / CHECKPOINT
    if target.exists():
        print(f"{target} exists")
        return
    from safetensors.torch import save_file

    state = build(ns.seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"nplora": "random weights for tests"})
    os.replace(tmp, target)
    print(f"wrote {target} ({len(state)} tensors)")


if __name__ == "__main__":
    main()
