"""In-memory LoRA data in canonical form: what the readers produce and the fusion consumes.

Every low-rank module is held as flattened 2-D factors, so that convolutions and linears share
one code path::

    dW (out, in*kh*kw) = scale * up (out, r) @ down (r, in*kh*kw)

Tensors keep the file's dtype until the fusion upcasts them to float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

#: Module types that are carried through unchanged (they are not additive low-rank updates).
PASSTHROUGH_TYPES = ("dora", "oft", "ia3", "glora", "norm", "diff_b")
#: Passthrough types whose effect is linear in their tensors, so a user weight can be applied.
WEIGHTABLE_PASSTHROUGH = {"ia3": ("weight",), "glora": ("a1.weight", "b1.weight"),
                          "norm": ("w_norm", "b_norm"), "diff_b": ("diff_b",)}


@dataclass
class LowRank:
    """A low-rank update dW = scale * up @ down (+ an optional extra bias).

    Attributes:
        up: (out, r).
        down: (r, in * kh * kw).
        scale: alpha / r of the source (1.0 when the file has no alpha).
        bias: optional extra bias (out,) some LyCORIS files carry; added, never projected.
    """

    up: torch.Tensor
    down: torch.Tensor
    scale: float = 1.0
    bias: torch.Tensor | None = None
    _norms: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def up_norms(self) -> torch.Tensor:
        """(r,) float32 norms of the up factor's columns, computed once (the factors are not
        changed after reading: a fusion with a new mu reuses them)."""
        if "up" not in self._norms:
            self._norms["up"] = torch.linalg.vector_norm(self.up, dim=0, dtype=torch.float32)
        return self._norms["up"]

    def down_norms(self) -> torch.Tensor:
        """(r,) float32 norms of the down factor's rows, computed once."""
        if "down" not in self._norms:
            self._norms["down"] = torch.linalg.vector_norm(self.down, dim=1, dtype=torch.float32)
        return self._norms["down"]

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def out_features(self) -> int:
        return self.up.shape[0]

    @property
    def in_features(self) -> int:
        return self.down.shape[1]

    def dense(self) -> torch.Tensor:
        """(out, in*kh*kw) float32 dense delta. For tests and small checks only."""
        return self.scale * (self.up.float() @ self.down.float())

    def rows(self, start: int, stop: int) -> "LowRank":
        """The update restricted to output rows [start, stop) (exact: the down is shared)."""
        bias = self.bias[start:stop] if self.bias is not None else None
        return LowRank(self.up[start:stop], self.down, self.scale, bias)

    def nbytes(self) -> int:
        n = self.up.numel() * self.up.element_size() + self.down.numel() * self.down.element_size()
        return n + (self.bias.numel() * self.bias.element_size() if self.bias is not None else 0)


@dataclass
class LoraModule:
    """One module of a LoRA file, under its canonical name.

    Attributes:
        name: canonical module name (see ``lib_nplora.arch``).
        kind: source type: "lora", "locon", "tucker", "loha", "lokr", "full" (low-rank after
            conversion) or one of PASSTHROUGH_TYPES.
        factors: the low-rank update, for the low-rank kinds; None for passthrough kinds.
        tensors: for passthrough kinds, the original tensors by suffix (``"oft_blocks"``,
            ``"alpha"``, ...), written back unchanged.
        source_keys: the module key(s) in the source file, for messages.
        note: what a conversion did (e.g. "LoHa rank 8 -> exact rank 64"), if anything.
        lossy: the conversion truncated the update (a warning was recorded).
    """

    name: str
    kind: str
    factors: LowRank | None = None
    tensors: dict[str, torch.Tensor] | None = None
    source_keys: tuple[str, ...] = ()
    note: str | None = None
    lossy: bool = False

    @property
    def is_lowrank(self) -> bool:
        return self.factors is not None

    def nbytes(self) -> int:
        if self.factors is not None:
            return self.factors.nbytes()
        return sum(t.numel() * t.element_size() for t in (self.tensors or {}).values())


@dataclass
class LoraSet:
    """A LoRA file read into canonical form.

    Attributes:
        path: the file read.
        name: file stem (what the WebUIs call it).
        arch: architecture name ("sd1", "sd2", "sdxl", "flux").
        arch_candidates: every architecture the file fits (a text-encoder-only CLIP-L LoRA
            fits SDXL and FLUX); ``arch`` is the preferred one.
        format: source naming family ("kohya", "diffusers", "peft", "xlabs", "mixed", ...).
        metadata: the safetensors header metadata (strings).
        modules: canonical name -> LoraModule.
        extras: tensors carried unchanged (``bundle_emb.*`` textual-inversion embeddings).
        sha256: SHA-256 of the tensor data after the header (the hash A1111 and kohya use).
        warnings: what the reader noticed (lossy conversions, passthrough modules, ...).
    """

    path: str
    name: str
    arch: str
    arch_candidates: tuple[str, ...]
    format: str
    metadata: dict[str, str]
    modules: dict[str, LoraModule]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    sha256: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def short_hash(self) -> str:
        """First 12 hex digits of ``sha256``, as A1111 shows LoRA hashes."""
        return self.sha256[:12]

    def nbytes(self) -> int:
        return sum(m.nbytes() for m in self.modules.values()) + sum(
            t.numel() * t.element_size() for t in self.extras.values())

    def ranks(self) -> dict[str, int]:
        return {n: m.factors.rank for n, m in self.modules.items() if m.factors is not None}

    def kinds(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for m in self.modules.values():
            counts[m.kind] = counts.get(m.kind, 0) + 1
        return counts
