"""NP-LoRA's one per-process object inside a WebUI: the host adapter, the fusion service and the
settings, seen by the tab, the REST API and the generation hook as their ``HostContext``.

State lives here, per process (``runtime()``), and on each job's processing object
(``hooks.Job``); never on Script instances (one per tab, recreated on "Reload UI").
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable

import torch

from ..app.context import HostContext
from ..app.guard import AccessRules
from ..app.index import LoraEntry, LoraIndex
from ..app.service import FusionService
from ..arch import ARCH_LABELS, ARCH_NAMES
from ..errors import ArchitectureError, NpLoraError
from ..params import FuseParams
from . import host_auth, settings as settings_mod
from .hosts import HostAdapter, HostError
from .report import LOG_PREFIX

TITLE = "NP-LoRA"


def _label(arch: str | None) -> str:
    return ARCH_LABELS.get(arch, arch or "an unknown model")


def check_fits(entry: LoraEntry, role: str, arch: str | None) -> None:
    """Raise a clear error when a LoRA was not made for the loaded model's architecture."""
    if arch is None or entry.arch is None or entry.fits(arch):
        return
    raise ArchitectureError(
        f"the {role} LoRA {entry.name!r} is for {_label(entry.arch)}, but the loaded model is {_label(arch)}",
        hint="Pick LoRAs made for the loaded checkpoint, or load a matching checkpoint")


def _webui_attr(module: str, attr: str):
    return getattr(importlib.import_module(module), attr)


class Runtime(HostContext):
    """NP-LoRA's per-process state inside a WebUI, and the ``HostContext`` of its tab and API.

    Args:
        adapter: a host adapter (default: ``adapter_factory()`` or ``hosts.create()`` on first use).
        service: the fusion service (default: over the process-wide caches).
        opts: returns the WebUI's ``shared.opts`` (None: defaults only).
        host_device: returns the WebUI's compute device (``modules.devices.device``).
        printer: console output.
    """

    def __init__(self, adapter: HostAdapter | None = None, adapter_factory: Callable[[], HostAdapter] | None = None,
                 service: FusionService | None = None, opts: Callable[[], object] | None = None,
                 host_device: Callable[[], object] | None = None, printer: Callable[[str], None] = print):
        super().__init__("unknown", service=service)
        self._adapter = adapter
        self._adapter_error: NpLoraError | None = None
        self._factory = adapter_factory
        self._opts = opts or (lambda: _webui_attr("modules.shared", "opts"))
        self._host_device = host_device or (lambda: _webui_attr("modules.devices", "device"))
        self.print = printer
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the host adapter
    @property
    def adapter(self) -> HostAdapter | None:
        """The host adapter, created on first use; None (and the reason printed once) when this
        WebUI cannot take a fused LoRA."""
        if self._adapter is None and self._adapter_error is None:
            with self._lock:
                if self._adapter is None and self._adapter_error is None:
                    try:
                        from . import hosts

                        self._adapter = (self._factory or hosts.create)()
                    except NpLoraError as e:
                        self._adapter_error = e
                        self.print(f"{LOG_PREFIX} {e}")
        return self._adapter

    @property
    def adapter_error(self) -> NpLoraError | None:
        """Why there is no adapter (None while there is one, or before the first use)."""
        return self._adapter_error

    def require_adapter(self) -> HostAdapter:
        adapter = self.adapter
        if adapter is None:
            raise self._adapter_error or HostError("no host adapter")
        return adapter

    def forget_model(self, sd_model=None) -> None:
        """``on_model_loaded``: drop host objects referencing the old model (fused results are
        model-independent and stay cached)."""
        adapter = self.adapter
        if adapter is not None:
            adapter.forget_model()

    # ------------------------------------------------------------------ settings
    def settings(self) -> settings_mod.Settings:
        try:
            return settings_mod.read(self._opts())
        except Exception:
            return settings_mod.DEFAULTS

    # ------------------------------------------------------------------ HostContext
    @property
    def host(self) -> str:
        adapter = self.adapter
        return adapter.name if adapter is not None else "unknown"

    def index(self) -> LoraIndex:
        return self.require_adapter().index()

    def archs(self) -> tuple[str, ...] | None:
        """The architectures the host runs (``HostAdapter.runs``); None without an adapter."""
        adapter = self.adapter
        if not isinstance(adapter, HostAdapter):
            return None
        return tuple(a for a in ARCH_NAMES if adapter.runs(a))

    def model_arch(self) -> str | None:
        adapter = self.adapter
        return adapter.model_arch() if adapter is not None else None

    def device(self) -> torch.device:
        try:
            host = self._host_device()
        except Exception:
            host = None
        return settings_mod.fusion_device(self.settings(), host)

    def access(self) -> AccessRules:
        """The host's access rules (``--api-auth``, ``--cors-allow-origins``) for the REST routes and the tab."""
        return host_auth.current().access()

    def defaults(self) -> FuseParams:
        return self.settings().defaults()

    def context(self) -> HostContext:
        """The tab's and the REST API's HostContext: this runtime itself."""
        return self

    # ------------------------------------------------------------------ the LoRA list
    def lora_names(self) -> list[str]:
        """Names for the accordion's and the X/Y/Z axes' lists: the LoRAs fitting the loaded model."""
        adapter = self.adapter
        if adapter is None:
            return []
        try:
            return adapter.index().names(adapter.model_arch())
        except Exception as e:  # a broken host list must not break the UI
            self.print(f"{LOG_PREFIX} could not list LoRAs: {e}")
            return []

    def refresh(self) -> None:
        adapter = self.adapter
        if adapter is not None:
            adapter.index().refresh()

    def check_lora(self, name: str, role: str) -> LoraEntry:
        """Resolve a name for the X/Y/Z axes' check: exists and fits the loaded model."""
        entry = self.index().resolve(name, f"{role} LoRA")
        check_fits(entry, role, self.model_arch())
        return entry


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    """The process-wide Runtime (created on first use)."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = Runtime()
    return _runtime
