"""What the tab, the REST API and the generation hook need from their surroundings.

The WebUI entry script builds one ``HostContext`` over the host's LoRA list and loaded model;
standalone mode (``python -m lib_nplora serve``) builds one over a folder. Everything
host-specific stays behind these callables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..params import FuseParams
from .guard import AccessRules
from .index import LoraIndex
from .service import FusionService


@dataclass
class HostContext:
    """The surroundings of the NP-LoRA UI and API.

    Attributes:
        host: "a1111", "forge", "forge_ldm" or "standalone".
        index: returns the current LoRA index (the host's list, or a folder).
        service: fusion, analysis and saving through the shared caches.
        model_arch: architecture of the loaded checkpoint ("sd1", "sdxl", ...) to filter LoRA
            lists by; None when unknown or in standalone mode (list everything).
        device: where fusion math runs (from the settings: auto / GPU / CPU).
        defaults: the default parameters (from the settings: mu, k, scope).
        access: who may make the REST routes and the tab's actions act (the host's ``--api-auth``
            and ``--cors-allow-origins``; the standalone server's Host names); see ``guard``.
    """

    host: str
    index: Callable[[], LoraIndex]
    service: FusionService = field(default_factory=FusionService)
    model_arch: Callable[[], str | None] = lambda: None
    device: Callable[[], torch.device | None] = lambda: None
    defaults: Callable[[], FuseParams] = FuseParams
    access: Callable[[], AccessRules] = AccessRules
