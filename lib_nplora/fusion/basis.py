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
from .batching import batches, module_batches, stack


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


def compute_joint_bases(styles: list[tuple[LoraSet, float]], names: Iterable[str], k: int | None = None,
                        energy: float | None = None, device=None) -> dict[str, ModuleBasis]:
    """Bases of the joint style update dW_S = sum_j w_j dW_j of several style LoRAs, per module.

    Exact from the stacked factors, never dense: dW_S = [w_1 s_1 B_1, ..., w_m s_m B_m] @
    [A_1; ...; A_m] with B (out, r_j), A (r_j, in), s_j = alpha_j / r_j, so ``linalg.style_basis``
    of the stacked (out, sum r_j) and (sum r_j, in) factors (one thin QR each, an r x r core
    decomposition) gives its right singular vectors. A module only some styles hold is the sum
    of those.

    Args:
        styles: (style LoRA, weight) pairs, weights non-zero (a common factor does not change
            the result: only their ratios matter).
        names: canonical module names low-rank in at least one of them.
        k, energy: see ``linalg.select_k``.

    Returns:
        name -> ModuleBasis of dW_S, on ``device``.
    """
    def members(n):
        return tuple(j for j, (lora, _) in enumerate(styles)
                     if n in lora.modules and lora.modules[n].is_lowrank)

    def key(n):
        ms = members(n)
        f = styles[ms[0]][0].modules[n].factors
        return (f.out_features, f.in_features) + tuple((j, styles[j][0].modules[n].factors.rank) for j in ms)

    def nbytes(n):
        kk = key(n)
        return _svd_bytes(kk[0], kk[1], sum(r for _, r in kk[2:]))

    out: dict[str, ModuleBasis] = {}
    for shape, chunk in batches(names, key, nbytes):
        ups, downs = [], []
        for j, _ in shape[2:]:
            lora, w = styles[j]
            mods = lora.modules
            scale = torch.tensor([w * mods[n].factors.scale for n in chunk], device=device)
            ups.append(stack([mods[n].factors.up for n in chunk], device) * scale[:, None, None])
            downs.append(stack([mods[n].factors.down for n in chunk], device))
        v, s, rank, kept = linalg.style_basis(torch.cat(ups, dim=2), torch.cat(downs, dim=1), k, energy)
        rank_l, kept_l = rank.tolist(), kept.tolist()
        for i, n in enumerate(chunk):
            out[n] = ModuleBasis(v[i], s[i], rank_l[i], kept_l[i])
    return out
