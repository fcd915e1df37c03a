"""The style update's principal input subspace, per module: what NP-LoRA protects.

``compute_bases`` runs the batched factor-level SVD (``linalg.style_basis``) over all requested
modules of a LoRA, grouped by shape. The result does not depend on the style weight or on
mu, so it is computed once per (style file, k / energy) and cached (``lib_nplora.cache``); a new
mu or content weight then costs only the projection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..lora import LoraSet
from . import linalg
from .batching import module_batches, stack


@dataclass
class ModuleBasis:
    """The top-k right singular vectors of one module's update.

    Attributes:
        v: (n, kk) float32, orthonormal columns; columns >= k are zero, so v @ v.T is the
           projector onto the kept subspace.
        s: (kk,) singular values of the update (scale 1, i.e. of up @ down), descending.
        rank: numerical rank of the update.
        k: number of directions kept.
    """

    v: torch.Tensor
    s: torch.Tensor
    rank: int
    k: int

    @property
    def energy_kept(self) -> float:
        """Share of the update's sigma^2 energy inside the kept k directions."""
        e = self.s.double() ** 2
        total = float(e.sum())
        return float(e[: self.k].sum()) / total if total > 0 else 0.0

    def nbytes(self) -> int:
        return self.v.numel() * self.v.element_size() + self.s.numel() * self.s.element_size()


def _svd_bytes(out: int, inn: int, rank: int) -> int:
    """Float32 working set of one module's ``linalg.style_basis`` (QR of both factors, the small SVD)."""
    return 4 * rank * (2 * out + 3 * inn + 2 * rank)


def compute_bases(lora: LoraSet, names: Iterable[str], k: int | None = None,
                  energy: float | None = None, device=None) -> dict[str, ModuleBasis]:
    """Bases of the named low-rank modules of ``lora``.

    Args:
        lora: the (style) LoRA.
        names: canonical module names with low-rank factors.
        k, energy: how many directions to keep (see ``linalg.select_k``); None/None = full rank.
        device: where to compute and keep the bases.

    Returns:
        name -> ModuleBasis, on ``device``.
    """
    mods = lora.modules
    out: dict[str, ModuleBasis] = {}
    for _, chunk in module_batches(names, mods, _svd_bytes):
        up = stack([mods[n].factors.up for n in chunk], device)
        down = stack([mods[n].factors.down for n in chunk], device)
        v, s, rank, kept = linalg.style_basis(up, down, k, energy)
        rank_l, kept_l = rank.tolist(), kept.tolist()
        for i, n in enumerate(chunk):
            out[n] = ModuleBasis(v[i], s[i], rank_l[i], kept_l[i])
    return out
