"""The "NP-LoRA" section of the WebUI settings, and reading it with safe defaults.

Options (``shared.opts``):

* ``nplora_device``: where fusion math runs: "auto" (the WebUI's device: the GPU when there is
  one), "GPU" or "CPU"; a value written another way (``/sdapi/v1/options``, config.json) is
  kept as it is and goes through ``devices.resolve_device`` when fusion runs, so "cuda:1" works
  where that GPU exists and "meta" or "cuda:7" get the same clear ParameterError as ``--device``;
* ``nplora_cache_mb``: memory for cached inputs, style bases and fused results (MiB);
* ``nplora_default_mu``, ``nplora_default_k`` (0 = full rank): the accordion's starting values
  and the REST API's defaults;
* ``nplora_project_te``: project text-encoder modules too (scope "all") by default.

Reading never fails: in API-only mode (no settings page built) or before the options are
registered, the saved value or the default is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import devices
from ..cache import shared as shared_caches
from ..errors import ParameterError
from ..params import DEFAULT_MU, FuseParams

SECTION = ("nplora", "NP-LoRA")
DEVICES = ("auto", "GPU", "CPU")
MAX_CACHE_MB = 65536


@dataclass(frozen=True)
class Settings:
    device: str = "auto"
    cache_mb: int = 2048
    default_mu: float = DEFAULT_MU
    default_k: int = 0
    project_te: bool = False

    def defaults(self) -> FuseParams:
        """Default fusion parameters; a saved value out of range falls back to the paper's."""
        scope = "all" if self.project_te else "unet"
        try:
            return FuseParams.from_values(None, mu=self.default_mu, k=self.default_k or None, scope=scope)
        except ParameterError:
            return FuseParams.from_values(None, scope=scope)


DEFAULTS = Settings()

#: option key -> (default, label)
OPTIONS = {
    "nplora_device": (DEFAULTS.device, "Fusion device"),
    "nplora_cache_mb": (DEFAULTS.cache_mb, "Cache size for LoRA inputs, style bases and fused results (MiB)"),
    "nplora_default_mu": (DEFAULTS.default_mu, "Default mu (soft projection strength; 0.5 is the paper's)"),
    "nplora_default_k": (DEFAULTS.default_k, "Default rank k of the style subspace (0 = full rank, the paper's)"),
    "nplora_project_te": (DEFAULTS.project_te, "Project text-encoder modules too (otherwise they are merged directly)"),
}


def register(shared, gr) -> None:
    """Add the options to the settings page (call from ``on_ui_settings``)."""
    OptionInfo = shared.OptionInfo
    opts = shared.opts

    def add(key, component=None, component_args=None, onchange=None, info=None):
        default, label = OPTIONS[key]
        option = OptionInfo(default, label, component, component_args, onchange=onchange, section=SECTION)
        if info and hasattr(option, "info"):
            option = option.info(info)
        opts.add_option(key, option)

    add("nplora_device", gr.Radio, {"choices": list(DEVICES)},
        info="auto = the WebUI's device (the GPU when there is one)")
    add("nplora_cache_mb", gr.Slider, {"minimum": 0, "maximum": 16384, "step": 64},
        onchange=lambda: apply(read(shared.opts)))
    add("nplora_default_mu", gr.Slider, {"minimum": 0.0, "maximum": 10.0, "step": 0.05})
    add("nplora_default_k", gr.Number, {"precision": 0})
    add("nplora_project_te")


def _get(opts, key: str):
    default = OPTIONS[key][0]
    try:
        value = getattr(opts, key)
    except AttributeError:
        data = getattr(opts, "data", None) or {}
        value = data.get(key, default)
    return default if value is None else value


def read(opts) -> Settings:
    """The current settings; anything unreadable falls back to its default."""
    if opts is None:
        return DEFAULTS
    device = str(_get(opts, "nplora_device")).strip()[:100]
    device = next((d for d in DEVICES if d.lower() == device.lower()), device)  # checked when used
    try:
        cache_mb = min(max(int(float(_get(opts, "nplora_cache_mb"))), 0), MAX_CACHE_MB)
    except (TypeError, ValueError):
        cache_mb = DEFAULTS.cache_mb
    try:
        mu = float(_get(opts, "nplora_default_mu"))
    except (TypeError, ValueError):
        mu = DEFAULTS.default_mu
    try:
        k = max(int(float(_get(opts, "nplora_default_k"))), 0)
    except (TypeError, ValueError):
        k = DEFAULTS.default_k
    return Settings(device or "auto", cache_mb, mu, k,
                    bool(_get(opts, "nplora_project_te")))


def apply(settings: Settings, caches=shared_caches) -> None:
    """Put the cache size into effect."""
    caches.set_max_bytes(settings.cache_mb << 20)


def fusion_device(settings: Settings, host_device) -> torch.device:
    """Where fusion runs: "CPU", or the host's device for "auto"/"GPU" (the CPU when the host has
    no device fusion can run on); any other value as ``devices.resolve_device`` reads it.

    Raises:
        ParameterError: a device value NP-LoRA cannot compute on (``meta``, ``xla``, a GPU this
            machine does not have).
    """
    if settings.device == "CPU":
        return torch.device("cpu")
    if settings.device in ("auto", "GPU"):
        return devices.host_device(host_device) or torch.device("cpu")
    return devices.resolve_device(settings.device)


def fusion_dtype(device: torch.device) -> torch.dtype:
    """float16 factors on an accelerator, float32 on the CPU (fast there and exact enough)."""
    return torch.float32 if torch.device(device).type == "cpu" else torch.float16
