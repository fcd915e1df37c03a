"""Stand-in for the ``comfy.supported_models`` classes NP-LoRA tells apart by name (a loaded
model's ``model.model_config`` is an instance of one, holding in ``unet_config`` what ComfyUI's
detection derived from the checkpoint), with the real module's inheritance: every one derives
from ``supported_models_base.BASE`` (here ``BASE``, whose ``unet_config`` argument is optional);
``Chroma`` and ``QwenImage`` are not ``Flux`` subclasses. From a125cd84: ``SD15``, ``SD20``,
``SDXL``, ``SDXLRefiner`` (no NP-LoRA table), ``Flux`` and ``FluxSchnell(Flux)``, ``Chroma`` and
``ChromaRadiance(Chroma)``, ``QwenImage``, ``Lumina2``, ``SD3``, ``HiDream``, ``WAN21_T2V`` and
its subclasses, ``Hunyuan3Dv2`` (no table); from 783545f6 also ``Flux2(Flux)`` (FLUX.2-dev and
klein alike), ``ZImage(Lumina2)``, ``ZImagePixelSpace(ZImage)``, the Wan configs it adds and
``HiDreamO1`` (its own class)."""


class BASE:
    def __init__(self, unet_config=None):
        self.unet_config = dict(unet_config or {})


class SD15(BASE):
    pass


class SD20(BASE):
    pass


class SDXL(BASE):
    pass


class SDXLRefiner(BASE):
    pass


class SD3(BASE):
    pass


class Flux(BASE):
    pass


class FluxSchnell(Flux):
    pass


class Flux2(Flux):
    pass


class Chroma(BASE):
    pass


class ChromaRadiance(Chroma):
    pass


class QwenImage(BASE):
    pass


class Lumina2(BASE):
    pass


class ZImage(Lumina2):
    pass


class ZImagePixelSpace(ZImage):
    pass


class HiDream(BASE):
    pass


class HiDreamO1(BASE):
    pass


class Hunyuan3Dv2(BASE):
    pass


class WAN21_T2V(BASE):
    pass


class WAN21_CausalAR_T2V(WAN21_T2V):
    pass


class WAN21_I2V(WAN21_T2V):
    pass


class WAN21_FunControl2V(WAN21_T2V):
    pass


class WAN21_Camera(WAN21_T2V):
    pass


class WAN22_Camera(WAN21_T2V):
    pass


class WAN21_Vace(WAN21_T2V):
    pass


class WAN21_HuMo(WAN21_T2V):
    pass


class WAN22_S2V(WAN21_T2V):
    pass


class WAN22_Animate(WAN21_T2V):
    pass


class WAN_Animate2(WAN21_T2V):
    pass


class WAN22_T2V(WAN21_T2V):
    pass


class WAN21_FlowRVS(WAN21_T2V):
    pass


class WAN21_SCAIL(WAN21_T2V):
    pass


class WAN21_SCAIL2(WAN21_T2V):
    pass


class WAN22_WanDancer(WAN21_T2V):
    pass
