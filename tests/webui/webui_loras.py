"""Real LoRA files for the WebUI-layer tests (``lora_factory`` with the modules these tests use)."""

from __future__ import annotations

import lora_factory as lf

SD1_UNET_BLOCKS = ("input_blocks.1.1.", "output_blocks.11.1.")


def make_lora(path, arch, rows, **kw):
    """``lora_factory.make_lora`` (kept as the one place these tests make files)."""
    return lf.make_lora(path, arch, rows, **kw)


def sd1_unet_rows():
    return lf.select("sd1", "attn", components=("unet",), blocks=SD1_UNET_BLOCKS)


def sd1_te_rows():
    return lf.select("sd1", "attn", components=("te",), blocks=("layers.0.",))


def sdxl_only_rows():
    """SDXL UNet attention in a block SD1/SD2 do not have (transformer_blocks.3 of a 1280 stage)."""
    return lf.select("sdxl", "attn", components=("unet",), blocks=("input_blocks.7.1.transformer_blocks.3.",))
