"""Fixtures for the WebUI-layer tests: real LoRA files (``lora_factory``) in a LoRA folder."""

from __future__ import annotations

import pytest

from webui_loras import make_lora, sd1_te_rows, sd1_unet_rows, sdxl_only_rows


@pytest.fixture
def lora_dir(tmp_path):
    """content/style (SD1 UNet attention), te_content/te_style (SD1 UNet + text encoder),
    xl_style (SDXL UNet), in a LoRA folder with a subfolder, as users keep them."""
    folder = tmp_path / "Lora"
    (folder / "styles").mkdir(parents=True)
    made = {
        "content": make_lora(folder / "content.safetensors", "sd1", sd1_unet_rows(), rank=4, alpha=2, seed=1),
        "style": make_lora(folder / "styles" / "style.safetensors", "sd1", sd1_unet_rows(), rank=4, seed=2,
                              metadata={"ss_output_name": "watercolor"}),
        "te_content": make_lora(folder / "te_content.safetensors", "sd1", sd1_unet_rows() + sd1_te_rows(),
                                   rank=4, seed=3),
        "te_style": make_lora(folder / "te_style.safetensors", "sd1", sd1_unet_rows() + sd1_te_rows(),
                                 rank=4, seed=4),
        "xl_style": make_lora(folder / "xl_style.safetensors", "sdxl", sdxl_only_rows(), rank=4, seed=5),
    }
    return folder, made
