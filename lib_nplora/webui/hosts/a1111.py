"""AUTOMATIC1111 1.x: the fused LoRA as an in-memory network of the builtin Lora extension.

How A1111 applies LoRAs (``extensions-builtin/Lora``): ``networks.loaded_networks`` lists the
active ``network.Network`` objects; every patched layer (Linear, Conv2d, MultiheadAttention, ...)
compares, at its next forward, the tuple ``(name, te_multiplier, unet_multiplier, dyn_dim)`` of
the loaded networks with what it applied last, and if it differs restores its backed-up weight
and adds ``module.calc_updown(weight)`` of every loaded network that has a module for it.

So NP-LoRA:

* builds one ``Network`` named ``nplora_<digest>`` (unique to inputs + parameters) whose modules
  are ``NpLoraModule``s (a ``network.NetworkModule`` subclass) holding the fused factors, keyed
  by the layer names of ``sd_model.network_layer_mapping``;
* appends it to ``loaded_networks`` after every extra network activated (the builtin clears that
  list on each activation, so the hook runs again for every pass, hires included);
* removes it after the job: the layers restore their exact backed-up weights at their next
  forward, as they do when a ``<lora:…>`` is taken out of the prompt.

OpenCLIP text encoders (SD2, SDXL's second) are ``nn.MultiheadAttention`` blocks there: A1111
patches one only when the same network has its ``_q_proj``, ``_k_proj``, ``_v_proj`` and
``_out_proj``; missing ones are added as zero updates.

Built networks are cached by (digest, model) and dropped on model load (their modules hold the
old model's layers).
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict

import torch

from ...arch import ARCH_LABELS, flat, hosts_running, is_text_encoder
from ...arch import get as get_arch
from ...formats.keys import KOHYA_SUFFIX
from ...fused import FusedLora
from ...fusion.linalg import float32_math
from . import Applied, HostAdapter, HostError

MAX_CACHED_NETWORKS = 4
NAME_PREFIX = "nplora_"

_MHA_PART = re.compile(r"(.*_attn)_(q|k|v|out)_proj$")
_OPENCLIP_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(.+)")
_OPENCLIP_NAMES = {
    "self_attn.q_proj": "attn_q_proj", "self_attn.k_proj": "attn_k_proj",
    "self_attn.v_proj": "attn_v_proj", "self_attn.out_proj": "attn_out_proj",
    "mlp.fc1": "mlp_c_fc", "mlp.fc2": "mlp_c_proj",
    "layer_norm1": "ln_1", "layer_norm2": "ln_2",
}


def layer_name(canonical: str, arch: str) -> str | None:
    """A1111's layer name (a key of ``sd_model.network_layer_mapping``) for a canonical module.

    UNet: ``diffusion_model_`` + the LDM path. CLIP-L (HF layout): ``transformer_text_model_…``
    (SD1), ``0_transformer_text_model_…`` (SDXL). OpenCLIP (SD2, SDXL's second):
    ``[1_]model_transformer_resblocks_N_…`` with ``attn_q_proj`` etc. naming the parts of the
    block's MultiheadAttention. Returns None for modules A1111 has no layer for.

    Canonical text-encoder paths are HF ``CLIPTextModel`` paths (``text_model.encoder…``).
    """
    component, path = canonical.split(".", 1)
    if component == "unet" and arch in ("sd1", "sd2", "sdxl"):
        return "diffusion_model_" + flat(path)
    if component in ("te", "te1", "te2"):
        if not path.startswith("text_model."):
            return None
        path = path[len("text_model."):]
    if (arch, component) == ("sd1", "te"):
        return "transformer_text_model_" + flat(path)
    if (arch, component) == ("sdxl", "te1"):
        return "0_transformer_text_model_" + flat(path)
    if (arch, component) in (("sd2", "te"), ("sdxl", "te2")):
        prefix = "1_" if arch == "sdxl" else ""
        if path == "final_layer_norm":
            return prefix + "model_ln_final"
        m = _OPENCLIP_LAYER.fullmatch(path)
        if m and m.group(2) in _OPENCLIP_NAMES:
            return f"{prefix}model_transformer_resblocks_{m.group(1)}_{_OPENCLIP_NAMES[m.group(2)]}"
    return None


def _target_shape(sd_module, key: str) -> tuple[int, ...] | None:
    """Shape of the weight a module named ``key`` changes (a q/k/v slice for an MHA)."""
    if isinstance(sd_module, torch.nn.MultiheadAttention):
        if key.endswith("_out_proj"):
            return tuple(sd_module.out_proj.weight.shape)
        e = sd_module.embed_dim
        return (e, sd_module.kdim if key.endswith("_k_proj") else sd_module.vdim if key.endswith("_v_proj") else e)
    w = getattr(sd_module, "weight", None)
    return tuple(w.shape) if w is not None else None


_module_classes: dict[int, type] = {}


def module_class(network_module) -> type:
    """``NpLoraModule``: a subclass of the host's ``network.NetworkModule`` holding fused factors."""
    base = network_module.NetworkModule
    cls = _module_classes.get(id(base))
    if cls is not None:
        return cls

    class NpLoraModule(base):
        """One fused module: dW = up (out, R) @ down (R, in*kh*kw), scaling baked in.

        ``calc_updown(orig_weight)`` returns dW reshaped to ``orig_weight`` (computed in float32
        on the weight's device, returned in the weight's dtype) and the extra bias (out,) if any;
        the host's ``finalize_updown`` applies its multiplier (1.0 for this network).
        """

        def __init__(self, net, weights, up: torch.Tensor, down: torch.Tensor, bias: torch.Tensor | None):
            super().__init__(net, weights)
            self.up, self.down, self.ex_bias = up, down, bias
            self.dim = down.shape[0]

        def calc_updown(self, orig_weight):
            device = orig_weight.device
            with float32_math():  # A1111's FP8 mode runs forwards under bfloat16 autocast
                updown = self.up.to(device, torch.float32) @ self.down.to(device, torch.float32)
            updown = updown.reshape(orig_weight.shape)
            if orig_weight.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
                updown = updown.to(orig_weight.dtype)
            else:  # fp8 storage: the host adds in its own higher precision
                updown = updown.to(torch.float16)
            bias = self.ex_bias.to(device, updown.dtype) if self.ex_bias is not None else None
            return self.finalize_updown(updown, orig_weight, orig_weight.shape, bias)

    _module_classes[id(base)] = NpLoraModule
    return NpLoraModule


def build_network(fused: FusedLora, networks, network_module, sd_model, name: str):
    """A ``network.Network`` applying ``fused`` to ``sd_model`` through A1111's apply path.

    Returns:
        (network, number of layers it changes, touches a text encoder, warnings)

    Raises:
        HostError: A1111 does not run the fused LoRA's base model (``arch.hosts_running``), the
            model has no layer map (not loaded yet) or no fused module fits it.
    """
    if "a1111" not in hosts_running(fused.arch):
        label = ARCH_LABELS[fused.arch]
        raise HostError(f"AUTOMATIC1111 cannot run {label} models, so this {label} LoRA cannot be applied here",
                        hint=f"Use a host that runs {label} (Forge Neo or ComfyUI), or pick two LoRAs for the "
                             "loaded SD1/SD2/SDXL checkpoint")
    mapping = getattr(sd_model, "network_layer_mapping", None)
    if not mapping:
        networks.assign_network_names_to_compvis_modules(sd_model)
        mapping = getattr(sd_model, "network_layer_mapping", None)
    if not mapping:
        raise HostError("the loaded model has no LoRA layer map", hint="Load a checkpoint first")
    cls = module_class(network_module)
    donor = networks.available_networks.get(fused.content.name)
    net = network_module.Network(name, donor)
    net.te_multiplier = net.unet_multiplier = 1.0
    net.dyn_dim = None
    net.bundle_embeddings = {}
    net.nplora_digest = fused.digest

    unmapped: list[str] = []
    misfit: list[str] = []
    added: list[str] = []
    touches_te = False

    def target(key: str):
        """(module the host patches for ``key``, the MHA block name or None)."""
        m = _MHA_PART.fullmatch(key)
        if m and isinstance(mapping.get(m.group(1)), torch.nn.MultiheadAttention):
            block = m.group(1)
            if m.group(2) == "out":
                return mapping.get(key), block
            return mapping[block], block
        return mapping.get(key), None

    def add(key, sd_module, up, down, bias):
        weights = network_module.NetworkWeights(network_key=key, sd_key=key, w={}, sd_module=sd_module)
        net.modules[key] = cls(net, weights, up, down, bias)

    for canonical, mod in fused.modules.items():
        key = layer_name(canonical, fused.arch)
        sd_module, _ = target(key) if key else (None, None)
        if sd_module is None:
            unmapped.append(canonical)
            continue
        shape = _target_shape(sd_module, key)
        if shape is None or mod.up.shape[0] * mod.down.shape[1] != math.prod(shape):
            misfit.append(canonical)
            continue
        add(key, sd_module, mod.up, mod.down, mod.bias)
        touches_te = touches_te or is_text_encoder(canonical)
        added.append(canonical)

    applied = len(net.modules)
    for canonical in get_arch(fused.arch).attention_padding(added):
        key = layer_name(canonical, fused.arch)
        sd_module, block = target(key) if key else (None, None)
        shape = _target_shape(sd_module, key) if block is not None and sd_module is not None else None
        if shape is None:
            continue
        add(key, sd_module, torch.zeros(shape[0], 1), torch.zeros(1, math.prod(shape[1:])), None)

    before = len(net.modules)
    warnings, pt_te = _passthrough(fused, networks, network_module, net, mapping, unmapped)
    touches_te = touches_te or pt_te
    applied += len(net.modules) - before
    if unmapped:
        warnings.append(f"{len(unmapped)} module(s) have no layer in this model and were skipped "
                        f"(first: {unmapped[0]})")
    if misfit:
        warnings.append(f"{len(misfit)} module(s) do not match this model's weight shapes and were "
                        f"skipped (first: {misfit[0]})")
    if not net.modules:
        raise HostError("none of the fused modules fits the loaded model",
                        hint="Check that both LoRAs were made for the loaded checkpoint's base model")
    return net, applied, touches_te, warnings


def _passthrough(fused: FusedLora, networks, network_module, net, mapping,
                 unmapped: list[str]) -> tuple[list[str], bool]:
    """Non-additive modules (DoRA, OFT, IA3, norm, ...) through the host's own module types.

    Returns (warnings, whether a text-encoder layer got one).
    """
    warnings: list[str] = []
    touches_te = False
    for canonical, mod in fused.passthrough.items():
        key = layer_name(canonical, fused.arch)
        sd_module = mapping.get(key) if key else None
        if sd_module is None:
            unmapped.append(canonical)
            continue
        w = {}
        for role, t in mod.tensors.items():
            if role == "dora_scale" and t.dim() == 1:
                t = t.reshape(-1, 1)
            w[KOHYA_SUFFIX[role][1:]] = t  # the weight names A1111's network_*.py read
        weights = network_module.NetworkWeights(network_key=key, sd_key=key, w=w, sd_module=sd_module)
        created = None
        for module_type in networks.module_types:
            created = module_type.create_module(net, weights)
            if created is not None:
                break
        if created is None:
            warnings.append(f"{canonical}: the WebUI cannot apply this {mod.kind} module; skipped")
            continue
        net.modules[key] = created
        touches_te = touches_te or is_text_encoder(canonical)
    return warnings, touches_te


class Adapter(HostAdapter):
    """A1111: appends the fused ``Network`` to ``networks.loaded_networks`` for each pass."""

    name = "a1111"

    def __init__(self, networks, network_module=None, shared=None, devices=None, lora_dir=None):
        super().__init__(networks, lora_dir)
        if network_module is None:
            import network as network_module  # the builtin Lora extension's module
        self.network_module = network_module
        self._shared = shared
        self._devices = devices
        self._lock = threading.Lock()
        self._built: OrderedDict[tuple, tuple] = OrderedDict()

    # ------------------------------------------------------------------ host modules
    @property
    def shared(self):
        if self._shared is None:
            from modules import shared

            self._shared = shared
        return self._shared

    @property
    def devices(self):
        if self._devices is None:
            from modules import devices

            self._devices = devices
        return self._devices

    def current_model(self):
        return getattr(self.shared, "sd_model", None)

    # ------------------------------------------------------------------ apply / restore
    @staticmethod
    def is_ours(net) -> bool:
        return getattr(net, "nplora_digest", None) is not None

    def network_for(self, fused: FusedLora, sd_model):
        """The built network for ``fused`` on ``sd_model`` (cached), with its report."""
        key = (fused.digest, id(sd_model))
        with self._lock:
            hit = self._built.get(key)
            if hit is not None:
                self._built.move_to_end(key)
                return hit
        built = build_network(fused, self.networks, self.network_module, sd_model, NAME_PREFIX + fused.digest)
        with self._lock:
            self._built[key] = built
            while len(self._built) > MAX_CACHED_NETWORKS:
                self._built.popitem(last=False)
        return built

    def activate(self, p, fused: FusedLora) -> Applied:
        sd_model = getattr(p, "sd_model", None) or self.current_model()
        net, count, touches_te, warnings = self.network_for(fused, sd_model)
        loaded = self.networks.loaded_networks
        loaded[:] = [n for n in loaded if not self.is_ours(n)]
        others = [getattr(n, "name", "?") for n in loaded]
        loaded.append(net)
        warnings = list(warnings)
        if others and getattr(self.devices, "fp8", False) and getattr(self.shared.opts, "cache_fp16_weight", False):
            warnings.append(
                "FP8 weight with 'Cache FP16 weight for LoRA' applies only the last network, so the other "
                f"LoRAs of this prompt ({', '.join(others)}) are not applied; turn that setting off to "
                "combine them with NP-LoRA")
        return Applied(net.name, count, touches_te, warnings)

    def deactivate(self, p) -> None:
        loaded = self.networks.loaded_networks
        if any(self.is_ours(n) for n in loaded):
            loaded[:] = [n for n in loaded if not self.is_ours(n)]

    def forget_model(self) -> None:
        with self._lock:
            self._built.clear()
        self.deactivate(None)
