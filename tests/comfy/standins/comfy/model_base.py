"""Stand-in for the ``comfy.model_base`` classes ``comfy.lora.model_lora_keys_unet`` tells apart
with ``isinstance``, with the real module's inheritance: ``BaseModel``, ``Flux(BaseModel)``,
``Chroma(Flux)`` (so the real key map gives Chroma FLUX.1's diffusers names too) and
``QwenImage(BaseModel)``, ``Lumina2``, ``WAN21`` and ``WAN22(WAN21)``, ``HiDream``, ``SD3`` (each a
``BaseModel``; their key-map branches are not mirrored: the tests' files use the first loop's
``lora_unet_`` / ``diffusion_model.`` names, which every model has). The real ones are ``torch.nn.Module`` s holding the diffusion model;
the tests' model (``tests/comfy/comfy_models.py``) derives from the stand-in of its type."""


class BaseModel:
    pass


class Flux(BaseModel):
    pass


class Chroma(Flux):
    pass


class QwenImage(BaseModel):
    pass


class Lumina2(BaseModel):
    pass


class WAN21(BaseModel):
    pass


class WAN22(WAN21):
    pass


class HiDream(BaseModel):
    pass


class SD3(BaseModel):
    pass
