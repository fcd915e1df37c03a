"""Which NP-LoRA base architecture a ComfyUI model is, from its model config class.

ComfyUI detects the base model of a checkpoint and keeps the matching ``comfy.supported_models``
class as ``model_patcher.model.model_config``; subclasses (``FluxSchnell``, ``SD21UnclipL``, ...)
are found through the class's MRO. A model type NP-LoRA has no module table for is a clear error.

Checked against Comfy-Org/ComfyUI a125cd84 (v0.3.64): ``Chroma`` and ``QwenImage`` are their own
config classes (not ``Flux`` subclasses); ``ChromaRadiance(Chroma)`` is a pixel-space model (a
conv ``img_in_patch`` and NeRF decoder blocks instead of Chroma's ``img_in`` and ``final_layer``),
so it is refused rather than read with Chroma's table. That revision has no Z-Image or FLUX.2
config (its ``Lumina2`` is Lumina-Image 2.0), so NP-LoRA's ``zimage`` and ``flux2`` tables have no
ComfyUI model type to map from here; a later ComfyUI's classes would have to be checked first.
"""

from __future__ import annotations

from ..errors import ArchitectureError

#: ComfyUI model config class name -> NP-LoRA architecture (``lib_nplora/arch/tables``); None:
#: a subclass of a mapped class whose modules differ, refused by name
CONFIG_ARCH = {"SD15": "sd1", "SD20": "sd2", "SDXL": "sdxl", "Flux": "flux", "Chroma": "chroma",
               "ChromaRadiance": None, "QwenImage": "qwenimage"}


def arch_of(model) -> str:
    """The architecture of a ComfyUI MODEL (a ``ModelPatcher``).

    Raises:
        ArchitectureError: a model type NP-LoRA has no table for (named).
    """
    config = getattr(getattr(model, "model", None), "model_config", None)
    for cls in type(config).__mro__:
        if cls.__name__ in CONFIG_ARCH:
            arch = CONFIG_ARCH[cls.__name__]
            if arch is None:
                break
            return arch
    supported = ", ".join(k for k, v in CONFIG_ARCH.items() if v)
    raise ArchitectureError(f"NP-LoRA has no module table for ComfyUI's model type {type(config).__name__}",
                            hint=f"Use an SD1.5, SD2, SDXL, FLUX.1, Chroma or Qwen-Image model ({supported})")
