"""NP-LoRA fusion of a content and a style LoRA, at the factor level, batched.

Per module present in both inputs (B = up, A = down, s = user weight * alpha / rank)::

    V      = top-k right singular vectors of B_s A_s            (basis.compute_bases)
    A_c'   = A_c - c (A_c V) V^T                                (linalg.project_out)
    up     = [s_s B_s, s_c B_c]        (out, r_s + r_c)
    down   = [A_s ; A_c']              (r_s + r_c, in)

so up @ down = s_s dW_s + s_c dW_c (I - c V V^T) exactly: only the content's down factor
changes and no dense out x in matrix is ever formed. c = mu / (1 + mu); c = 1 for hard
projection; c = 0 for the direct merge and for text-encoder modules unless scope = "all".
Modules present in one input pass through with their weight; non-additive module types
(DoRA, OFT, ...) are carried over unchanged, and refused where both inputs touch the same
weight. ``reference.fuse_module`` is the readable one-module version used by the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from .. import arch as archmod
from ..devices import resolve_device
from ..errors import FormatError, ParameterError, UnsupportedModuleError
from ..fused import FusedLora, FusedModule, InputInfo
from ..lora import WEIGHTABLE_PASSTHROUGH, LoraModule, LoraSet
from ..params import FuseParams
from . import linalg
from .basis import ModuleBasis, compute_bases
from .batching import module_batches, pair_batches, stack
from .checks import OVERFLOW_HINT, dtype_label, finite_per_module, require_finite

Progress = Callable[[int, int], None]


class BasisStore(Protocol):
    """Where style bases are kept between fusions and analyses (``lib_nplora.cache.Caches``)."""

    def bases(self, lora: LoraSet, names, k, energy, device) -> dict[str, ModuleBasis]:
        """The bases of ``names``: kept ones, the rest computed (``basis.compute_bases``) and kept."""
        ...


@dataclass
class FusionPlan:
    """Which module goes where.

    Attributes:
        pairs: low-rank in both inputs: fused.
        projected: the pairs whose content is projected (c > 0).
        content_only, style_only: low-rank in one input: passed through, weighted.
        passthrough: (module, weight, origin) for non-additive modules.
    """

    pairs: list[str] = field(default_factory=list)
    projected: set[str] = field(default_factory=set)
    content_only: list[str] = field(default_factory=list)
    style_only: list[str] = field(default_factory=list)
    passthrough: list[tuple[LoraModule, float, str]] = field(default_factory=list)


def _overlaps(name: str, other: dict) -> str | None:
    """Name of a module in ``other`` acting on the same weight as ``name`` (itself, parent or part)."""
    if name in other:
        return name
    parent = name.split(":", 1)[0]
    if parent in other:
        return parent
    prefix = name + ":"
    return next((n for n in other if n.startswith(prefix)), None)


def plan_fusion(content: LoraSet, style: LoraSet, params: FuseParams) -> FusionPlan:
    """Pair the modules of the two inputs and decide what happens to each."""
    if content.arch != style.arch:
        raise archmod.pair_mismatch(content.name, content.arch, style.name, style.arch)
    wc, ws = params.content_weight, params.style_weight
    if wc == 0 and ws == 0:
        raise ParameterError("both weights are 0: the result would be empty",
                             hint="Give the content or the style a non-zero weight")
    plan = FusionPlan()
    c = params.c
    for side, mods, other, w, other_w in (("content", content.modules, style.modules, wc, ws),
                                          ("style", style.modules, content.modules, ws, wc)):
        for name, mod in mods.items():
            hit = _overlaps(name, other)
            if hit is not None and w != 0 and other_w != 0 and not (mod.is_lowrank and other[hit].is_lowrank):
                passthrough = mod if not mod.is_lowrank else other[hit]
                raise UnsupportedModuleError(
                    f"one LoRA has a {passthrough.kind} module here and the other LoRA also changes this "
                    "weight; such modules cannot be fused",
                    path=(content if side == "content" else style).path, module=name,
                    hint="Use a plain LoRA/LoCon/LoHa/LoKr version of one of them, or set one weight to 0")
            if not mod.is_lowrank:
                if w != 0:
                    plan.passthrough.append((mod, w, side))
                continue
            if hit is not None and other_w != 0 and other[hit].is_lowrank:
                if side == "content" and w != 0:  # each pair is recorded once, from the content side
                    plan.pairs.append(name)
                    if c > 0 and (params.scope == "all" or not archmod.is_text_encoder(name)):
                        plan.projected.add(name)
                continue
            if w != 0:
                (plan.content_only if side == "content" else plan.style_only).append(name)
    return plan


def weighted_passthrough(mod: LoraModule, weight: float, path: str) -> LoraModule:
    """A passthrough module with a user weight applied, where its type is linear in its tensors."""
    if weight == 1.0:
        return mod
    roles = WEIGHTABLE_PASSTHROUGH.get(mod.kind)
    if roles is None:
        raise UnsupportedModuleError(
            f"{mod.kind} module cannot be scaled by a weight of {weight:g}", path=path, module=mod.name,
            hint="Set this LoRA's weight to 1, or use a plain LoRA version of it")
    tensors = {r: (t * weight if r in roles else t) for r, t in mod.tensors.items()}
    return LoraModule(mod.name, mod.kind, None, tensors=tensors, source_keys=mod.source_keys)


def _norms(x, dim: int) -> torch.Tensor:
    """float32 vector norms of a (G, a, b) batch or of a list of G (a, b) tensors along ``dim``
    (1 or 2 of the batch) -> (G, b or a)."""
    if isinstance(x, torch.Tensor):
        return torch.linalg.vector_norm(x, dim=dim, dtype=torch.float32)
    return torch.stack([torch.linalg.vector_norm(t, dim=dim - 1, dtype=torch.float32) for t in x])


def _write(dst: torch.Tensor, src, factor: torch.Tensor) -> None:
    """dst = src * factor, src a (G, a, b) batch or a list of G (a, b) tensors (any float dtype,
    multiplied in float32), factor broadcasting to (G, a, b)."""
    if isinstance(src, torch.Tensor):
        if dst.device == src.device:
            torch.mul(src, factor, out=dst)
        else:
            dst.copy_(src * factor)
        return
    for i, t in enumerate(src):
        torch.mul(t, factor[i], out=dst[i])


def write_balanced(dst_up: torch.Tensor, dst_down: torch.Tensor, pieces: list[tuple]) -> None:
    """Write scaled low-rank pieces side by side, each rank component balanced.

    Args:
        dst_up: (G, m, R) output up factors (any float dtype and device).
        dst_down: (G, R, n) output down factors.
        pieces: (up, scale (G,) float32, down) per piece, sum r_i = R; up is a (G, m, r_i)
            float32 batch or a list of G (m, r_i) tensors on ``dst_up``'s device (then read in
            their own dtype: no float32 copy), down likewise (G, r_i, n). Piece i fills rank
            columns/rows sum_{j<i} r_j onwards with scale * up and down.

    Each rank component's up column and down row get equal norms (the product is unchanged),
    which keeps fp16/bf16 output accurate. Written straight into the destination: no
    concatenated float32 copy of the result is made.
    """
    offset = 0
    for up, scale, down in pieces:
        r = (up.shape[2] if isinstance(up, torch.Tensor) else up[0].shape[1])
        nu = _norms(up, 1) * scale.abs()[:, None]   # (G, r)
        nd = _norms(down, 2)                        # (G, r)
        ok = (nu > 0) & (nd > 0)
        d = torch.where(ok, (nu / torch.where(ok, nd, torch.ones_like(nd))).sqrt(), torch.ones_like(nu))
        _write(dst_up[:, :, offset:offset + r], up, (scale[:, None] / d)[:, None, :])
        _write(dst_down[:, offset:offset + r, :], down, d[:, :, None])
        offset += r


def _one(x, i: int):
    """Module i of a (G, a, b) batch or a list of G tensors, as a batch of one."""
    return x[i:i + 1] if isinstance(x, torch.Tensor) else [x[i]]


def check_written(names: list[str], dst_up: torch.Tensor, dst_down: torch.Tensor, pieces: list[tuple],
                  paths: tuple) -> None:
    """Raise if a module just written by ``write_balanced`` holds Inf/NaN.

    The destination is in the output dtype, so a value beyond its range (float16: 65504) shows
    as Inf here too. One (G,) reduction per batch; on a failure the offending piece (style or
    content, ``paths`` in piece order) is redone alone in float32 to tell "does not fit the
    output dtype" from "not finite even in float32".

    Raises:
        FormatError: naming the module and the input file whose piece overflowed.
    """
    ok = finite_per_module(dst_up) & finite_per_module(dst_down)
    if bool(ok.all()):
        return
    i = int((~ok).nonzero()[0, 0])
    offset = 0
    for (up, scale, down), path in zip(pieces, paths):
        r = up.shape[2] if isinstance(up, torch.Tensor) else up[0].shape[1]
        if bool(torch.isfinite(dst_up[i, :, offset:offset + r]).all()) and \
                bool(torch.isfinite(dst_down[i, offset:offset + r]).all()):
            offset += r
            continue
        m, n = dst_up.shape[1], dst_down.shape[2]
        f_up = torch.empty(1, m, r, device=dst_up.device)
        f_down = torch.empty(1, r, n, device=dst_up.device)
        write_balanced(f_up, f_down, [(_one(up, i), scale[i:i + 1], _one(down, i))])
        if bool(torch.isfinite(f_up).all()) and bool(torch.isfinite(f_down).all()):
            problem = (f"the fused update does not fit {dtype_label(dst_up.dtype)} (its factors have values beyond "
                       f"{torch.finfo(dst_up.dtype).max:g})")
        else:
            problem = "the fused update is not finite even in float32 (its scale or values overflow)"
        raise FormatError(problem, path=path, module=names[i], hint=OVERFLOW_HINT)
    raise FormatError("the fused update is not finite", module=names[i], hint=OVERFLOW_HINT)


def _bias(*terms) -> torch.Tensor | None:
    out = None
    for w, b in terms:
        if b is not None:
            b = b.float() * w
            out = b if out is None else out + b
    return out


def _jobs(plan: FusionPlan, content: LoraSet, style: LoraSet):
    """Batches of equal-shaped modules: (origin, names, (out, in, output rank))."""
    cm, sm = content.modules, style.modules
    for (m, n_in, rs, rc, _), chunk in pair_batches(plan.pairs, sm, cm, split=lambda n: n in plan.projected):
        yield "fused", chunk, (m, n_in, rs + rc)
    for origin, names, mods in (("content", plan.content_only, cm), ("style", plan.style_only, sm)):
        for (m, n_in, r), chunk in module_batches(names, mods):
            yield origin, chunk, (m, n_in, r)


def fuse(content: LoraSet, style: LoraSet, params: FuseParams, *, device=None,
         dtype: torch.dtype = torch.float16, out_device="cpu", cache: BasisStore | None = None,
         progress: Progress | None = None) -> FusedLora:
    """Fuse a content and a style LoRA (see the module docstring and ``_fuse``); float32 math
    even when the caller runs under autocast."""
    with linalg.float32_math():
        return _fuse(content, style, params, device=device, dtype=dtype, out_device=out_device, cache=cache,
                     progress=progress)


def _fuse(content: LoraSet, style: LoraSet, params: FuseParams, *, device=None,
         dtype: torch.dtype = torch.float16, out_device="cpu", cache: BasisStore | None = None,
         progress: Progress | None = None) -> FusedLora:
    """Fuse a content and a style LoRA (see the module docstring).

    Args:
        content, style: the inputs, read for the same architecture (``formats.reader.load_pair``).
        params: the fusion parameters.
        device: where the math runs (None = CPU; "cuda" for a GPU).
        dtype: dtype of the fused factors (float16, bfloat16 or float32).
        out_device: where the fused factors are put.
        cache: keeps style bases between calls (``cache.Caches``): a new mu then skips the SVD.
            Without one, each batch's bases are computed (``basis.compute_bases``) and dropped.
        progress: called with (modules done, modules total).

    Returns:
        FusedLora with rank r_s + r_c per fused module, scaling baked in. All factors are views
        of one buffer allocated up front, so memory is the output's size plus one batch.
    """
    device = resolve_device(device) if device is not None else None  # refuses meta, xla, absent GPUs
    out_device = resolve_device(out_device)
    plan = plan_fusion(content, style, params)
    wc, ws = params.content_weight, params.style_weight
    c = params.c
    fused = FusedLora(content.arch, params, InputInfo.of(content, wc), InputInfo.of(style, ws))
    fused.warnings += [f"content: {w}" for w in content.warnings] + [f"style: {w}" for w in style.warnings]

    # with a store, every projected module's basis comes from it (computed there once per style
    # file and k); without one, each batch's bases are computed and dropped
    known = cache.bases(style, [n for n in plan.pairs if n in plan.projected], params.k, params.energy,
                        device) if cache is not None and plan.projected else None

    jobs = list(_jobs(plan, content, style))
    total = sum(len(names) * m * r + len(names) * r * n for _, names, (m, n, r) in jobs)
    arena = torch.empty(total, dtype=dtype, device=out_device)
    offset, done = 0, 0
    cm, sm = content.modules, style.modules
    math_device = torch.device(device) if device is not None else torch.device("cpu")
    # Factors that the math does not change (style factors with a cached basis, content up
    # factors, unprojected pairs, passthrough) go from the inputs straight into the output where
    # inputs and output share the math device; elsewhere they are stacked in float32 there.
    direct = arena.device == math_device

    def factors(ts: list[torch.Tensor]):
        if direct and all(t.device == math_device for t in ts):
            return ts
        return stack(ts, device)
    for origin, chunk, (m, n_in, rank) in jobs:
        g = len(chunk)
        dst_up = arena[offset:offset + g * m * rank].view(g, m, rank)
        offset += g * m * rank
        dst_down = arena[offset:offset + g * rank * n_in].view(g, rank, n_in)
        offset += g * rank * n_in
        if origin == "fused":
            projected = chunk[0] in plan.projected
            b_s, a_s = factors([sm[n].factors.up for n in chunk]), factors([sm[n].factors.down for n in chunk])
            b_c, a_c = factors([cm[n].factors.up for n in chunk]), factors([cm[n].factors.down for n in chunk])
            if projected:
                bases = known if known is not None else compute_bases(style, chunk, params.k, params.energy, device)
                v = torch.stack([bases[n].v for n in chunk]).to(math_device)
                ks = [bases[n].k for n in chunk]
                a_c = linalg.project_out(stack(a_c, device), v, c)
            s_s = torch.tensor([ws * sm[n].factors.scale for n in chunk], device=math_device)
            s_c = torch.tensor([wc * cm[n].factors.scale for n in chunk], device=math_device)
            pieces = [(b_s, s_s, a_s), (b_c, s_c, a_c)]
            write_balanced(dst_up, dst_down, pieces)
            check_written(chunk, dst_up, dst_down, pieces, (style.path, content.path))
        else:
            lora, w = (content, wc) if origin == "content" else (style, ws)
            mods = lora.modules
            up, down = factors([mods[n].factors.up for n in chunk]), factors([mods[n].factors.down for n in chunk])
            scale = torch.tensor([w * mods[n].factors.scale for n in chunk], device=math_device)
            pieces = [(up, scale, down)]
            write_balanced(dst_up, dst_down, pieces)
            check_written(chunk, dst_up, dst_down, pieces, (lora.path,))
        for i, n in enumerate(chunk):
            if origin == "fused":
                bias = _bias((ws, sm[n].factors.bias), (wc, cm[n].factors.bias))
                k, cc = (ks[i], c) if projected else (0, 0.0)
            else:
                bias = _bias((w, mods[n].factors.bias))
                k, cc = 0, 0.0
            if bias is not None:
                require_finite(n, {"bias": bias}, dtype=dtype, what="fused bias")
            fused.modules[n] = FusedModule(n, dst_up[i], dst_down[i],
                                           bias.to(out_device, dtype) if bias is not None else None, origin, k, cc)
        done += g
        if progress:
            progress(done, len(plan.pairs) + len(plan.content_only) + len(plan.style_only))

    for mod, w, origin in plan.passthrough:
        src = content if origin == "content" else style
        weighted = weighted_passthrough(mod, w, src.path)
        require_finite(mod.name, weighted.tensors or {}, path=src.path, what=f"{mod.kind} module (weight {w:g})")
        fused.passthrough[mod.name] = weighted
        fused.warnings.append(f"{mod.name}: {mod.kind} module from the {origin} LoRA carried over unchanged")

    for origin, lora in (("content", content), ("style", style)):
        for key, t in lora.extras.items():
            if key in fused.extras:
                fused.warnings.append(f"{key}: both LoRAs bundle it; the content LoRA's is kept")
                continue
            fused.extras[key] = t
    return fused
