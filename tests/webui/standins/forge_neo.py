"""Stand-ins for Forge Neo's builtin LoRA loader and its Nunchaku model.

Mirrored (Haoming02/sd-webui-forge-classic branch ``neo``, as carried by
ivanuser/stable-diffusion-webui-Nukem at ``283cb2c4``, 2025-11-29):

* ``extensions-builtin/sd_forge_lora/networks.py``:
  ``load_lora_for_models(model, clip, lora, strength_model, strength_clip, filename="default",
  online_mode=False)``: with ``dynamic_args["nunchaku"]`` it appends ``(filename,
  strength_model)`` to ``model.model.diffusion_model.loras`` and returns ``(model, clip)``
  unchanged; otherwise key maps from ``model_lora_keys_unet`` / ``model_lora_keys_clip``, the
  Z-Image key conversion when the UNet key map has ``diffusion_model.final_layer.adaLN_modulation.1``,
  ``load_lora`` for the UNet then the CLIP, **more than half of the keys unmatched -> (model, clip)
  returned unchanged** ("LoRA mismatch"), else clones with ``add_patches(filename=…, patches=…,
  strength_patch=…, online_mode=…)``, each clone kept only when at most 12 of its patches were
  skipped.
* ``backend/nn/svdq.py``: a Nunchaku diffusion model keeps ``loras: list[(path, strength)]`` and
  composes them from the files at its next forward (here: ``composed`` records what it read).

The patchers, key maps and ``load_lora`` are ``forge_backend``'s (Neo's ``backend/patcher`` has
Forge2's interface).
"""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from . import forge_backend as fb
from .a1111_lora import StandInNetworks


class StandInNeoNetworks(StandInNetworks):
    """Neo's ``networks`` module: the LoRA list plus ``load_lora_for_models``."""

    def __init__(self, lora_dir=None, dynamic_args=None):
        super().__init__(lora_dir)
        self.dynamic_args = dynamic_args if dynamic_args is not None else {"nunchaku": False}
        self.loads: list[str] = []

    def load_lora_for_models(self, model, clip, lora, strength_model, strength_clip, filename="default",
                             online_mode=False):
        self.loads.append(filename)
        if self.dynamic_args.get("nunchaku", False):
            model.model.diffusion_model.loras.append((filename, strength_model))
            return model, clip
        unet_keys = fb.model_lora_keys_unet(model.model) if model is not None else {}
        clip_keys = fb.model_lora_keys_clip(clip.cond_stage_model) if clip is not None else {}
        lora_unmatch = lora
        lora_unet, lora_unmatch = fb.load_lora(lora_unmatch, unet_keys)
        lora_clip, lora_unmatch = fb.load_lora(lora_unmatch, clip_keys)
        if len(lora_unmatch) / len(lora) > 0.5:
            return model, clip
        new_model = model.clone() if model is not None else None
        new_clip = clip.clone() if clip is not None else None
        if new_model is not None and len(lora_unet) > 0:
            loaded = new_model.add_patches(filename=filename, patches=lora_unet, strength_patch=strength_model,
                                           online_mode=online_mode)
            if len([k for k in lora_unet if k not in loaded]) <= 12:
                model = new_model
        if new_clip is not None and len(lora_clip) > 0:
            loaded = new_clip.add_patches(filename=filename, patches=lora_clip, strength_patch=strength_clip,
                                          online_mode=online_mode)
            if len([k for k in lora_clip if k not in loaded]) <= 12:
                clip = new_clip
        return model, clip


class StandInNunchakuDiffusionModel(torch.nn.Module):
    """``backend/nn/svdq.py``'s models: a LoRA list composed from the files at the next forward."""

    def __init__(self):
        super().__init__()
        self.loras: list = []
        self.composed: list[tuple[list[str], float]] = []

    def forward_once(self):
        """What the next forward composes: each listed file's keys and strength."""
        self.composed = [(sorted(load_file(path)), strength) for path, strength in self.loras]
        return self.composed


class StandInNunchakuModel:
    """A loaded Nunchaku (SVDQ) model: ``forge_objects`` whose UNet holds the diffusion model."""

    def __init__(self):
        self.is_sdxl, self.is_sd1, self.is_sd2, self.is_sd3 = False, False, False, False
        km = fb.StandInKModel(StandInNunchakuDiffusionModel())
        unet = fb.StandInModelPatcher(km)
        self.forge_objects = fb.StandInForgeObjects(unet, None, None, None)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.current_lora_hash = str([])

