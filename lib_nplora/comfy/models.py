"""Which NP-LoRA base architecture a ComfyUI model is, from its model config class.

ComfyUI detects the base model of a checkpoint and keeps the matching ``comfy.supported_models``
class as ``model_patcher.model.model_config``; subclasses (``FluxSchnell``, ``SD21UnclipL``, ...)
are found through the class's MRO. A model type NP-LoRA has no module table for is a clear error.
"""

from __future__ import annotations

from ..errors import ArchitectureError

#: ComfyUI model config class name -> NP-LoRA architecture (``lib_nplora/arch/tables``)
CONFIG_ARCH = {"SD15": "sd1", "SD20": "sd2", "SDXL": "sdxl", "Flux": "flux"}


def arch_of(model) -> str:
    """The architecture of a ComfyUI MODEL (a ``ModelPatcher``).

    Raises:
        ArchitectureError: a model type NP-LoRA has no table for (named).
    """
    config = getattr(getattr(model, "model", None), "model_config", None)
    for cls in type(config).__mro__:
        if cls.__name__ in CONFIG_ARCH:
            return CONFIG_ARCH[cls.__name__]
    raise ArchitectureError(f"NP-LoRA has no module table for ComfyUI's model type {type(config).__name__}",
                            hint="Use an SD1.5, SD2, SDXL or FLUX model (" + ", ".join(CONFIG_ARCH) + ")")
