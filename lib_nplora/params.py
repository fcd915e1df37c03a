"""Fusion parameters: one typed, validated object shared by the CLI, the WebUI tab, the prompt
tag, X/Y/Z axes, the REST API and the saved file's metadata.

Formula (per module, right multiplication on the input space)::

    dW = ws * dW_s + wc * dW_c (I - c * V_k V_k^T),   c = mu / (1 + mu)

``method="direct"`` is the paper's baseline (c = 0); ``hard=True`` is NP-LoRA-H (c = 1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Literal

from .errors import ParameterError

Method = Literal["nplora", "direct"]
Scope = Literal["unet", "all"]

DEFAULT_MU = 0.5  # the paper's default (c = 1/3)
MAX_MU = 1e6
MAX_WEIGHT = 100.0
MAX_K = 4096

K_FULL = "full"
K_CHOICES = (K_FULL, "1", "2", "4", "8", "16", "32", "64", "128")
MU_MAX = 10.0
WEIGHT_RANGE = (-2.0, 2.0)


def parse_k(value) -> int | None:
    """The k selector's value: "full" / "" / 0 / None -> None (full rank), else a whole number.

    Raises:
        ParameterError: anything else (names the value).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ParameterError(f"k must be 'full' or a whole number, got {value!r}")
    if isinstance(value, (int, float)):
        if value != value or (isinstance(value, float) and not value.is_integer()):
            raise ParameterError(f"k must be 'full' or a whole number, got {value!r}")
        return int(value) or None
    text = str(value).strip().lower()
    if text in ("", K_FULL, "0"):
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise ParameterError(f"k must be 'full' or a whole number, got {str(value)[:40]!r}")
    return int(text)


def _finite(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number, got {value!r}")
    return value


@dataclass(frozen=True)
class FuseParams:
    """How to fuse a content and a style LoRA.

    Attributes:
        mu: soft-projection strength, mu >= 0; c = mu / (1 + mu). 0 = direct merge.
        hard: hard projection (c = 1, NP-LoRA-H); overrides mu.
        method: "nplora" (project) or "direct" (plain weighted sum, c = 0).
        k: number of style directions removed per module; None = the style update's full
            numerical rank (the paper's setting). Capped per module at that rank.
        energy: beyond the paper: keep the smallest k whose singular values hold this
            fraction of the style update's energy (sum of sigma^2); None = off.
        content_weight, style_weight: user multipliers (wc, ws), applied on top of alpha/rank.
        scope: "unet" projects only the denoiser's modules (text encoders added without
            projection); "all" projects text-encoder modules too.
    """

    mu: float = DEFAULT_MU
    hard: bool = False
    method: Method = "nplora"
    k: int | None = None
    energy: float | None = None
    content_weight: float = 1.0
    style_weight: float = 1.0
    scope: Scope = "unet"

    def __post_init__(self):
        mu = _finite("mu", self.mu)
        if mu < 0 or mu > MAX_MU:
            raise ParameterError(f"mu must be between 0 and {MAX_MU:g}, got {mu:g}",
                                 hint="Use hard projection for the limit mu = infinity")
        object.__setattr__(self, "mu", mu)
        if self.method not in ("nplora", "direct"):
            raise ParameterError(f"method must be 'nplora' or 'direct', got {self.method!r}")
        if self.scope not in ("unet", "all"):
            raise ParameterError(f"scope must be 'unet' or 'all', got {self.scope!r}")
        if not isinstance(self.hard, bool):
            raise ParameterError(f"hard must be true or false, got {self.hard!r}")
        if self.k is not None:
            if isinstance(self.k, bool) or not isinstance(self.k, int) and not (
                    isinstance(self.k, float) and self.k.is_integer()):
                raise ParameterError(f"k must be a whole number, got {self.k!r}")
            k = int(self.k)
            if k < 1 or k > MAX_K:
                raise ParameterError(f"k must be between 1 and {MAX_K}, got {k}",
                                     hint="Leave k empty for the style LoRA's full rank")
            object.__setattr__(self, "k", k)
        if self.energy is not None:
            energy = _finite("energy", self.energy)
            if not 0.0 < energy <= 1.0:
                raise ParameterError(f"energy must be in (0, 1], got {energy:g}")
            object.__setattr__(self, "energy", energy)
        if self.k is not None and self.energy is not None:
            raise ParameterError("give either k or energy, not both")
        for name in ("content_weight", "style_weight"):
            w = _finite(name, getattr(self, name))
            if abs(w) > MAX_WEIGHT:
                raise ParameterError(f"{name} must be between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}, got {w:g}")
            object.__setattr__(self, name, w)

    @property
    def c(self) -> float:
        """Suppression strength c in [0, 1] applied to the content inside the style subspace."""
        if self.method == "direct":
            return 0.0
        if self.hard:
            return 1.0
        return self.mu / (1.0 + self.mu)

    @property
    def k_policy(self) -> str:
        if self.energy is not None:
            return f"energy {self.energy:g} (beyond the paper)"
        if self.k is not None:
            return f"explicit k={self.k} (beyond the paper)"
        return "full numerical rank (paper)"

    def with_(self, **changes) -> "FuseParams":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["c"] = self.c
        return d
