"""The result of a fusion: a LoRA in canonical form with all scaling baked into the factors.

Every module is ``dW = up @ down`` (alpha = rank, scale 1), so writers and WebUI hosts apply
it as an ordinary LoRA at strength 1.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch

from .lora import LoraModule, LoraSet
from .params import FuseParams


@dataclass
class FusedModule:
    """One fused module.

    Attributes:
        name: canonical module name.
        up: (out, R) with R = r_style + r_content (or one side's rank).
        down: (R, in * kh * kw).
        bias: optional extra bias (out,).
        origin: "fused" (both inputs), "content" or "style" (one input only).
        k: style directions removed from the content (0 when not projected).
        c: suppression strength used for this module (0 when not projected).
    """

    name: str
    up: torch.Tensor
    down: torch.Tensor
    bias: torch.Tensor | None = None
    origin: str = "fused"
    k: int = 0
    c: float = 0.0

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def dense(self) -> torch.Tensor:
        """(out, in*kh*kw) float32 dense delta; for tests."""
        return self.up.float() @ self.down.float()

    def nbytes(self) -> int:
        n = self.up.numel() * self.up.element_size() + self.down.numel() * self.down.element_size()
        return n + (self.bias.numel() * self.bias.element_size() if self.bias is not None else 0)


@dataclass(frozen=True)
class InputInfo:
    """What the metadata and the WebUI's infotext say about one input file."""

    name: str
    path: str
    sha256: str
    format: str
    arch: str
    weight: float

    @classmethod
    def of(cls, lora: LoraSet, weight: float) -> "InputInfo":
        return cls(lora.name, lora.path, lora.sha256, lora.format, lora.arch, weight)

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]


@dataclass
class FusedLora:
    """A fused LoRA, ready to write (``formats.writer``) or to patch into a WebUI.

    Attributes:
        arch: base architecture.
        params: the fusion parameters.
        contents, styles: the inputs, in order, each with its effective weight (its own times
            ``params.content_weight`` / ``style_weight``). ``content`` / ``style`` are the first.
        modules: canonical name -> FusedModule (low-rank results).
        passthrough: canonical name -> LoraModule carried over unchanged (weight applied where
            its type allows), e.g. DoRA, OFT, IA3, norm modules.
        extras: tensors carried over unchanged (bundled embeddings).
        warnings: what the user should know (lossy conversions, passthrough modules, ...).
    """

    arch: str
    params: FuseParams
    contents: tuple[InputInfo, ...]
    styles: tuple[InputInfo, ...]
    modules: dict[str, FusedModule] = field(default_factory=dict)
    passthrough: dict[str, LoraModule] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def content(self) -> InputInfo:
        return self.contents[0]

    @property
    def style(self) -> InputInfo:
        return self.styles[0]

    @property
    def inputs(self) -> tuple[InputInfo, ...]:
        """Every input: the contents, then the styles."""
        return self.contents + self.styles

    @property
    def digest(self) -> str:
        """Identifies this fusion: inputs' hashes and weights, parameters and library version (hex, 16)."""
        from . import __version__

        key = json.dumps({"c": [(i.sha256, i.weight) for i in self.contents],
                          "s": [(i.sha256, i.weight) for i in self.styles], "arch": self.arch,
                          "p": self.params.to_dict(), "v": __version__}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def nbytes(self) -> int:
        return sum(m.nbytes() for m in self.modules.values()) + sum(
            m.nbytes() for m in self.passthrough.values())

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {"fused": 0, "content": 0, "style": 0, "projected": 0}
        for m in self.modules.values():
            out[m.origin] += 1
            out["projected"] += m.c > 0
        out["passthrough"] = len(self.passthrough)
        return out
