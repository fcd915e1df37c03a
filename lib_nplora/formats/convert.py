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
"""

from __future__ import annotations

import torch

from ..errors import FormatError
from ..fusion.linalg import lowrank_svd, numerical_rank
from ..lora import LowRank

#: Largest rank a converted module (LoHa, LoKr, full) keeps; larger ones are truncated.
MAX_CONVERTED_RANK = 256


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


def loha(t: dict) -> Conversion:
    """LoHa (Hadamard product of two low-rank terms), plain or CP form."""
    r = t["hada_w1_b"].shape[0]
    if "hada_t1" in t or "hada_t2" in t:
        if not ("hada_t1" in t and "hada_t2" in t):
            raise ValueError("CP LoHa needs both hada_t1 and hada_t2")
        u1, d1 = _cp_pair(t["hada_t1"], t["hada_w1_a"], t["hada_w1_b"])
        u2, d2 = _cp_pair(t["hada_t2"], t["hada_w2_a"], t["hada_w2_b"])
    else:
        u1, d1 = _f32(t["hada_w1_a"]), _f32(t["hada_w1_b"].reshape(r, -1))
        u2, d2 = _f32(t["hada_w2_a"]), _f32(t["hada_w2_b"].reshape(t["hada_w2_b"].shape[0], -1))
    if u1.shape[0] != u2.shape[0] or d1.shape[1] != d2.shape[1]:
        raise ValueError("the two LoHa terms have different shapes")
    up, down = rowwise_kron(u1, u2), colwise_kron(d1, d2)
    note = f"LoHa rank {r} as exact rank-{up.shape[1]} factors"
    return Conversion(LowRank(up, down, _scale(t, r)), note)


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


def lokr(t: dict) -> Conversion:
    """LoKr (Kronecker product), low-rank or full factors, plain or CP."""
    a1, b1 = _kron_side(t, 1)
    a2, b2 = _kron_side(t, 2)
    up = torch.kron(a1, a2)
    down = torch.kron(b1, b2)
    dim = None
    if "lokr_w1_b" in t:
        dim = t["lokr_w1_b"].shape[0]
    elif "lokr_w2_b" in t:
        dim = t["lokr_w2_b"].shape[0]
    note = f"LoKr as exact rank-{up.shape[1]} factors"
    return Conversion(LowRank(up, down, _scale(t, dim)), note)


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
        conv = CONVERTERS[kind](tensors)
        if kind in ("loha", "lokr"):
            conv = limit_rank(conv, max_rank)
        return conv
    except KeyError as e:
        raise FormatError(f"{kind} module is missing its {e.args[0]!r} tensor", path=path, module=module,
                          hint="The file is incomplete or uses an unknown variant") from None
    except (ValueError, RuntimeError) as e:
        raise FormatError(f"{kind} module has inconsistent tensors ({e})", path=path, module=module,
                          hint="The file is corrupt or uses an unknown variant") from None
