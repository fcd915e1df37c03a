"""Stand-in for the ``comfy.supported_models`` classes NP-LoRA tells apart by name (a loaded
model's ``model.model_config`` is an instance of one): ``SD15``, ``SD20``, ``SDXL``, ``Flux`` and
``FluxSchnell(Flux)``, ``Chroma`` and ``ChromaRadiance(Chroma)``, ``QwenImage``, ``SDXLRefiner``
and ``Lumina2`` (no NP-LoRA table), with the real module's inheritance (in the real module every
one of them derives from ``supported_models_base.BASE``; ``Chroma`` and ``QwenImage`` are not
``Flux`` subclasses)."""


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
