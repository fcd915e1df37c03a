"""ComfyUI models for the tests, in ComfyUI's state-dict layout, from NP-LoRA's module tables.

ComfyUI holds the denoiser under ``diffusion_model.`` (LDM / BFL names, which the tables' canonical
``unet.`` names are) and the text encoders under ``clip_l.transformer.``, ``clip_g.transformer.``
and ``t5xxl.transformer.`` (the DiTs' tables list the denoiser only: their CLIP holds no weight).
The model is an instance of the ``comfy.model_base`` class of its type, as ComfyUI's. ``meta``
tensors for key-map checks of whole models, real random ones for the modules a test computes
with. The UNet's diffusers names (what ComfyUI derives with ``comfy.utils.unet_to_diffusers``,
which gives none for a DiT's config) come from the SD tables' aliases.
"""

from __future__ import annotations

import torch

import lora_factory as lf
from comfy import model_base, supported_models
from comfy.model_patcher import StandInModelPatcher
from comfy.sd import StandInCLIP

#: the DiTs whose ComfyUI config holds several sizes: the ``unet_config`` ComfyUI's detection
#: derives (the fields NP-LoRA's ``arch_of`` reads), as ``tests/e2e/comfyui_keymaps.py`` finds them
DIT_CONFIG = {"lumina2": (supported_models.Lumina2, {"image_model": "lumina2", "dim": 2304, "cap_feat_dim": 2304}),
              "wan14b": (supported_models.WAN21_I2V, {"image_model": "wan2.1", "dim": 5120, "model_type": "i2v"}),
              "wan5b": (supported_models.WAN22_T2V, {"image_model": "wan2.1", "dim": 3072, "out_dim": 48}),
              "wan1b": (supported_models.WAN21_T2V, {"image_model": "wan2.1", "dim": 1536}),
              "hidream": (supported_models.HiDream, {"image_model": "hidream"}),
              "sd35l": (supported_models.SD3, {"depth": 38, "x_block_self_attn_layers": []}),
              "sd35m": (supported_models.SD3, {"depth": 24, "x_block_self_attn_layers": list(range(13))})}
PREFIX = {"sd1": {"unet": "diffusion_model.", "te": "clip_l.transformer."},
          "sdxl": {"unet": "diffusion_model.", "te1": "clip_l.transformer.", "te2": "clip_g.transformer."},
          "flux": {"unet": "diffusion_model.", "te1": "clip_l.transformer.", "te3": "t5xxl.transformer."},
          "chroma": {"unet": "diffusion_model."}, "qwenimage": {"unet": "diffusion_model."},
          **{arch: {"unet": "diffusion_model."} for arch in DIT_CONFIG}}
CONFIG = {"sd1": supported_models.SD15, "sdxl": supported_models.SDXL, "flux": supported_models.Flux,
          "chroma": supported_models.Chroma, "qwenimage": supported_models.QwenImage,
          **{arch: (lambda cls, unet: lambda: cls(unet))(cls, unet) for arch, (cls, unet) in DIT_CONFIG.items()}}
#: the ``comfy.model_base`` class ComfyUI builds for each (its ``get_model``)
MODEL_BASE = {"sd1": model_base.BaseModel, "sdxl": model_base.BaseModel, "flux": model_base.Flux,
              "chroma": model_base.Chroma, "qwenimage": model_base.QwenImage, "lumina2": model_base.Lumina2,
              "wan14b": model_base.WAN21, "wan5b": model_base.WAN22, "wan1b": model_base.WAN21,
              "hidream": model_base.HiDream, "sd35l": model_base.SD3, "sd35m": model_base.SD3}


def comfy_key(arch: str, name: str) -> str:
    comp, path = name.split(".", 1)
    return f"{PREFIX[arch][comp]}{path}.weight"


class StandInModel(torch.nn.Module):
    """``ModelPatcher.model`` / ``CLIP.cond_stage_model``: ``state_dict()`` and ``model_config``."""

    def __init__(self, weights: dict[str, torch.Tensor], config=None, diffusers_keys=None):
        super().__init__()
        self._weights = weights
        self.model_config = config
        self.diffusers_keys = diffusers_keys or {}

    def state_dict(self, *a, **kw):
        return dict(self._weights)


def build(arch: str, names: list[str] | None = None, *, meta: bool = False, seed: int = 0):
    """(MODEL patcher, CLIP) of ``arch`` with a weight for each table module (or ``names`` only)."""
    g = torch.Generator().manual_seed(seed)
    unet, te, diffusers = {}, {}, {}
    for row in lf.table(arch):
        if ":" in row["name"] or (names is not None and row["name"] not in names):
            continue
        shape = tuple(row["shape"])
        t = torch.empty(shape, device="meta") if meta else torch.randn(shape, generator=g) * 0.05
        key = comfy_key(arch, row["name"])
        if row["name"].startswith("unet."):
            unet[key] = t
            for alias in row["aliases"]:
                comp, path = alias.split(".", 1)
                if comp == "unet" and arch in ("sd1", "sd2", "sdxl"):
                    diffusers[path + ".weight"] = row["name"].split(".", 1)[1] + ".weight"
        else:
            te[key] = t
    cls = type(f"StandIn{MODEL_BASE[arch].__name__}", (StandInModel, MODEL_BASE[arch]), {})
    model = StandInModelPatcher(cls(unet, CONFIG[arch](), diffusers))
    return model, StandInCLIP(StandInModel(te))
