"""Stand-ins for Forge Classic's builtin LoRA and its per-batch processing order.

Mirrored (Haoming02/sd-webui-forge-classic branch ``classic``, as carried by
ivanuser/stable-diffusion-webui-Nukem at ``c813972d``, 2025-11-29; an ``ldm_patched`` backend):

* ``modules_forge/forge_loader.py``: a loaded model starts with
  ``forge_objects_after_applying_lora = None``.
* ``extensions-builtin/Lora/networks.py`` ``load_networks``: ``compiled = [(filename, unet_mult,
  te_mult), …]``; equal to ``shared.cached_lora_hash`` -> return; else store it, and with no
  LoRA set ``forge_objects_after_applying_lora = None`` and return; else
  ``ldm_patched.modules.sd.load_lora_for_models`` over ``forge_objects`` and
  ``forge_objects_after_applying_lora = forge_objects.shallow_copy()``.
* ``modules/processing.py``: per batch ``forge_objects = forge_objects_original.shallow_copy()``,
  extra networks, ``after_extra_networks_activate``, then **only if** ``shared.cached_lora_hash``
  ``forge_objects = forge_objects_after_applying_lora.shallow_copy()`` (the same before sampling
  and before the hires pass); conditioning loads the CLIP patcher, sampling the UNet patcher
  (``patch_model`` merges, ``unpatch_model`` restores the backup).

The patchers and ``ldm_patched.modules.lora`` are ``forge_backend``'s ldm stand-ins.
"""

from __future__ import annotations

from . import forge_backend as fb


class StandInClassicShared:
    """``modules.shared``'s ``cached_lora_hash`` (a process global in Classic)."""

    def __init__(self):
        self.cached_lora_hash = []


def standin_classic_model(unet_rows, te_rows):
    sd = fb.StandInForgeModel(unet_rows, te_rows, patcher=fb.StandInLdmModelPatcher, clip=fb.StandInLdmCLIP)
    sd.forge_objects_after_applying_lora = None
    return sd


def standin_classic_builtin_lora(shared, sd, loras: list[tuple[str, dict]]):
    compiled = [(name, 1.0, 1.0) for name, _ in loras]
    if shared.cached_lora_hash == compiled:
        return
    shared.cached_lora_hash = compiled
    sd.current_lora_hash = str(compiled)
    if not compiled:
        sd.forge_objects_after_applying_lora = None
        return
    unet, clip = sd.forge_objects.unet, sd.forge_objects.clip
    for _name, lora_sd in loras:
        km = fb.model_lora_keys_unet(unet.model, {})
        km = fb.model_lora_keys_clip(clip.cond_stage_model, km)
        patches = fb.ldm_load_lora(lora_sd, km)
        unet, clip = unet.clone(), clip.clone()
        unet.add_patches(patches, 1.0)
        clip.add_patches(patches, 1.0)
    sd.forge_objects.unet, sd.forge_objects.clip = unet, clip
    sd.forge_objects_after_applying_lora = sd.forge_objects.shallow_copy()


def standin_classic_batch(shared, sd, hook, loras=(), hires_hook=None):
    """One batch of Classic's processing (and its hires pass when ``hires_hook`` is given)."""
    sd.forge_objects = sd.forge_objects_original.shallow_copy()
    standin_classic_builtin_lora(shared, sd, list(loras))
    hook()
    if shared.cached_lora_hash:
        sd.forge_objects = sd.forge_objects_after_applying_lora.shallow_copy()
    fb.load(sd.forge_objects.clip)
    if shared.cached_lora_hash:
        sd.forge_objects = sd.forge_objects_after_applying_lora.shallow_copy()
    fb.load(sd.forge_objects.unet)
    if hires_hook is not None:
        standin_classic_builtin_lora(shared, sd, list(loras))
        hires_hook()
        fb.load(sd.forge_objects.clip)
        if shared.cached_lora_hash:
            sd.forge_objects = sd.forge_objects_after_applying_lora.shallow_copy()
        fb.load(sd.forge_objects.unet)


# ---------------------------------------------------------------------------- X/Y/Z extension


class StandInLibXyzAxisOption:
    """``extensions-builtin/xyz/lib_xyz/classes.py`` ``AxisOption`` (A1111's signature)."""

    def __init__(self, label, type, apply, format_value=None, confirm=None, cost=0.0, choices=None, prepare=None):
        self.label, self.type, self.apply, self.format_value = label, type, apply, format_value
        self.confirm, self.cost, self.prepare, self.choices = confirm, cost, prepare, choices


class StandInClassicXyz:
    """The script class of ``extensions-builtin/xyz/scripts/xyz_grid.py`` (``class XYZ``)."""

    def title(self):
        return "X/Y/Z Plot"


def standin_classic_xyz_module():
    """Classic's X/Y/Z script module: ``axis_options = builtins.builtin_options`` and
    ``AxisOption`` imported from ``lib_xyz``, both module attributes."""
    from types import SimpleNamespace

    return SimpleNamespace(AxisOption=StandInLibXyzAxisOption, XYZ=StandInClassicXyz,
                           axis_options=[StandInLibXyzAxisOption("Nothing", str, lambda p, x, xs: None),
                                         StandInLibXyzAxisOption("Seed", int, lambda p, x, xs: None)])
