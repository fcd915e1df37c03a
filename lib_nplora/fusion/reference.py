"""The readable one-module NP-LoRA fusion: the same math as ``merge.fuse`` without batching.

It is the reference the batched path is tested against; read it first.
"""

from __future__ import annotations

import torch

from .linalg import numerical_rank


def style_basis(up_s: torch.Tensor, down_s: torch.Tensor, k: int | None = None,
                energy: float | None = None) -> torch.Tensor:
    """Top-k right singular vectors of up_s (m, r) @ down_s (r, n), from the factors.

    Returns:
        V (n, k) with orthonormal columns spanning the update's principal input directions.
    """
    up_s, down_s = up_s.float(), down_s.float()
    q_b, r_b = torch.linalg.qr(up_s)                      # up_s = Q_b R_b
    q_a, r_a = torch.linalg.qr(down_s.T)                  # down_s^T = Q_a R_a
    _, s, vh = torch.linalg.svd((r_b.double() @ r_a.double().T), full_matrices=False)
    keep = _kept(s, numerical_rank(s, up_s.shape[0], down_s.shape[1]), k, energy)
    return q_a @ vh[:keep].T.float()                      # (n, keep)


def _kept(s: torch.Tensor, rank: int, k: int | None, energy: float | None) -> int:
    """How many of the descending singular values ``s`` the k / energy rule keeps (<= rank)."""
    if k is not None:
        return min(k, rank)
    if energy is not None:
        e = s[:rank].double() ** 2
        share = torch.cumsum(e, 0) / e.sum()
        return min(int((share < energy - 1e-12).sum()) + 1, rank)
    return rank


def fuse_module(up_s, down_s, scale_s, up_c, down_c, scale_c, c: float,
                k: int | None = None, energy: float | None = None):
    """dW = scale_s up_s down_s + scale_c up_c down_c (I - c V V^T), as factors.

    Args:
        up_s (m, r_s), down_s (r_s, n), up_c (m, r_c), down_c (r_c, n): the two updates.
        scale_s, scale_c: user weight times alpha / rank of each.
        c: suppression strength in [0, 1] (0 = direct merge, 1 = hard projection).

    Returns:
        up (m, r_s + r_c), down (r_s + r_c, n), float32, with up @ down = dW.
    """
    down_c = down_c.float()
    if c > 0:
        v = style_basis(up_s, down_s, k, energy)
        down_c = down_c - c * (down_c @ v) @ v.T          # the only change to the content
    up = torch.cat([scale_s * up_s.float(), scale_c * up_c.float()], dim=1)
    down = torch.cat([down_s.float(), down_c], dim=0)
    return up, down


def _top_right(dw: torch.Tensor, k: int | None, energy: float | None) -> torch.Tensor:
    """Top-k right singular vectors (n, keep) of a dense float64 matrix (k / energy as ``style_basis``)."""
    _, s, vh = torch.linalg.svd(dw, full_matrices=False)
    return vh[:_kept(s, numerical_rank(s.float(), dw.shape[0], dw.shape[1]), k, energy)].T


def fuse_dense(styles, contents, c: float, k: int | None = None, energy: float | None = None,
               chain: bool = False) -> torch.Tensor:
    """The several-input formula on dense float64 matrices: the tests' reference for ``fuse_set``.

    Args:
        styles, contents: (up (m, r), down (r, n), scale) per input holding the module, in order;
            scale = effective weight * alpha / rank.
        c: suppression strength of the module's block group (0 = not projected).
        chain: project content i also off the top-k input directions of contents 0..i-1.

    Returns:
        (m, n) float64: dW_S + sum_i scale_i dW_Ci (I - c P_i), dW_S = sum_j scale_j dW_Sj, P_i
        the orthogonal projector onto span(V_k(dW_S), W_1, ..., W_{i-1}).
    """
    dense = [(s * (u.double() @ d.double())) for u, d, s in styles]
    total = sum(dense) if dense else 0
    vs = _top_right(sum(dense), k, energy) if dense and c > 0 else None
    earlier: list[torch.Tensor] = []
    for u, d, s in contents:
        dwc = u.double() @ d.double()
        basis = ([vs] if vs is not None else []) + (earlier if chain else [])
        if c > 0 and basis:
            q, sv, _ = torch.linalg.svd(torch.cat(basis, dim=1), full_matrices=False)
            q = q[:, sv > 1e-6]
            dwc = dwc - c * (dwc @ q) @ q.T
        if chain and c > 0:
            earlier.append(_top_right(u.double() @ d.double(), k, energy))
        total = total + s * dwc
    return total
