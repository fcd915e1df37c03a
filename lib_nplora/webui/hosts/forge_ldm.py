"""Old Forge (``ldm_patched``, up to 0.0.17), reForge and Forge Classic: patches on cloned
``ldm_patched`` patchers.

Forge Classic (Haoming02's ``classic`` branch) is built on old Forge's ``ldm_patched`` backend;
its builtin leaves ``forge_objects_after_applying_lora`` None while no ``<lora:…>`` is active
and processing then uses ``forge_objects`` as it is (``hosts.forge`` handles both).

These hosts keep Forge's object swap (``forge_objects_after_applying_lora``, an early return in the
builtin when the ``<lora:…>`` set did not change), so the swap of ``hosts.forge`` applies as is.
What differs is the patcher: ``ModelPatcher.patches`` maps each weight to a list that
``add_patches(patches, strength_patch, strength_model)`` *appends* to (positional, no identifier),
and the weights are merged when a patcher other than the loaded one goes to the device. Adding to
a fresh clone of the base each time keeps the effect single; the base's own patch lists are
never touched.

Patches come from the host's ``ldm_patched.modules.lora`` (``model_lora_keys_unet``,
``model_lora_keys_clip``, ``load_lora``): reForge returns ``LoRAAdapter`` objects where old Forge
returns tuples, and NP-LoRA never looks inside them.
"""

from __future__ import annotations

from ...arch import hosts_running
from . import HostError
from .forge import Adapter as ForgeAdapter


class Adapter(ForgeAdapter):
    """Old Forge / reForge (``ldm_patched`` patchers with a ``patches`` dict)."""

    name = "forge_ldm"
    label = "Forge Classic / reForge"
    backend_module = "ldm_patched.modules.lora"

    def check_patcher(self, patcher) -> None:
        if not hasattr(patcher, "patches") and not hasattr(getattr(patcher, "patcher", None), "patches"):
            raise HostError("this Forge's model patcher has no patches dict",
                            hint="Report the Forge/reForge version you use")

    def runs(self, arch: str) -> bool:
        """Forge Classic and reForge run the SD family, as A1111."""
        return "a1111" in hosts_running(arch)

    def online_mode(self, base) -> bool:
        return False

    def add_patches(self, patcher, patches: dict, ident: str, online: bool):
        clone = patcher.clone()
        accepted = clone.add_patches(patches, 1.0, 1.0)
        return clone, set(accepted or ())
