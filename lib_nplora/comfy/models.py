"""Which NP-LoRA base architecture a ComfyUI model is, from its model config class.

ComfyUI detects the base model of a checkpoint and keeps the matching ``comfy.supported_models``
class as ``model_patcher.model.model_config``; subclasses (``FluxSchnell``, ``SD21UnclipL``,
``WAN21_I2V``, ...) are found through the class's MRO. A config class that holds several sizes
keeps the sizes its detection read from the checkpoint in ``unet_config``; one field of it picks
the table (``SIZES``). A model type NP-LoRA has no module table for, or a size it has none for,
is a clear error naming it.

Checked against Comfy-Org/ComfyUI a125cd84 (v0.3.64): ``Chroma`` and ``QwenImage`` are their own
config classes (not ``Flux`` subclasses); ``ChromaRadiance(Chroma)`` is a pixel-space model (a
conv ``img_in_patch`` and NeRF decoder blocks instead of Chroma's ``img_in`` and ``final_layer``),
so it is refused rather than read with Chroma's table. ``Lumina2`` is Lumina-Image 2.0 (and
Neta-Lumina); its ``cap_feat_dim`` (the caption width its detection reads) is 2304 there, 2560
for NewBie (Gemma-3) and for a Z-Image checkpoint in a ComfyUI without ``ZImage``: refused.
``WAN21_T2V`` and every Wan config (``WAN21_I2V``, ``_FunControl2V``, ``_Camera``, ``_Vace``,
``_HuMo``, ``WAN22_Camera``, ``_S2V``, ``_Animate``, ``WAN22_T2V`` for the 5B; 783545f6 adds
``WAN21_CausalAR_T2V``, ``WAN_Animate2``, ``WAN21_FlowRVS``, ``_SCAIL``, ``_SCAIL2``,
``WAN22_WanDancer``) derive from it; ``unet_config["dim"]`` picks 14B / 5B / 1.3B. The variants
keep the base blocks' names and shapes and add modules of their own (VACE blocks, audio and face
adapters, ...), which the tables lack: a file training those is refused naming the module.
``SD3`` holds SD3 Medium and SD3.5 Large / Medium; ``unet_config["depth"]`` (hidden / 64) picks
the table: 38 Large, 24 Medium. SD3 Medium (3.0) has depth 24 without the MMDiT-X second
attention (``x_block_self_attn_layers`` empty), and without it the modulation of blocks 0-12
(``x_block.adaLN_modulation.1``) has 6 x 1536 rows, not the ``sd35m`` table's 9 x 1536: not a
subset of the table, so it is refused (an SD3.5 Medium pair would patch it misshaped).
``HiDream`` is HiDream-I1 (Full, Dev, Fast);
783545f6's ``HiDreamO1`` is another model (its own class, refused).

Checked against 783545f6 (v0.33.0), which adds Z-Image and FLUX.2: ``ZImage(Lumina2)`` (and
``ZImagePixelSpace(ZImage)``, a pixel-space variant with a decoder network, refused) and
``Flux2(Flux)`` for FLUX.2-dev and both klein sizes alike; its detection derives the sizes from
the checkpoint (``unet_config["hidden_size"]``: 6144 dev, 3072 klein 4B, 4096 klein 9B), which
picks the table here. Without the ``Flux2`` entry a FLUX.2 model would be taken for FLUX.1.
"""

from __future__ import annotations

from ..errors import ArchitectureError

#: ComfyUI model config class name -> NP-LoRA architecture (``lib_nplora/arch/tables``), or a
#: family of ``SIZES``; None: a subclass of a mapped class whose modules differ, refused by name
CONFIG_ARCH = {"SD15": "sd1", "SD20": "sd2", "SDXL": "sdxl", "Flux": "flux", "Chroma": "chroma",
               "ChromaRadiance": None, "QwenImage": "qwenimage", "ZImage": "zimage", "ZImagePixelSpace": None,
               "Flux2": "flux2", "Lumina2": "lumina2", "WAN21_T2V": "wan", "SD3": "sd3", "HiDream": "hidream"}
#: family -> (ComfyUI model type, the ``unet_config`` field its detection derives from the
#: checkpoint, {value: architecture}, what the values are): the config holds several sizes
SIZES = {"flux2": ("Flux2", "hidden_size", {6144: "flux2", 3072: "flux2klein4b", 4096: "flux2klein9b"},
                   "FLUX.2-dev (6144) and FLUX.2-klein 4B (3072) / 9B (4096)"),
         "wan": ("Wan", "dim", {5120: "wan14b", 3072: "wan5b", 1536: "wan1b"},
                 "Wan 2.1 / 2.2 14B (5120), Wan 2.2 TI2V 5B (3072) and Wan 2.1 1.3B (1536)"),
         "sd3": ("SD3", "depth", {38: "sd35l", 24: "sd35m"}, "SD3.5 Large (38) and SD3.5 Medium (24, MMDiT-X)"),
         "lumina2": ("Lumina2", "cap_feat_dim", {2304: "lumina2"},
                     "Lumina-Image-2.0 / Neta-Lumina (Gemma-2 captions, 2304)")}
#: the field names of ``SIZES`` in messages
_FIELD_WORDS = {"hidden_size": "hidden size", "dim": "hidden size", "depth": "depth",
                "cap_feat_dim": "caption width"}


def arch_of(model) -> str:
    """The architecture of a ComfyUI MODEL (a ``ModelPatcher``).

    Raises:
        ArchitectureError: a model type, or a size of one, NP-LoRA has no table for (named).
    """
    config = getattr(getattr(model, "model", None), "model_config", None)
    for cls in type(config).__mro__:
        if cls.__name__ in CONFIG_ARCH:
            arch = CONFIG_ARCH[cls.__name__]
            if arch is None:
                break
            if arch in SIZES:
                return _sized(arch, config)
            return arch
    supported = ", ".join(k for k, v in CONFIG_ARCH.items() if v)
    raise ArchitectureError(f"NP-LoRA has no module table for ComfyUI's model type {type(config).__name__}",
                            hint=f"Use an SD1.5, SD2, SDXL, FLUX.1, Chroma, Qwen-Image, Z-Image, FLUX.2-dev, "
                                 f"FLUX.2-klein 4B / 9B, Lumina-Image-2.0, Wan 2.1 / 2.2, HiDream-I1 or "
                                 f"SD3.5 Large / Medium model ({supported})")


def _sized(family: str, config) -> str:
    label, field, by_size, what = SIZES[family]
    size = (getattr(config, "unet_config", None) or {}).get(field)
    if size not in by_size:
        raise ArchitectureError(f"NP-LoRA has no module table for a ComfyUI {label} model "
                                f"({type(config).__name__}) of {_FIELD_WORDS[field]} {size}",
                                hint=f"NP-LoRA reads {what}")
    if family == "sd3" and size == 24 and not config.unet_config.get("x_block_self_attn_layers"):
        raise ArchitectureError("NP-LoRA has no module table for ComfyUI's SD3 Medium (3.0) model (SD3, depth 24 "
                                "without SD3.5's second attention): the modulation of its blocks 0-12 "
                                "(x_block.adaLN_modulation.1) has 9216 rows where SD3.5 Medium's has 13824",
                                hint=f"NP-LoRA reads {what}")
    return by_size[size]
