"""Exact SVD of a low-rank product up @ down from its factors, batched.

For dW = B A with B (m, r), A (r, n), never forming the m x n matrix::

    B = Q_b R_b,  A^T = Q_a R_a            (thin QR, O((m + n) r^2))
    C = R_b R_a^T = U_c S V_c^T            (SVD of an r x r core)
    dW = (Q_b U_c) S (Q_a V_c)^T           (an exact thin SVD)

The right singular vectors V = Q_a V_c (n, r) span the update's input (row) space. All
functions take a leading batch dimension G: modules of equal shape are stacked and processed
by one call each, which is what makes fusing hundreds of modules cheap on a CPU and a GPU.
QR runs in float32; the tiny r x r core is decomposed in float64 for accuracy.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def float32_math():
    """Turn off any autocast the caller runs under (A1111's FP8 mode samples under CPU autocast
    to bfloat16; a UI under CUDA autocast): NP-LoRA's math stays float32, and fp16 inputs stay
    legal (CPU autocast rejects them in some ops)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        yield

EPS32 = torch.finfo(torch.float32).eps


def numerical_rank(s: torch.Tensor, m: int, n: int) -> int:
    """Number of singular values above max(m, n) * eps(float32) * s_max (s sorted, descending)."""
    if s.numel() == 0 or float(s[0]) <= 0.0:
        return 0
    return int((s > max(m, n) * EPS32 * s[0]).sum())


def batched_numerical_rank(s: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """(G, k) descending singular values -> (G,) numerical ranks (see ``numerical_rank``)."""
    tol = max(m, n) * EPS32 * s[:, :1]
    return ((s > tol) & (s > 0)).sum(dim=1)


def core_svd(up: torch.Tensor, down: torch.Tensor, want_left: bool = True):
    """Batched exact SVD of up @ down from the factors.

    Args:
        up: (G, m, r) float32.
        down: (G, r, n) float32.
        want_left: also return q_b; without it only R of up's QR is formed (half the work).

    Returns:
        q_b (G, m, kb) or None, u (G, kb, kk), s (G, kk) descending, q_a (G, n, ka),
        vh (G, kk, ka), with up @ down = q_b @ u @ diag(s) @ vh @ q_a^T and kk = min(kb, ka) <= r.
    """
    q_b, r_b = torch.linalg.qr(up, mode="reduced" if want_left else "r")   # (G, m, kb), (G, kb, r)
    q_a, r_a = torch.linalg.qr(down.mT)               # (G, n, ka), (G, ka, r)
    core = (r_b.double() @ r_a.double().mT)           # (G, kb, ka)
    if want_left:
        u, s, vh = torch.linalg.svd(core, full_matrices=False)
        return q_b, u.to(up.dtype), s.to(up.dtype), q_a, vh.to(up.dtype)
    # right side only: eigenvectors of C^T C (float64, so sigma keeps ~8 digits down to
    # 1e-8 * sigma_max, far below the float32 rank tolerance); about twice as fast as svd
    kk = min(core.shape[1], core.shape[2])
    lam, w = torch.linalg.eigh(core.mT @ core)        # ascending, (G, ka), (G, ka, ka)
    lam, w = lam.flip(-1)[:, :kk], w.flip(-1)[:, :, :kk]
    s = lam.clamp_min(0).sqrt()
    return None, None, s.to(up.dtype), q_a, w.mT.to(up.dtype)


def lowrank_svd(up: torch.Tensor, down: torch.Tensor):
    """Exact thin SVD of one up (m, r) @ down (r, n), returned as balanced factors.

    Returns:
        (up' (m, kk), down' (kk, n), s (kk,), numerical rank) with up' @ down' = up @ down,
        up' = Q_b U sqrt(S), down' = sqrt(S) V^T Q_a^T, columns sorted by singular value.
    """
    q_b, u, s, q_a, vh = core_svd(up[None], down[None])
    root = s[0].clamp_min(0).sqrt()
    left = (q_b[0] @ u[0]) * root
    right = root[:, None] * (vh[0] @ q_a[0].mT)
    return left, right, s[0], numerical_rank(s[0], up.shape[0], down.shape[1])


def select_k(s: torch.Tensor, rank: torch.Tensor, k: int | None, energy: float | None) -> torch.Tensor:
    """How many style directions each module removes.

    Args:
        s: (G, kk) singular values, descending.
        rank: (G,) numerical ranks.
        k: explicit k (capped at each module's rank), or None.
        energy: smallest k whose sigma^2 share reaches this fraction, or None.

    Returns:
        (G,) int64 k per module, 0 <= k <= rank.
    """
    if k is not None:
        return torch.clamp(rank, max=k)
    if energy is not None:
        e = s.double() ** 2
        idx = torch.arange(s.shape[1], device=s.device)
        e = torch.where(idx[None, :] < rank[:, None], e, torch.zeros_like(e))
        total = e.sum(dim=1, keepdim=True).clamp_min(1e-300)
        share = e.cumsum(dim=1) / total
        # count of prefixes strictly below the target, plus one
        kk = (share < energy - 1e-12).sum(dim=1) + 1
        return torch.minimum(kk, rank)
    return rank


def style_basis(up: torch.Tensor, down: torch.Tensor, k: int | None = None,
                energy: float | None = None):
    """Principal input directions of a batch of style updates.

    Args:
        up: (G, m, r) float32 style up factors (any scale: the basis is scale-free).
        down: (G, r, n) float32 style down factors.
        k, energy: see ``select_k``.

    Returns:
        v: (G, n, kk) orthonormal right singular vectors, columns at and beyond each module's
           k set to zero (so v @ v^T is the projector onto the top-k input subspace);
        s: (G, kk) singular values of up @ down;
        rank: (G,) numerical ranks;
        k: (G,) directions kept per module.
    """
    m, n = up.shape[1], down.shape[2]
    _, _, s, q_a, vh = core_svd(up, down, want_left=False)
    rank = batched_numerical_rank(s, m, n)
    kept = select_k(s, rank, k, energy)
    v = q_a @ vh.mT                                   # (G, n, kk)
    mask = torch.arange(s.shape[1], device=s.device)[None, :] < kept[:, None]
    return v * mask[:, None, :].to(v.dtype), s, rank, kept


def project_out(down: torch.Tensor, v: torch.Tensor, c: float, coords: torch.Tensor | None = None) -> torch.Tensor:
    """Soft null-space projection of content down factors: A (I - c V V^T).

    Args:
        down: (G, r_c, n) content down factors (float32).
        v: (G, n, kk) masked orthonormal style basis from ``style_basis``.
        c: suppression strength in [0, 1].
        coords: (G, r_c, kk) ``down @ v`` when already known (kept between fusions: a new c
            then costs one matmul); None: computed here.

    Returns:
        (G, r_c, n) projected down factors. c = 0 returns ``down`` itself.
    """
    if c == 0.0:
        return down
    return torch.baddbmm(down, coords if coords is not None else down @ v, v.mT, alpha=-c)


def span_basis(m: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the column span of a batch of stacked bases, masked.

    Args:
        m: (G, n, K) float32: columns of orthonormal bases placed side by side (zero columns
           allowed: the masked columns of ``style_basis``).

    Returns:
        (G, n, K) with orthonormal columns spanning span(m) followed by zero columns, so that
        u @ u^T is the projector onto the union of the subspaces (used by ``chain``).
    """
    q, r = torch.linalg.qr(m)                                   # (G, n, K), (G, K, K)
    u, s, _ = torch.linalg.svd(r.double(), full_matrices=False)
    rank = batched_numerical_rank(s, m.shape[1], m.shape[2])
    mask = torch.arange(s.shape[1], device=s.device)[None, :] < rank[:, None]
    return (q @ u.to(m.dtype)) * mask[:, None, :].to(m.dtype)
