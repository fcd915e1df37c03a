"""Forge Neo (Haoming02/sd-webui-forge-classic, branch ``neo``): the fused LoRA through Neo's own loader.

Neo keeps Forge's ``backend/`` patcher and object swap (``hosts.forge``), but its builtin
``sd_forge_lora`` does per-architecture work before the patches exist, in
``networks.load_lora_for_models(model, clip, lora, strength_model, strength_clip, filename,
online_mode)``:

* Z-Image: keys converted by ``backend.nn._z_lora.convert_z_image_lora`` (separate q/k/v into the
  fused qkv weight, ``to_out.0`` -> ``out``) when the UNet key map has Z-Image's final layer;
* a LoRA whose keys are more than half unmatched is refused ("LoRA mismatch"), the patchers
  returned unchanged;
* Nunchaku (SVDQ) models (``dynamic_args["nunchaku"]``): no patches at all; the file's path and
  strength are appended to ``diffusion_model.loras`` and the model composes the LoRA from the
  file at its next forward (``backend/nn/svdq.py``: FLUX via nunchaku's ``compose_lora``,
  Qwen-Image via ``_qwen_lora.compose_loras_v2``);
* quantized storage (GGUF, bnb-nf4/fp4, fp8): with a "(fp16 LoRA)" choice in "Diffusion in Low
  Bits" (``dynamic_args["online_lora"]``) the patches are applied at every forward to the
  dequantized weight (``forge_online_loras``); otherwise ``LoraLoader.refresh`` merges them into
  the dequantized weight and quantizes it again, which Neo can do for the GGUF types whose class
  has a PyTorch quantizer (``quantize_blocks_pytorch``: Q8_0, Q5_0, Q4_0 in 283cb2c4) and raises
  ``NotImplementedError`` for the rest (the K-quants, IQ types) at the first sampling step.

So this adapter hands Neo's loader the fused LoRA as a state dict in the naming Neo loads
(``formats.writer.to_state_dict``: kohya names, per architecture as the writer knows it) under
the identifier ``nplora:<digest>``, on clones of the base patchers, and swaps those in as the
Forge adapter does. Every architecture whose LoRAs Neo loads takes the fused one the same way.
Offline on GGUF weights of a type Neo cannot quantize again, no patch is handed over
(``forge.unmergeable_gguf``, Forge main has the same rule): the job says why and generates without
NP-LoRA (a stock LoRA stops that generation with Neo's error).
For Nunchaku it follows Neo's rule: the fused LoRA is written once per fusion to a file
(``file_dir``, atomically) and appended to the model's LoRA list, and taken out again when NP-LoRA
is off; Nunchaku models take no text-encoder LoRA, which the report says.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from ...formats.writer import save_fused, to_state_dict
from ...fused import FusedLora
from . import Applied, HostError
from .forge import IDENT_PREFIX, Adapter as ForgeAdapter

MAX_CACHED_STATES = 4

#: Neo's diffusion engines (``backend/diffusion_engine/*.py``) -> lib_nplora.arch names. Neo sets
#: ``is_flux`` on Chroma, Lumina 2 and Z-Image and ``is_wan`` on Qwen-Image, so the flags cannot
#: tell them apart; the engine class can. A name lib_nplora.arch does not know (yet) means "unknown
#: model" (no fit check; the host's loader decides), never another architecture.
NEO_ENGINES = {"StableDiffusion": "sd1", "StableDiffusionXL": "sdxl", "StableDiffusionXLRefiner": "sdxl_refiner",
               "Flux": "flux", "Chroma": "chroma", "Lumina2": "lumina2", "ZImage": "zimage",
               "QwenImage": "qwenimage", "Wan": "wan"}
#: Neo's one ``Wan`` engine (WAN21_T2V / WAN21_I2V guesses) by its detected transformer width
#: (``model_config.unet_config["dim"]``, modules_forge/packages/huggingface_guess/detection.py)
WAN_BY_DIM = {5120: "wan14b", 1536: "wan1b"}
NUNCHAKU_ATTR = "_nplora_nunchaku"
FILE_PREFIX = "nplora-"


def _lora_patches(patcher_or_clip) -> dict:
    patcher = getattr(patcher_or_clip, "patcher", patcher_or_clip)
    return getattr(patcher, "lora_patches", None) or {}


def _is_text_encoder_module(name: str) -> bool:
    return not name.startswith("unet.")


class Adapter(ForgeAdapter):
    """Forge Neo: patches built by the builtin's ``load_lora_for_models``; Nunchaku by file."""

    name = "forge_neo"
    label = "Forge Neo"

    def __init__(self, networks, lora_backend=None, dynamic_args=None, shared=None, lora_dir=None,
                 file_dir: str | os.PathLike | None = None):
        super().__init__(networks, lora_backend=lora_backend, dynamic_args=dynamic_args, shared=shared,
                         lora_dir=lora_dir)
        self._file_dir = Path(file_dir) if file_dir is not None else Path(tempfile.gettempdir()) / "nplora-host-files"
        self._states: OrderedDict[str, dict] = OrderedDict()
        self._files_lock = threading.Lock()

    # ------------------------------------------------------------------ host specifics
    def model_arch(self, sd_model=None) -> str | None:
        """The loaded engine's architecture by its class (see ``NEO_ENGINES``)."""
        from ...arch import ARCH_NAMES

        if sd_model is None:
            sd_model = self.current_model()
        if sd_model is None:
            return None
        name = NEO_ENGINES.get(type(sd_model).__name__)
        if name is None:  # not one of Neo's engines (a stand-in, a newer engine): the flags
            return super().model_arch(sd_model)
        if name == "wan":  # one engine for the 14B and the 1.3B: the width tells (None: unknown)
            config = getattr(getattr(sd_model, "model_config", None), "unet_config", None) or {}
            return WAN_BY_DIM.get(config.get("dim"))
        return name if name in ARCH_NAMES else None

    def dynamic_args(self) -> dict:
        args = self._dynamic_args
        if args is None:
            try:
                import importlib

                args = importlib.import_module("backend.args").dynamic_args
            except (ImportError, AttributeError):
                return {}
        return args if isinstance(args, dict) else vars(args)

    def nunchaku(self) -> bool:
        return bool(self.dynamic_args().get("nunchaku", False))

    def state_for(self, fused: FusedLora) -> dict:
        """The fused LoRA as a kohya state dict (cached per fusion: a repeated pass builds nothing)."""
        with self._lock:
            hit = self._states.get(fused.digest)
            if hit is not None:
                self._states.move_to_end(fused.digest)
                return hit
        state, _notes = to_state_dict(fused)
        with self._lock:
            self._states[fused.digest] = state
            while len(self._states) > MAX_CACHED_STATES:
                self._states.popitem(last=False)
        return state

    # ------------------------------------------------------------------ patches via the builtin
    def patched_objects(self, base, fused: FusedLora, ident: str):
        loader = getattr(self.networks, "load_lora_for_models", None)
        if loader is None:
            raise HostError("this Forge Neo's Lora extension has no load_lora_for_models",
                            hint="Update Forge Neo, or report the version you use")
        online = self.online_mode(base)
        state = self.state_for(fused)
        unet, clip = loader(base.unet, base.clip, state, 1.0, 1.0, filename=ident, online_mode=online)
        key = (ident, 1.0, 1.0, online)
        unet_keys = set(_lora_patches(unet).get(key, {})) if unet is not base.unet else set()
        clip_keys = set(_lora_patches(clip).get(key, {})) if clip is not None and clip is not base.clip else set()
        if not unet_keys and not clip_keys:
            raise HostError("Forge Neo's LoRA loader took none of the fused modules for the loaded model "
                            "(its console line '[LORA] …' says why)",
                            hint="Check that both LoRAs were made for the loaded checkpoint's base model")
        if not online:
            self.refuse_unmergeable(unet, unet_keys, clip, clip_keys)
        new = base.shallow_copy()
        new.unet = unet if unet_keys else base.unet
        new.clip = clip if clip_keys else base.clip
        warnings = []
        taken = len(unet_keys) + len(clip_keys)
        if taken < len(fused.modules):
            warnings.append(f"Forge Neo's loader took {taken} of {len(fused.modules)} fused module(s); "
                            "the rest have no weight in this model")
        return new, Applied(ident, taken, bool(clip_keys), warnings)

    # ------------------------------------------------------------------ Nunchaku: by file
    def fused_file(self, fused: FusedLora) -> Path:
        """The fused LoRA as a file Nunchaku can compose from (written once per fusion)."""
        path = self._file_dir / f"{FILE_PREFIX}{fused.digest[:32]}.safetensors"
        with self._files_lock:
            if not path.is_file():
                self._file_dir.mkdir(parents=True, exist_ok=True)
                save_fused(fused, path, overwrite=True)
        return path

    def activate(self, p, fused: FusedLora) -> Applied:
        if not self.nunchaku():
            self._drop_nunchaku(p)
            return super().activate(p, fused)
        sd_model = getattr(p, "sd_model", None) or self.current_model()
        base = getattr(sd_model, "forge_objects_after_applying_lora", None) or getattr(sd_model, "forge_objects", None)
        diffusion_model = getattr(getattr(getattr(base, "unet", None), "model", None), "diffusion_model", None)
        loras = getattr(diffusion_model, "loras", None)
        if not isinstance(loras, list):
            raise HostError("this Nunchaku model has no LoRA list, so Forge Neo cannot apply a LoRA to it",
                            hint="Use a non-Nunchaku checkpoint for NP-LoRA")
        path = str(self.fused_file(fused))
        self._remove_entries(loras)
        loader = getattr(self.networks, "load_lora_for_models", None)
        if loader is not None:  # Neo's own rule: its Nunchaku branch appends (filename, strength)
            loader(base.unet, base.clip, {}, 1.0, 1.0, filename=path)
        if (path, 1.0) not in loras:
            loras.append((path, 1.0))
        setattr(sd_model, NUNCHAKU_ATTR, diffusion_model)
        warnings = []
        te = sum(1 for name in fused.modules if _is_text_encoder_module(name))
        if te:
            warnings.append(f"Nunchaku models take LoRAs on the diffusion model only: {te} text-encoder "
                            "module(s) of the fusion are not applied")
        ident = IDENT_PREFIX + fused.digest
        return Applied(ident, len(fused.modules) - te, False, warnings)

    def _remove_entries(self, loras: list) -> None:
        mine = str(self._file_dir) + os.sep + FILE_PREFIX
        loras[:] = [e for e in loras if not (isinstance(e, tuple) and str(e[0]).startswith(mine))]

    def _drop_nunchaku(self, p) -> None:
        sd_model = getattr(p, "sd_model", None) if p is not None else None
        sd_model = sd_model or self.current_model()
        diffusion_model = getattr(sd_model, NUNCHAKU_ATTR, None)
        if diffusion_model is None:
            return
        loras = getattr(diffusion_model, "loras", None)
        if isinstance(loras, list):
            self._remove_entries(loras)
        setattr(sd_model, NUNCHAKU_ATTR, None)

    def deactivate(self, p) -> None:
        self._drop_nunchaku(p)
        super().deactivate(p)

    def forget_model(self) -> None:
        super().forget_model()
        with self._lock:
            self._states.clear()
