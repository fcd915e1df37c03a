"""The analysis chart (``app/chart.py``'s two bars per block) as a ComfyUI IMAGE.

ComfyUI shows images, not SVG, so the same geometry (``chart.ROW``, ``LABEL_W``, ``BAR_W``,
``PAD``) is drawn with Pillow, which ComfyUI ships: per block the share of the content update
inside the style's top-k input directions (what NP-LoRA attenuates) and the share of the style's
energy those k directions keep. Returns a (1, H, W, 3) float32 tensor in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..analysis import Analysis
from ..app import chart

SCALE = 2
COLORS = {"bg": (255, 255, 255), "grid": (215, 215, 215), "text": (30, 30, 30),
          "overlap": (214, 96, 77), "kept": (67, 147, 195)}


def _font():
    try:
        return ImageFont.load_default(size=11 * SCALE)  # Pillow >= 10.1 with FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def chart_image(result: Analysis) -> torch.Tensor:
    """(1, H, W, 3) float32: the chart of ``result`` (blocks, then all blocks)."""
    blocks = list(result.blocks) + ([result.total] if result.total else [])
    row, pad, x0, bar = chart.ROW * SCALE, chart.PAD * SCALE, chart.LABEL_W * SCALE, chart.BAR_W * SCALE
    width, height = x0 + bar + 90 * SCALE, pad * 2 + row * len(blocks) + 28 * SCALE
    img = Image.new("RGB", (width, height), COLORS["bg"])
    draw = ImageDraw.Draw(img)
    font = _font()
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        x = x0 + t * bar
        draw.line([(x, pad), (x, height - 24 * SCALE)], fill=COLORS["grid"], width=1)
        draw.text((x - 6, height - 20 * SCALE), f"{t:g}", fill=COLORS["text"], font=font)
    for i, b in enumerate(blocks):
        y = pad + i * row
        label = "all blocks" if b.block == "total" else b.block
        draw.text((8, y + row // 4), label[:28], fill=COLORS["text"], font=font)
        for j, (frac, color) in enumerate(((b.overlap, COLORS["overlap"]), (b.style_energy_kept, COLORS["kept"]))):
            w = max(0.0, min(1.0, frac)) * bar
            top = y + 1 + j * row / 2
            if w > 0:
                draw.rectangle([x0, top, x0 + w, top + row / 2 - 3], fill=color)
        draw.text((x0 + bar + 6, y + row // 4), f"{b.overlap:.2f} / {b.style_energy_kept:.2f}", fill=COLORS["text"], font=font)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
