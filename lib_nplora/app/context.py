"""What the tab, the REST API and the generation hook need from their surroundings.

A host either builds a ``HostContext`` from callables (standalone mode, ``python -m lib_nplora
serve``, over a folder; tests) or *is* one: the WebUI's ``webui.runtime.Runtime`` subclasses it and
answers from the host's LoRA list, loaded model and settings. Everything host-specific stays
behind these methods.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..params import FuseParams
from .guard import AccessRules
from .index import LoraIndex
from .service import FusionService


class HostContext:
    """The surroundings of the NP-LoRA UI and API.

    Args:
        host: "a1111", "forge", "forge_neo", "forge_ldm" or "standalone" (see ``host``).
        index: returns the current LoRA index (the host's list, or a folder).
        service: fusion, analysis and saving through the shared caches (default: a new one over
            the process-wide caches).
        model_arch: returns the loaded checkpoint's architecture (default: None, unknown).
        device: returns where fusion math runs (default: None, the CPU).
        defaults: returns the default parameters (default: the library's).
        access: returns who may make the REST routes and the tab's actions act (the host's
            ``--api-auth`` and ``--cors-allow-origins``; the standalone server's Host names);
            see ``guard`` (default: same-origin only, no credentials).
    """

    def __init__(self, host: str, index: Callable[[], LoraIndex] | None = None,
                 service: FusionService | None = None, model_arch: Callable[[], str | None] | None = None,
                 device: Callable[[], torch.device | None] | None = None,
                 defaults: Callable[[], FuseParams] | None = None,
                 access: Callable[[], AccessRules] | None = None):
        self._host = host
        self._index = index
        self.service = service or FusionService()
        self._model_arch = model_arch
        self._device = device
        self._defaults = defaults
        self._access = access

    @property
    def host(self) -> str:
        """Which host this is: "a1111", "forge", "forge_neo", "forge_ldm" or "standalone"."""
        return self._host

    def index(self) -> LoraIndex:
        """The current LoRA index; names resolve only through it."""
        if self._index is None:
            raise NotImplementedError("this HostContext has no LoRA index")
        return self._index()

    def archs(self) -> tuple[str, ...] | None:
        """The architectures the host runs (the tab's per-block sliders); None: any (standalone)."""
        return None

    def model_arch(self) -> str | None:
        """Architecture of the loaded checkpoint ("sd1", "sdxl", ...) to filter LoRA lists by;
        None when unknown or in standalone mode (list everything)."""
        return self._model_arch() if self._model_arch is not None else None

    def device(self) -> torch.device | None:
        """Where fusion math runs (from the settings: auto / GPU / CPU); None: the CPU."""
        return self._device() if self._device is not None else None

    def defaults(self) -> FuseParams:
        """The default parameters (from the settings: mu, k, scope)."""
        return self._defaults() if self._defaults is not None else FuseParams()

    def access(self) -> AccessRules:
        """Who may make the REST routes and the tab's actions act (see ``guard.AccessRules``)."""
        return self._access() if self._access is not None else AccessRules()
