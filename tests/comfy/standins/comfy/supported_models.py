"""Stand-in for the ``comfy.supported_models`` classes NP-LoRA tells apart by name (a loaded
model's ``model.model_config`` is an instance of one): ``SD15``, ``SD20``, ``SDXL``, ``Flux`` and
``FluxSchnell(Flux)``, ``Chroma`` and ``ChromaRadiance(Chroma)``, ``QwenImage``, ``SDXLRefiner``
and ``Lumina2`` (no NP-LoRA table), with the real module's inheritance (in the real module every
one of them derives from ``supported_models_base.BASE``; ``Chroma`` and ``QwenImage`` are not
``Flux`` subclasses); from later revisions (783545f6) ``Flux2(Flux)``, holding the ``unet_config``
its detection derived (FLUX.2-dev and klein alike), ``ZImage(Lumina2)`` and
``ZImagePixelSpace(ZImage)``."""


class SD15:
    pass


class SD20:
    pass


class SDXL:
    pass


class SDXLRefiner:
    pass


class Flux:
    pass


class FluxSchnell(Flux):
    pass


class Chroma:
    pass


class ChromaRadiance(Chroma):
    pass


class QwenImage:
    pass


class Lumina2:
    pass


class ZImage(Lumina2):
    pass


class ZImagePixelSpace(ZImage):
    pass


class Flux2(Flux):
    def __init__(self, unet_config=None):
        self.unet_config = dict(unet_config or {})
