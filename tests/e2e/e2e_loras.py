"""The LoRA files the end-to-end suite gives the WebUI (random factors).

``NPLORA_E2E_MODEL`` names the checkpoint's base model: ``sd1`` (default, SD1.5 layout) or
``sdxl`` (SDXL kohya names and shapes from the SDXL architecture table: the attention of the first
transformer block of every SDXL transformer stack, which puts modules in the IN, MID and OUT
groups while keeping the host's weight backups small, and the self-attention of the first two
layers of both text encoders). The WebUI must have loaded a checkpoint of that model.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

import lora_factory as lf
from webui.webui_loras import make_lora

MODEL = os.environ.get("NPLORA_E2E_MODEL", "sd1")
if MODEL not in ("sd1", "sdxl"):
    raise ValueError(f"NPLORA_E2E_MODEL={MODEL!r}: use sd1 or sdxl")
if MODEL == "sdxl":
    #: q/k/v/out of attn1 and attn2 in transformer_blocks.0 of each of the 11 SDXL stacks
    UNET = lf.select("sdxl", "attn", components=("unet",), blocks=(".transformer_blocks.0.",))
    #: self-attention of the first two layers of CLIP-L (te1) and CLIP-G (te2)
    TE = lf.select("sdxl", "attn", components=("te1", "te2"), blocks=("layers.0.", "layers.1."))
    BASE_VERSION = "sdxl_base_v1-0"
else:
    #: every UNet attention projection (q/k/v/out of attn1 and attn2): what style/subject LoRAs train
    UNET = lf.select("sd1", "attn", components=("unet",))
    #: text-encoder self-attention of the first two layers
    TE = lf.select("sd1", "attn", components=("te",), blocks=("layers.0.", "layers.1."))
    BASE_VERSION = "sd_v1"

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
        make_lora(path, MODEL, rows, rank=4, alpha=1.0, seed=seed, dtype=torch.float16,
                  metadata={"ss_base_model_version": BASE_VERSION})
        out[key] = path
    return out
