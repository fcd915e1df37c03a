"""The LoRA files the end-to-end suite gives the WebUI (SD1.5 layout, random factors)."""

from __future__ import annotations

from pathlib import Path

import torch

import lora_factory as lf
from webui.webui_loras import make_lora

#: every UNet attention projection (q/k/v/out of attn1 and attn2): what style/subject LoRAs train
UNET = lf.select("sd1", "attn", components=("unet",))
#: text-encoder self-attention of the first two layers
TE = lf.select("sd1", "attn", components=("te",), blocks=("layers.0.", "layers.1."))

NAMES = {"content": "nplora_e2e_content", "style": "nplora_e2e_style",
         "te_content": "nplora_e2e_te_content", "te_style": "nplora_e2e_te_style",
         "content2": "nplora_e2e_content2", "style2": "nplora_e2e_style2"}


def write_loras(folder: Path) -> dict[str, Path]:
    """UNet-only content and style LoRAs (read by every host's own loader too, for stacking), and
    a text-encoder-only pair (for the conditioning-cache checks), and a second UNet content and
    style (for the several-LoRA sets)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"content": (UNET, 11), "style": (UNET, 12), "te_content": (TE, 13), "te_style": (TE, 14),
            "content2": (UNET, 15), "style2": (UNET, 16)}
    out = {}
    for key, (rows, seed) in spec.items():
        path = folder / f"{NAMES[key]}.safetensors"
        make_lora(path, "sd1", rows, rank=4, alpha=1.0, seed=seed, dtype=torch.float16,
                  metadata={"ss_base_model_version": "sd_v1"})
        out[key] = path
    return out
