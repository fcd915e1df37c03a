"""Which NP-LoRA base architecture a ComfyUI model is, from its model config class.

ComfyUI detects the base model of a checkpoint and keeps the matching ``comfy.supported_models``
class as ``model_patcher.model.model_config``; subclasses (``FluxSchnell``, ``SD21UnclipL``, ...)
are found through the class's MRO. A model type NP-LoRA has no module table for is a clear error.

Checked against Comfy-Org/ComfyUI a125cd84 (v0.3.64): ``Chroma`` and ``QwenImage`` are their own
config classes (not ``Flux`` subclasses); ``ChromaRadiance(Chroma)`` is a pixel-space model (a
conv ``img_in_patch`` and NeRF decoder blocks instead of Chroma's ``img_in`` and ``final_layer``),
so it is refused rather than read with Chroma's table. Its ``Lumina2`` is Lumina-Image 2.0.

Checked against 783545f6 (v0.33.0), which adds Z-Image and FLUX.2: ``ZImage(Lumina2)`` (and
``ZImagePixelSpace(ZImage)``, a pixel-space variant with a decoder network, refused) and
``Flux2(Flux)`` for FLUX.2-dev and both klein sizes alike; its detection derives the sizes from
the checkpoint (``unet_config["hidden_size"]``: 6144 dev, 3072 klein 4B, 4096 klein 9B), which
picks the table here. Without the ``Flux2`` entry a FLUX.2 model would be taken for FLUX.1.
"""

from __future__ import annotations

from ..errors import ArchitectureError

#: ComfyUI model config class name -> NP-LoRA architecture (``lib_nplora/arch/tables``); None:
#: a subclass of a mapped class whose modules differ, refused by name
CONFIG_ARCH = {"SD15": "sd1", "SD20": "sd2", "SDXL": "sdxl", "Flux": "flux", "Chroma": "chroma",
               "ChromaRadiance": None, "QwenImage": "qwenimage", "ZImage": "zimage", "ZImagePixelSpace": None,
               "Flux2": "flux2"}
#: FLUX.2 family: ComfyUI's ``Flux2`` config holds all three; its detected hidden size tells them apart
FLUX2_BY_HIDDEN = {6144: "flux2", 3072: "flux2klein4b", 4096: "flux2klein9b"}


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
            if arch == "flux2":
                return _flux2_size(config)
            return arch
    supported = ", ".join(k for k, v in CONFIG_ARCH.items() if v)
    raise ArchitectureError(f"NP-LoRA has no module table for ComfyUI's model type {type(config).__name__}",
                            hint=f"Use an SD1.5, SD2, SDXL, FLUX.1, Chroma, Qwen-Image, Z-Image, FLUX.2-dev "
                                 f"or FLUX.2-klein 4B / 9B model ({supported})")


def _flux2_size(config) -> str:
    hidden = (getattr(config, "unet_config", None) or {}).get("hidden_size")
    if hidden not in FLUX2_BY_HIDDEN:
        raise ArchitectureError(f"NP-LoRA has no module table for a ComfyUI Flux2 model of hidden size {hidden}",
                                hint="NP-LoRA reads FLUX.2-dev (6144) and FLUX.2-klein 4B (3072) / 9B (4096)")
    return FLUX2_BY_HIDDEN[hidden]
