"""Stand-in for the ``comfy.supported_models`` classes NP-LoRA tells apart by name (a loaded
model's ``model.model_config`` is an instance of one): ``SD15``, ``SD20``, ``SDXL``, ``Flux`` and
``FluxSchnell(Flux)``, ``SDXLRefiner`` (no NP-LoRA table), as in the real module."""


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
