"""Turning every additive module type into low-rank factors (up, down, scale), exactly where
that is exact, without forming the dense delta.

Conventions follow LyCORIS and the WebUI loaders (A1111 ``network_*.py``, ComfyUI):

* LoRA / LoCon: dW = up @ down * alpha / r, r = down.shape[0].
* Tucker LoCon (``lora_mid``): dW[o,i,y,x] = sum_ab up[o,a] mid[a,b,y,x] down[b,i]; folding mid
  into down gives an ordinary conv LoCon of the same rank (exact).
* LoHa: dW = (w1a @ w1b) * (w2a @ w2b) (elementwise) * alpha / r. With ``up = rowwise_kron(w1a, w2a)``
  (out, r1*r2) and ``down = colwise_kron(w1b, w2b)`` (r1*r2, in) the product is exact. The CP
  form (``hada_t1/t2``: w = einsum('ij..., ip, jr -> pr...', t, wa, wb)) is first reduced to
  the same (up, down) pair per factor.
* LoKr: dW = kron(w1, w2) * scale, each w either full or a product wa @ wb (or CP via t2).
  kron(A1 B1, A2 B2) = kron(A1, A2) @ kron(B1, B2), with a full w written as I @ w or w @ I
  (whichever inner size is smaller): exact, rank d1 * d2.
* Full / diff: a dense delta; truncated by SVD (lossy; the energy kept is reported).

Factor ranks above ``max_rank`` are reduced with the exact factor-level SVD
(``lib_nplora.fusion.linalg.lowrank_svd``), losslessly down to the numerical rank and lossily
beyond it, with a note saying how much energy was kept.

Memory bound (a LoRA file is hostile: its ranks r1, r2 are free, only out/in are fixed by the
base model's layer, which the reader checks first). Converting one module never holds more
than a few times ``(out + in) * max(max_rank * EXACT_FACTOR_MULTIPLE, file rank)`` float32
values plus ``ROW_BLOCK_ELEMENTS``:

* LoHa: the rank-(r1*r2) factors are formed only when r1*r2 <= EXACT_FACTOR_MULTIPLE *
  max_rank (4 * 256: every LoHa up to dim 32); a wider product is truncated from blocks of its
  rows (``_truncate_hadamard``: a full SVD when out*in is no larger than rank-(max_rank + 10)
  factors, else a randomized SVD with a fixed seed), never forming the r1*r2 factors;
* LoKr: factors of rank d1*d2 are formed only when d1*d2 <= max_rank; otherwise the
  truncation comes from the SVDs of the two Kronecker factors (exact, and no larger than them);
* CP/Tucker cores multiply a file tensor by at most its kernel size (kh*kw <= 9 in SD).

So reading any file takes at most about: the file's size (one buffer) + 10-20 x its header
(JSON objects) + the converted modules (the output, float32) x ~3 + a constant
(``ROW_BLOCK_ELEMENTS`` and the SVD work of one module); ``tests/security/test_hostile_files.py``
measures it on LoHa/LoKr bomb files.
"""

from __future__ import annotations

import torch

from ..errors import FormatError
from ..fusion.linalg import core_svd, lowrank_svd, numerical_rank
from ..lora import LowRank

#: Largest rank a converted module (LoHa, LoKr, full) keeps; larger ones are truncated.
MAX_CONVERTED_RANK = 256
#: LoHa factors of rank r1*r2 up to this multiple of the rank cap are formed (and reduced
#: exactly); wider ones are never formed (see ``_truncate_hadamard``).
EXACT_FACTOR_MULTIPLE = 4
#: Extra columns of the randomized SVD, and its power iterations.
OVERSAMPLE = 10
POWER_ITERATIONS = 2
#: Elements of dW formed at once when a LoHa product is truncated from its rows (4 MiB float32).
ROW_BLOCK_ELEMENTS = 1 << 20


class Conversion:
    """Result of converting one module: factors plus what happened."""

    def __init__(self, factors: LowRank, note: str | None = None, lossy: bool = False):
        self.factors = factors
        self.note = note
        self.lossy = lossy


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float32)


def _scalar(t: torch.Tensor | None) -> float | None:
    if t is None:
        return None
    if t.numel() != 1:
        raise ValueError("alpha/scale must hold one number")
    return float(t.reshape(()).item())


def _scale(t: dict, dim: int | None) -> float:
    """A1111's rule: an explicit ``scale`` wins; else alpha / dim; else 1."""
    s = _scalar(t.get("scale"))
    if s is not None:
        return s
    alpha = _scalar(t.get("alpha"))
    if alpha is not None and dim:
        return alpha / dim
    return 1.0


def _bias(t: dict) -> torch.Tensor | None:
    b = t.get("bias")
    return b.reshape(-1) if b is not None else None


def lora(t: dict) -> Conversion:
    """kohya LoRA / LoCon (linear, 1x1 or kxk conv): up (out, r[,1,1]), down (r, in[,kh,kw])."""
    up, down = t["up"], t["down"]
    r = down.shape[0]
    up2 = up.reshape(up.shape[0], -1)
    if up2.shape[1] != r:
        raise ValueError(f"up has {up2.shape[1]} columns but down has {r} rows")
    return Conversion(LowRank(up2, down.reshape(r, -1), _scale(t, r), _bias(t)))


def tucker(t: dict) -> Conversion:
    """Tucker LoCon: fold ``lora_mid`` (r, r, kh, kw) into ``lora_down`` (r, in, 1, 1)."""
    up, down, mid = t["up"], t["down"], t["mid"]
    r = down.shape[0]
    if mid.dim() != 4 or mid.shape[1] != r:
        raise ValueError(f"lora_mid must be (r, {r}, kh, kw), got {list(mid.shape)}")
    d = torch.einsum("abyx,bi->aiyx", _f32(mid), _f32(down.reshape(r, -1)))
    ra = mid.shape[0]
    return Conversion(LowRank(up.reshape(up.shape[0], -1), d.reshape(ra, -1), _scale(t, r), _bias(t)),
                      note=f"Tucker LoCon folded into a {tuple(mid.shape[2:])} conv LoCon (exact)")


def _cp_pair(core: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CP/Tucker factor w = einsum('ij..., ip, jr -> pr...', core, wa, wb) as (up, down).

    core (r, r, kh, kw), wa (r, out), wb (r, in) -> up (out, r), down (r, in*kh*kw).
    """
    down = torch.einsum("ijyx,jr->iryx", _f32(core), _f32(wb))  # (r, in, kh, kw)
    return _f32(wa).T, down.reshape(down.shape[0], -1)


def rowwise_kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(m, p), (m, q) -> (m, p*q) with out[i, p*q_idx...] = a[i, p] * b[i, q]."""
    return (a[:, :, None] * b[:, None, :]).reshape(a.shape[0], -1)


def colwise_kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(p, n), (q, n) -> (p*q, n) with out[(p, q), j] = a[p, j] * b[q, j]."""
    return (a[:, None, :] * b[None, :, :]).reshape(-1, a.shape[1])


def _check_inner(name: str, up: torch.Tensor, down: torch.Tensor) -> None:
    if up.dim() != 2 or down.dim() != 2 or up.shape[1] != down.shape[0]:
        raise ValueError(f"{name}: its a factor {list(up.shape)} and b factor {list(down.shape)} do not multiply")


def loha(t: dict, max_rank: int = MAX_CONVERTED_RANK) -> Conversion:
    """LoHa (Hadamard product of two low-rank terms), plain or CP form, at most ``max_rank``.

    dW = (u1 d1) * (u2 d2), u_i (out, r_i), d_i (r_i, in). Its rank-(r1*r2) factors
    (``rowwise_kron``/``colwise_kron``) are formed only when r1*r2 <= EXACT_FACTOR_MULTIPLE *
    max_rank (then reduced exactly, as before); wider ones go through ``_truncate_hadamard``,
    which never forms them.
    """
    r = t["hada_w1_b"].shape[0]
    if "hada_t1" in t or "hada_t2" in t:
        if not ("hada_t1" in t and "hada_t2" in t):
            raise ValueError("CP LoHa needs both hada_t1 and hada_t2")
        u1, d1 = _cp_pair(t["hada_t1"], t["hada_w1_a"], t["hada_w1_b"])
        u2, d2 = _cp_pair(t["hada_t2"], t["hada_w2_a"], t["hada_w2_b"])
    else:
        u1, d1 = _f32(t["hada_w1_a"]), _f32(t["hada_w1_b"].reshape(r, -1))
        u2, d2 = _f32(t["hada_w2_a"]), _f32(t["hada_w2_b"].reshape(t["hada_w2_b"].shape[0], -1))
    _check_inner("hada_w1", u1, d1)
    _check_inner("hada_w2", u2, d2)
    if u1.shape[0] != u2.shape[0] or d1.shape[1] != d2.shape[1]:
        raise ValueError("the two LoHa terms have different shapes")
    scale = _scale(t, r)
    r1, r2 = u1.shape[1], u2.shape[1]
    if r1 * r2 <= EXACT_FACTOR_MULTIPLE * max_rank:
        up, down = rowwise_kron(u1, u2), colwise_kron(d1, d2)
        note = f"LoHa rank {r} as exact rank-{up.shape[1]} factors"
        return limit_rank(Conversion(LowRank(up, down, scale), note), max_rank)
    up, down, note, lossy = _truncate_hadamard(u1, d1, u2, d2, max_rank)
    return Conversion(LowRank(up, down, scale), f"LoHa rank {r} (product rank {r1 * r2}) {note}", lossy)


def _hadamard_rows(u1, d1, u2, d2, lo: int, hi: int) -> torch.Tensor:
    """Rows lo:hi of (u1 d1) * (u2 d2): (hi - lo, in)."""
    return (u1[lo:hi] @ d1).mul_(u2[lo:hi] @ d2)


def _truncate_hadamard(u1, d1, u2, d2, max_rank: int):
    """Best rank-``max_rank`` factors of dW = (u1 d1) * (u2 d2) without its rank-(r1*r2) factors.

    m, n = dW's shape, k = max_rank + OVERSAMPLE. Rows of dW are formed ROW_BLOCK_ELEMENTS at
    a time (never the whole out x in matrix unless m*n <= k*(m + n), i.e. unless it is no
    larger than k-rank factors):

    * m*n <= k*(m + n): dW is formed and decomposed by a full SVD (exact truncation, as the
      factor SVD gave before);
    * otherwise a randomized SVD (Halko et al. 2011, fixed seed, POWER_ITERATIONS power
      iterations) from products of dW and dW^T with (n, k) / (m, k) blocks: memory
      O((m + n) k + ROW_BLOCK_ELEMENTS), the energy kept measured against ||dW||_F exactly.

    Returns:
        (up (m, keep), down (keep, n), note, lossy).
    """
    m, n = u1.shape[0], d1.shape[1]
    k = max_rank + OVERSAMPLE
    block = max(1, ROW_BLOCK_ELEMENTS // max(n, 1))
    if m * n <= k * (m + n):
        dense = torch.empty(m, n)
        for lo in range(0, m, block):
            dense[lo:lo + block] = _hadamard_rows(u1, d1, u2, d2, lo, lo + block)
        u, s, vh = torch.linalg.svd(dense, full_matrices=False)
        total = float((s.double() ** 2).sum())
        how = "by SVD"
    else:
        gen = torch.Generator().manual_seed(0)
        totals = []

        def mul(x):  # dW @ x: (n, k) -> (m, k)
            out = torch.empty(m, x.shape[1])
            for lo in range(0, m, block):
                out[lo:lo + block] = _hadamard_rows(u1, d1, u2, d2, lo, lo + block) @ x
            return out

        def tmul(y, measure=False):  # dW^T @ y: (m, k) -> (n, k)
            acc = torch.zeros(n, y.shape[1])
            energy = 0.0
            for lo in range(0, m, block):
                rows = _hadamard_rows(u1, d1, u2, d2, lo, lo + block)
                acc.addmm_(rows.T, y[lo:lo + block])
                if measure:
                    energy += float((rows.double() ** 2).sum())
            totals.append(energy)
            return acc

        q = torch.linalg.qr(mul(torch.randn(n, k, generator=gen))).Q
        for _ in range(POWER_ITERATIONS):
            q = torch.linalg.qr(mul(torch.linalg.qr(tmul(q)).Q)).Q
        bt = tmul(q, measure=True)                              # dW^T Q: (n, k)
        u_b, s, vh = torch.linalg.svd(bt.T, full_matrices=False)  # (k, k), (k,), (k, n)
        u = q @ u_b
        total = totals[-1]
        how = "by randomized SVD"
    rank = numerical_rank(s, m, n)
    keep = max(min(rank, max_rank), 1)
    kept = float((s[:keep].double() ** 2).sum())
    energy = kept / total if total > 0 else 1.0
    lossy = keep < rank
    root = s[:keep].clamp_min(0).sqrt()
    note = (f"reduced to rank {keep} {how} ({energy:.2%} of its energy kept)" if lossy
            else f"as its numerical rank {keep} {how} (exact)")
    return (u[:, :keep] * root).contiguous(), (root[:, None] * vh[:keep]).contiguous(), note, lossy


def _side_svd(t: dict, i: int):
    """SVD of the LoKr factor w_i: (U (p, k), s (k,), Vh (k, q)), from its factors when it
    is stored as a product (never densely)."""
    w = t.get(f"lokr_w{i}")
    if w is not None:
        w = _f32(w).reshape(w.shape[0], -1)
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return u, s, vh
    a, b = _kron_side(t, i)
    _check_inner(f"lokr_w{i}", a, b)
    q_b, u, s, q_a, vh = core_svd(a[None], b[None])
    return q_b[0] @ u[0], s[0], vh[0] @ q_a[0].mT


def _kron_side(t: dict, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LoKr factor w_i as (A_i, B_i) with w_i = A_i @ B_i and the smallest inner size."""
    w = t.get(f"lokr_w{i}")
    if w is not None:
        w = _f32(w).reshape(w.shape[0], -1)
        p, q = w.shape
        if p <= q:
            return torch.eye(p), w
        return w, torch.eye(q)
    wa, wb = t.get(f"lokr_w{i}_a"), t.get(f"lokr_w{i}_b")
    if wa is None or wb is None:
        raise ValueError(f"LoKr needs lokr_w{i} or both lokr_w{i}_a and lokr_w{i}_b")
    if i == 2 and "lokr_t2" in t:
        return _cp_pair(t["lokr_t2"], wa, wb)
    return _f32(wa), _f32(wb).reshape(wb.shape[0], -1)


def _inner(t: dict, i: int) -> int:
    """Inner size of ``_kron_side(t, i)`` from shapes alone."""
    w = t.get(f"lokr_w{i}")
    if w is not None:
        return min(w.shape[0], _prod_shape(w.shape[1:]))
    wb = t.get(f"lokr_w{i}_b")
    if wb is None:
        raise ValueError(f"LoKr needs lokr_w{i} or both lokr_w{i}_a and lokr_w{i}_b")
    return wb.shape[0]


def _prod_shape(shape) -> int:
    n = 1
    for x in shape:
        n *= int(x)
    return n


def lokr(t: dict, max_rank: int = MAX_CONVERTED_RANK) -> Conversion:
    """LoKr (Kronecker product), low-rank or full factors, plain or CP, at most ``max_rank``.

    Rank d1*d2 factors kron(A1, A2), kron(B1, B2) are formed only when d1*d2 <= max_rank and
    fits the layer (they are then no larger than the output). Otherwise the SVD of
    kron(W1, W2) is the Kronecker product of the factors' SVDs: singular values s1_i * s2_j,
    vectors kron(u1_i, u2_j) and kron(v1_i, v2_j). The largest ``max_rank`` of them are the
    exact best truncation, built straight into (out, keep) / (keep, in) factors.
    """
    dim = None
    if "lokr_w1_b" in t:
        dim = t["lokr_w1_b"].shape[0]
    elif "lokr_w2_b" in t:
        dim = t["lokr_w2_b"].shape[0]
    scale = _scale(t, dim)
    d1, d2 = _inner(t, 1), _inner(t, 2)
    if d1 * d2 <= max_rank:
        a1, b1 = _kron_side(t, 1)
        a2, b2 = _kron_side(t, 2)
        up, down = torch.kron(a1, a2), torch.kron(b1, b2)
        conv = Conversion(LowRank(up, down, scale), f"LoKr as exact rank-{up.shape[1]} factors")
        return limit_rank(conv, max_rank)
    u1, s1, vh1 = _side_svd(t, 1)
    u2, s2, vh2 = _side_svd(t, 2)
    m, n = u1.shape[0] * u2.shape[0], vh1.shape[1] * vh2.shape[1]
    prods = (s1[:, None] * s2[None, :]).reshape(-1)
    s, order = torch.sort(prods, descending=True, stable=True)
    rank = numerical_rank(s, m, n)
    keep = max(min(rank, max_rank), 1)
    idx = order[:keep]
    i, j = idx // s2.shape[0], idx % s2.shape[0]
    root = s[:keep].clamp_min(0).sqrt()
    up = (u1[:, i][:, None, :] * u2[:, j][None, :, :]).reshape(m, keep) * root
    down = (vh1[i][:, :, None] * vh2[j][:, None, :]).reshape(keep, n) * root[:, None]
    total = float((s.double() ** 2).sum())
    energy = float((s[:keep].double() ** 2).sum()) / total if total > 0 else 1.0
    lossy = keep < rank
    note = (f"LoKr (rank {d1 * d2}) reduced to rank {keep} through the SVD of its Kronecker factors "
            f"({energy:.2%} of its energy kept)" if lossy else
            f"LoKr (rank {d1 * d2}) as its numerical rank {keep} through the SVD of its Kronecker factors (exact)")
    return Conversion(LowRank(up.contiguous(), down.contiguous(), scale), note, lossy)


def full(t: dict, max_rank: int) -> Conversion:
    """A dense delta (``diff``, optional ``diff_b``): SVD-truncated to ``max_rank``."""
    diff = _f32(t["diff"])
    m = diff.shape[0]
    dense = diff.reshape(m, -1)
    u, s, vh = torch.linalg.svd(dense, full_matrices=False)
    keep = min(numerical_rank(s, *dense.shape), max_rank)
    keep = max(keep, 1)
    energy = float((s[:keep] ** 2).sum() / (s ** 2).sum().clamp_min(1e-30))
    root = s[:keep].sqrt()
    lossy = keep < numerical_rank(s, *dense.shape)
    note = f"full delta as rank {keep} by SVD, {energy:.2%} of its energy kept"
    bias = t.get("diff_b")
    return Conversion(LowRank(u[:, :keep] * root, root[:, None] * vh[:keep], 1.0,
                              bias.reshape(-1) if bias is not None else None), note, lossy)


def limit_rank(conv: Conversion, max_rank: int) -> Conversion:
    """Reduce factors wider than ``max_rank`` (or than the layer) by the exact factor SVD."""
    f = conv.factors
    m, n = f.up.shape[0], f.down.shape[1]
    if f.rank <= max_rank and f.rank <= min(m, n):
        return conv
    up, down, s, keep_exact = lowrank_svd(_f32(f.up), _f32(f.down))
    keep = min(keep_exact, max_rank)
    energy = float((s[:keep] ** 2).sum() / (s ** 2).sum().clamp_min(1e-30))
    lossy = keep < keep_exact
    note = (conv.note or "") + (f", reduced to rank {keep} ({energy:.2%} of its energy kept)" if lossy
                                else f", reduced losslessly to its numerical rank {keep}")
    return Conversion(LowRank(up[:, :keep], down[:keep], f.scale, f.bias), note, lossy or conv.lossy)


CONVERTERS = {"lora": lora, "tucker": tucker, "loha": loha, "lokr": lokr}


def convert(kind: str, tensors: dict, *, path, module: str, max_rank: int = MAX_CONVERTED_RANK) -> Conversion:
    """Convert one module's tensors (role -> tensor) of type ``kind`` to low-rank factors.

    Raises:
        FormatError: the tensors do not fit together (names the file and module).
    """
    try:
        if kind == "full":
            return full(tensors, max_rank)
        if kind in ("loha", "lokr"):
            return CONVERTERS[kind](tensors, max_rank)
        return CONVERTERS[kind](tensors)
    except KeyError as e:
        raise FormatError(f"{kind} module is missing its {e.args[0]!r} tensor", path=path, module=module,
                          hint="The file is incomplete or uses an unknown variant") from None
    except (ValueError, RuntimeError) as e:
        raise FormatError(f"{kind} module has inconsistent tensors ({e})", path=path, module=module,
                          hint="The file is corrupt or uses an unknown variant") from None
