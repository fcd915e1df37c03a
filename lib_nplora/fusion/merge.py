"""NP-LoRA fusion of content and style LoRAs, at the factor level, batched.

Per module present in both inputs (B = up, A = down, s = user weight * alpha / rank)::

    V      = top-k right singular vectors of B_s A_s            (basis.compute_bases)
    A_c'   = A_c - c (A_c V) V^T                                (linalg.project_out)
    up     = [s_s B_s, s_c B_c]        (out, r_s + r_c)
    down   = [A_s ; A_c']              (r_s + r_c, in)

so up @ down = s_s dW_s + s_c dW_c (I - c V V^T) exactly: only the content's down factor
changes and no dense out x in matrix is ever formed. c = mu / (1 + mu); c = 1 for hard
projection; c = 0 for the direct merge and for text-encoder modules unless scope = "all".
Per-block mu (``FuseParams.block_mu``, groups of ``arch.blocks``) sets c per module.

Several inputs (``fuse_set``): contents C_1..C_n (weights w_ci), styles S_1..S_m (w_sj). The
protected update is the joint dW_S = sum_j w_sj dW_Sj; V holds the top-k right singular vectors
of dW_S, computed exactly from the stacked factors [w_s1 s_1 B_1, ...] @ [A_1; ...]
(``basis.compute_joint_bases``: thin QR of both, an r x r core); every content is projected,
dW_Ci' = dW_Ci (I - c V V^T), and the result dW_S + sum_i w_ci dW_Ci' is one LoRA of rank
sum r_sj + sum r_ci (style pieces first, then contents, in order). One content and one style is
the pair formula above, bit for bit.

``chain`` (beyond the paper, off by default): content C_i is projected off the union of V and
the principal input directions W_1..W_{i-1} of the contents before it (same k / energy rule;
``linalg.span_basis`` orthonormalises the union), A_ci' = A_ci (I - c U_i U_i^T). So a later
content is attenuated where an earlier one acts: C_1 keeps its directions, C_2 cannot overwrite
them. It applies also where no style holds the module but several contents do. Order matters.

Modules present in one side only pass through with their weights (summed where several inputs
of that side hold them); non-additive module types (DoRA, OFT, ...) are carried over unchanged,
and refused where another input touches the same weight. ``reference`` holds the readable
one-module versions (and a dense one for several inputs) used by the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import torch

from .. import arch as archmod
from ..arch import blocks
from ..devices import resolve_device
from ..errors import FormatError, ParameterError, UnsupportedModuleError
from ..fused import FusedLora, FusedModule, InputInfo
from ..lora import WEIGHTABLE_PASSTHROUGH, LoraModule, LoraSet
from ..params import FuseParams
from . import linalg
from .basis import ModuleBasis, compute_bases, compute_joint_bases
from .batching import batches, stacked_bytes, stack
from .checks import OVERFLOW_HINT, dtype_label, finite_per_module, require_finite

Progress = Callable[[int, int], None]


class BasisStore(Protocol):
    """Where style bases are kept between fusions and analyses (``lib_nplora.cache.Caches``)."""

    def bases(self, lora: LoraSet, names, k, energy, device) -> dict[str, ModuleBasis]:
        """The bases of ``names``: kept ones, the rest computed (``basis.compute_bases``) and kept."""
        ...

    def joint_bases(self, styles, names, k, energy, device) -> dict[str, ModuleBasis]:
        """The same for the joint update of several (style, weight) (``basis.compute_joint_bases``)."""
        ...

    def basis_key(self, lora: LoraSet, k, energy, device):
        """The identity of one style's bases (hashable)."""
        ...

    def joint_key(self, styles, k, energy, device):
        """The identity of several (style, weight)'s joint bases."""
        ...

    def coordinates(self, content: LoraSet, style_key, names, compute) -> torch.Tensor:
        """Kept A_c V (G, r_c, kk) of one batch of modules ``names``, else ``compute()``'s, kept."""
        ...


@dataclass(frozen=True)
class Part:
    """One input of a fusion and its effective weight (its own times the side's global weight).

    Attributes:
        lora: the input.
        weight: the multiplier of its update, on top of its alpha / rank.
        role: "content" or "style".
        index: its place among its side's inputs (0 = first).
    """

    lora: LoraSet
    weight: float
    role: str
    index: int = 0
    own: float = 1.0

    @property
    def label(self) -> str:
        """How messages name it: "content" / "style", or "content 2" when there are several."""
        return self.role if self.index == 0 else f"{self.role} {self.index + 1}"


@dataclass
class FusionPlan:
    """Which module goes where.

    Attributes:
        pairs: low-rank in at least one content and one style: fused.
        projected: the pairs (and, with ``chain``, content-only modules of several contents) whose
            content is projected (c > 0).
        content_only, style_only: low-rank in inputs of one side only: summed, weighted.
        passthrough: (module, weight, origin) for non-additive modules.
        members: module -> (contents, styles) holding it low-rank, as indices into the plan's
            ``contents`` / ``styles``; with one content and one style always ((0,), (0,)) for a pair.
        c: module -> suppression strength (per block group, ``FuseParams.c_of``) of the projected.
        contents, styles: the inputs with non-zero weight, in order.
    """

    pairs: list[str] = field(default_factory=list)
    projected: set[str] = field(default_factory=set)
    content_only: list[str] = field(default_factory=list)
    style_only: list[str] = field(default_factory=list)
    passthrough: list[tuple[LoraModule, float, str]] = field(default_factory=list)
    members: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    c: dict[str, float] = field(default_factory=dict)
    contents: list[Part] = field(default_factory=list)
    styles: list[Part] = field(default_factory=list)


def _overlaps(name: str, other: dict, parents: set[str] | None = None) -> str | None:
    """Name of a module in ``other`` acting on the same weight as ``name`` (itself, parent or part).

    ``parents``: the parents of ``other``'s parts (``_parents``), so that a miss costs no scan."""
    if name in other:
        return name
    parent = name.split(":", 1)[0]
    if parent in other:
        return parent
    if parents is not None and name not in parents:
        return None
    prefix = name + ":"
    return next((n for n in other if n.startswith(prefix)), None)


def _parents(modules: dict) -> set[str]:
    """The fused weights that some of ``modules`` are parts (``parent:part``) of."""
    return {n.split(":", 1)[0] for n in modules if ":" in n}


def parts_of(contents, styles, params: FuseParams) -> tuple[list[Part], list[Part]]:
    """(LoraSet, own weight) lists -> the ``Part`` lists, weights multiplied by the side's global
    weight (``params.content_weight`` / ``style_weight``).

    Raises:
        ParameterError: no input on a side.
    """
    if not contents or not styles:
        raise ParameterError("a fusion needs at least one content LoRA and one style LoRA")
    return ([Part(lora, w * params.content_weight, "content", i, w) for i, (lora, w) in enumerate(contents)],
            [Part(lora, w * params.style_weight, "style", j, w) for j, (lora, w) in enumerate(styles)])


def check_architectures(parts: list[Part]) -> str:
    """The one architecture of every input; raises ``ArchitectureError`` naming the first two that differ."""
    first = parts[0].lora
    for p in parts[1:]:
        if p.lora.arch != first.arch:
            raise archmod.pair_mismatch(first.name, first.arch, p.lora.name, p.lora.arch)
    return first.arch


def plan_fusion(content: LoraSet, style: LoraSet, params: FuseParams) -> FusionPlan:
    """Pair the modules of one content and one style LoRA and decide what happens to each."""
    return plan_set(*parts_of([(content, 1.0)], [(style, 1.0)], params), params)


def plan_set(contents: list[Part], styles: list[Part], params: FuseParams) -> FusionPlan:
    """Group the modules of several content and style LoRAs and decide what happens to each.

    Inputs with weight 0 take no part (as one weight of 0 did for a pair). A module is a pair
    when a content and a style hold it low-rank; it is projected when c > 0 in its block group
    and it is in the denoiser (or ``scope="all"``). A non-additive module (DoRA, OFT, ...) is
    carried over unless another input changes the same weight: then the fusion is refused,
    naming the file that holds it.
    """
    arch = check_architectures(contents + styles)
    if all(p.weight == 0 for p in contents + styles):
        raise ParameterError("both weights are 0: the result would be empty" if len(contents) + len(styles) == 2
                             else "every weight is 0: the result would be empty",
                             hint="Give the content or the style a non-zero weight")
    plan = FusionPlan(contents=[p for p in contents if p.weight != 0], styles=[p for p in styles if p.weight != 0])
    active = plan.contents + plan.styles
    parents = {id(p): _parents(p.lora.modules) for p in active}
    for part in active:
        mods = part.lora.modules
        for name, mod in mods.items():
            for other in active:
                if other is part:
                    continue
                hit = _overlaps(name, other.lora.modules, parents[id(other)])
                if hit is not None and not (mod.is_lowrank and other.lora.modules[hit].is_lowrank):
                    passthrough = mod if not mod.is_lowrank else other.lora.modules[hit]
                    raise UnsupportedModuleError(
                        f"one LoRA has a {passthrough.kind} module here and another LoRA also changes this "
                        "weight; such modules cannot be fused" if len(active) > 2 else
                        f"one LoRA has a {passthrough.kind} module here and the other LoRA also changes this "
                        "weight; such modules cannot be fused",
                        path=(part if not mod.is_lowrank else other).lora.path, module=name,
                        hint="Use a plain LoRA/LoCon/LoHa/LoKr version of one of them, or set one weight to 0")
            if not mod.is_lowrank:
                plan.passthrough.append((mod, part.weight, part.role))
                continue
            if name in plan.members:
                continue
            have_c = tuple(i for i, p in enumerate(plan.contents) if _lowrank(p.lora, name))
            have_s = tuple(j for j, p in enumerate(plan.styles) if _lowrank(p.lora, name))
            plan.members[name] = (have_c, have_s)
    by_kind: dict[str, list[str]] = {"pair": [], "content": [], "style": []}
    for name, (have_c, have_s) in plan.members.items():
        kind = "pair" if have_c and have_s else "content" if have_c else "style"
        by_kind[kind].append(name)
        protect = kind == "pair" or (kind == "content" and params.chain and len(have_c) > 1)
        if protect and (params.scope == "all" or not archmod.is_text_encoder(name)):
            c = params.c_of(*blocks.group_of(arch, name))
            if c > 0:
                plan.projected.add(name)
                plan.c[name] = c
    # model order as a pair had it: the pairs in the first content's order, then the rest
    plan.pairs, plan.content_only, plan.style_only = by_kind["pair"], by_kind["content"], by_kind["style"]
    return plan


def _lowrank(lora: LoraSet, name: str) -> bool:
    mod = lora.modules.get(name)
    return mod is not None and mod.is_lowrank


def check_block_groups(arch: str, params: FuseParams) -> None:
    """Raise unless every ``params.block_mu`` group exists in ``arch`` (``arch.blocks``)."""
    known = blocks.all_groups(arch)
    bad = [b.group for b in params.blocks if b.group not in known]
    if bad:
        raise ParameterError(f"block mu: {archmod.ARCH_LABELS.get(arch, arch)} has no block group "
                             f"{', '.join(bad)}",
                             hint="Use " + ", ".join(blocks.groups(arch)) + " or a depth such as "
                             + ", ".join(blocks.fine_groups(arch)[:3] or ("(none)",)))


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


class Piece(NamedTuple):
    """One low-rank piece of a fused module batch, as ``write_balanced`` writes it.

    Attributes:
        up: (G, m, r) float32 batch, or a list of G (m, r) tensors (read in their own dtype).
        scale: (G,) float32 multipliers.
        down: (G, r, n) batch, or a list of G (r, n) tensors.
        up_norms, down_norms: (G, r) float32 column norms of up / row norms of down when already
            known (``LowRank.up_norms``: the input's own, kept between fusions), else None.
    """

    up: object
    scale: torch.Tensor
    down: object
    up_norms: torch.Tensor | None = None
    down_norms: torch.Tensor | None = None


def write_balanced(dst_up: torch.Tensor, dst_down: torch.Tensor, pieces: list[tuple]) -> None:
    """Write scaled low-rank pieces side by side, each rank component balanced.

    Args:
        dst_up: (G, m, R) output up factors (any float dtype and device).
        dst_down: (G, R, n) output down factors.
        pieces: ``Piece`` (or (up, scale, down)) per piece, sum r_i = R; up is a (G, m, r_i)
            float32 batch or a list of G (m, r_i) tensors on ``dst_up``'s device (then read in
            their own dtype: no float32 copy), down likewise (G, r_i, n). Piece i fills rank
            columns/rows sum_{j<i} r_j onwards with scale * up and down.

    Each rank component's up column and down row get equal norms (the product is unchanged),
    which keeps fp16/bf16 output accurate. Written straight into the destination: no
    concatenated float32 copy of the result is made.
    """
    offset = 0
    for piece in pieces:
        up, scale, down, up_norms, down_norms = Piece(*piece)
        r = (up.shape[2] if isinstance(up, torch.Tensor) else up[0].shape[1])
        nu = (up_norms if up_norms is not None else _norms(up, 1)) * scale.abs()[:, None]   # (G, r)
        nd = down_norms if down_norms is not None else _norms(down, 2)                        # (G, r)
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
    for piece, path in zip(pieces, paths):
        up, scale, down = piece[:3]
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


def _jobs(plan: FusionPlan):
    """Batches of modules with equal shapes, members, ranks and c: (origin, names, (out, in, output rank)).

    With one content and one style these are exactly a pair's batches: the pairs (split by
    projected or not), then the content-only and the style-only modules, each in model order.
    """
    def key(n):
        have_c, have_s = plan.members[n]
        first = (plan.contents[have_c[0]] if have_c else plan.styles[have_s[0]]).lora.modules[n].factors
        return (first.out_features, first.in_features,
                tuple((j, plan.styles[j].lora.modules[n].factors.rank) for j in have_s),
                tuple((i, plan.contents[i].lora.modules[n].factors.rank) for i in have_c),
                n in plan.projected, plan.c.get(n, 0.0))

    def rank(k) -> int:
        return sum(r for _, r in k[2]) + sum(r for _, r in k[3])

    def nbytes(n):
        k = key(n)
        return stacked_bytes(k[0], k[1], rank(k))

    for origin, names in (("fused", plan.pairs), ("content", plan.content_only), ("style", plan.style_only)):
        for k, chunk in batches(names, key, nbytes):
            yield origin, chunk, (k[0], k[1], rank(k))


def project_batch(plan: FusionPlan, chunk: list[str], params: FuseParams, downs: list,
                  bases: dict[str, ModuleBasis] | None, earlier: list[dict], device=None,
                  cache: BasisStore | None = None) -> tuple[list, list[int]]:
    """The projection step of one batch of projected modules (equal members, ranks and c):
    each content's down factors A_ci (G, r_ci, n) -> A_ci (I - c U U^T).

    U is the style basis V (``bases``: the joint style update's, or None where no style holds
    the modules) and, with ``chain``, for content i also the bases of the contents before it
    (``earlier``, from ``_content_bases``), orthonormalised together (``linalg.span_basis``).
    With a ``cache``, A_ci V (G, r_ci, kk) is kept per content, style subspace and batch
    (``Caches.coordinates``), so a new mu costs one matmul per batch, not two (a per-block mu
    that groups the modules differently computes it once for the new batches).

    Args:
        chunk: the batch's module names (one ``_jobs`` batch with ``name in plan.projected``).
        downs: per content of the batch's members (``plan.members[chunk[0]][0]``, in order), its
            down factors: a (G, r_ci, n) batch or a list of G (r_ci, n) tensors, any float dtype.
        device: where the math runs (None = CPU).

    Returns:
        (the projected downs, one (G, r_ci, n) float32 batch per content (its ``downs`` entry
        itself where nothing is projected off it: no style, first of a chain); k per module: the
        number of style directions removed, 0 where no style holds the module).
    """
    have_c, _ = plan.members[chunk[0]]
    c = plan.c[chunk[0]]
    math_device = torch.device(device) if device is not None else torch.device("cpu")
    v, ks = None, [0] * len(chunk)
    if bases is not None:
        v = torch.stack([bases[n].v for n in chunk]).to(math_device)   # (G, n, kk)
        ks = [bases[n].k for n in chunk]
    out = []
    for t, (i, a_c) in enumerate(zip(have_c, downs)):
        u = v
        if params.chain and t > 0:
            before = [torch.stack([earlier[e][n].v for n in chunk]).to(math_device) for e in have_c[:t]]
            u = linalg.span_basis(torch.cat(([v] if v is not None else []) + before, dim=2))
        if u is None:
            out.append(a_c)
            continue
        a = stack(a_c, device)                                           # (G, r_ci, n)
        coords = None
        if cache is not None and u is v:  # the style subspace alone: its coordinates are kept
            coords = _coordinates(cache, plan, plan.contents[i].lora, chunk, a, v, params, device)
        out.append(linalg.project_out(a, u, c, coords))
    return out, ks


def _coordinates(cache: BasisStore, plan: FusionPlan, content: LoraSet, chunk: list[str], a: torch.Tensor,
                 v: torch.Tensor, params: FuseParams, device) -> torch.Tensor:
    """(G, r_c, kk) A_c V of a batch, kept in ``cache`` (computed there once per batch)."""
    if len(plan.styles) == 1:
        style_key = cache.basis_key(plan.styles[0].lora, params.k, params.energy, device)
    else:
        style_key = cache.joint_key([(p.lora, p.own) for p in plan.styles], params.k, params.energy, device)
    return cache.coordinates(content, style_key, chunk, lambda: a @ v)


def projected_contents(contents: list[Part], styles: list[Part], params: FuseParams, *, device=None,
                       cache: BasisStore | None = None) -> list[dict[str, torch.Tensor]]:
    """The content LoRAs' projected down factors alone, for hosts that apply the inputs as
    separate LoRAs (ComfyUI): content i's up at its weight with these downs, plus every style
    unchanged, is ``fuse_set``'s update.

    Args:
        contents, styles: the inputs (``parts_of``), one architecture.
        cache: where style (and, with ``chain``, content) bases are kept (``cache.Caches``).

    Returns:
        per content of ``contents`` (weight-0 ones included, empty), canonical name -> projected
        down (r_ci, n) float32 on the CPU, for every module where that content is projected
        (nothing when no module is: mu = 0, direct merge).

    Raises:
        ArchitectureError, UnsupportedModuleError, ParameterError: as ``plan_set``.
    """
    with linalg.float32_math():
        plan = plan_set(contents, styles, params)
        check_block_groups(contents[0].lora.arch, params)
        index = [next(i for i, p in enumerate(contents) if p is part) for part in plan.contents]
        out: list[dict[str, torch.Tensor]] = [{} for _ in contents]
        protected = [n for n in plan.pairs if n in plan.projected]
        known = _style_bases(plan, protected, params, device, cache) if protected else {}
        earlier = _content_bases(plan, params, device, cache)
        for origin, chunk, _ in _jobs(plan):
            if chunk[0] not in plan.projected:
                continue
            have_c, have_s = plan.members[chunk[0]]
            downs = [[plan.contents[i].lora.modules[n].factors.down for n in chunk] for i in have_c]
            projected, _ = project_batch(plan, chunk, params, downs, known if have_s else None, earlier, device,
                                         cache)
            for i, batch in zip(have_c, projected):
                out[index[i]].update({n: batch[g].cpu() for g, n in enumerate(chunk)})
        return out


def fuse(content: LoraSet, style: LoraSet, params: FuseParams, *, device=None,
         dtype: torch.dtype = torch.float16, out_device="cpu", cache: BasisStore | None = None,
         progress: Progress | None = None) -> FusedLora:
    """Fuse a content and a style LoRA (see the module docstring and ``fuse_set``); float32 math
    even when the caller runs under autocast."""
    return fuse_set([(content, 1.0)], [(style, 1.0)], params, device=device, dtype=dtype, out_device=out_device,
                    cache=cache, progress=progress)


def fuse_set(contents: list[tuple[LoraSet, float]], styles: list[tuple[LoraSet, float]], params: FuseParams, *,
             device=None, dtype: torch.dtype = torch.float16, out_device="cpu", cache: BasisStore | None = None,
             progress: Progress | None = None) -> FusedLora:
    """Fuse several content and several style LoRAs (see the module docstring and ``_fuse``);
    float32 math even when the caller runs under autocast.

    Args:
        contents, styles: (LoRA, own weight) in order; the effective weight of each is its own
            times ``params.content_weight`` / ``style_weight``. One of each with weight 1 is
            ``fuse(content, style, params)``, bit for bit.
    """
    with linalg.float32_math():
        c_parts, s_parts = parts_of(contents, styles, params)
        return _fuse(c_parts, s_parts, params, device=device, dtype=dtype, out_device=out_device, cache=cache,
                     progress=progress)


def _style_bases(plan: FusionPlan, names: list[str], params: FuseParams, device,
                 cache: BasisStore | None) -> dict[str, ModuleBasis]:
    """The protected subspace of ``names`` (pairs): one style's bases (scale-free, cached per
    file), or the joint update's of several (cached per set of files and their own weights)."""
    if not names:
        return {}
    if len(plan.styles) == 1:
        style = plan.styles[0].lora
        if cache is not None:
            return cache.bases(style, names, params.k, params.energy, device)
        return compute_bases(style, names, params.k, params.energy, device)
    weighted = [(p.lora, p.own) for p in plan.styles]
    if cache is not None:
        return cache.joint_bases(weighted, names, params.k, params.energy, device)
    return compute_joint_bases(weighted, names, params.k, params.energy, device)


def _content_bases(plan: FusionPlan, params: FuseParams, device, cache: BasisStore | None) -> list[dict]:
    """With ``chain``: each content's own bases (same k / energy) where a later content is projected off them."""
    out: list[dict] = [{} for _ in plan.contents]
    if not params.chain:
        return out
    for i, part in enumerate(plan.contents):
        names = [n for n in plan.projected if i in plan.members[n][0][:-1]]
        if names:
            provider = cache.bases if cache is not None else compute_bases
            out[i] = provider(part.lora, sorted(names), params.k, params.energy, device)
    return out


def _fuse(contents: list[Part], styles: list[Part], params: FuseParams, *, device=None,
          dtype: torch.dtype = torch.float16, out_device="cpu", cache: BasisStore | None = None,
          progress: Progress | None = None) -> FusedLora:
    """Fuse content and style LoRAs (see the module docstring).

    Args:
        contents, styles: the inputs (``parts_of``), read for one architecture
            (``formats.reader.load_pair``, ``cache.Caches.load_set``).
        params: the fusion parameters.
        device: where the math runs (None = CPU; "cuda" for a GPU).
        dtype: dtype of the fused factors (float16, bfloat16 or float32).
        out_device: where the fused factors are put.
        cache: keeps style bases between calls (``cache.Caches``): a new mu, per-block mu or
            weight then skips the SVD. Without one, bases are computed and dropped.
        progress: called with (modules done, modules total).

    Returns:
        FusedLora with rank sum r_s + sum r_c per fused module, scaling baked in. Each batch's
        factors are views of one buffer of its own, so memory is the output's size plus one batch.
        (One buffer per batch rather than one for all: a buffer of the whole output's size is a
        fresh mapping whose pages are all faulted in by the strided writes, which cost 4-5 s of a
        17-19 s FLUX rank-128 fusion on the 2-core CI machine; batch-sized buffers come from the
        allocator's pool and reuse the memory of earlier results; see README, Speed.)
    """
    device = resolve_device(device) if device is not None else None  # refuses meta, xla, absent GPUs
    out_device = resolve_device(out_device)
    plan = plan_set(contents, styles, params)
    arch = contents[0].lora.arch
    check_block_groups(arch, params)
    fused = FusedLora(arch, params, tuple(InputInfo.of(p.lora, p.weight) for p in contents),
                      tuple(InputInfo.of(p.lora, p.weight) for p in styles))
    for p in contents + styles:
        fused.warnings += [f"{p.label}: {w}" for w in p.lora.warnings]
    if params.chain:
        fused.warnings.append("chain: each content LoRA is also projected off the earlier ones' directions "
                              "(beyond the paper)")

    # with a store, every projected module's basis comes from it (computed there once per style
    # file(s) and k); without one, each batch's bases are computed and dropped
    protected = [n for n in plan.pairs if n in plan.projected]
    known = _style_bases(plan, protected, params, device, cache) if cache is not None and protected else None
    earlier = _content_bases(plan, params, device, cache)

    jobs = list(_jobs(plan))
    out_dev = torch.empty(0, dtype=dtype, device=out_device).device
    done = 0
    math_device = torch.device(device) if device is not None else torch.device("cpu")
    # Factors that the math does not change (style factors with a cached basis, content up
    # factors, unprojected pairs, passthrough) go from the inputs straight into the output where
    # inputs and output share the math device; elsewhere they are stacked in float32 there.
    direct = out_dev == math_device

    def factors(ts: list[torch.Tensor]):
        if direct and all(t.device == math_device for t in ts):
            return ts
        return stack(ts, device)

    def side(part: Part, chunk: list[str]) -> Piece:
        fs = [part.lora.modules[n].factors for n in chunk]
        up, down = factors([f.up for f in fs]), factors([f.down for f in fs])
        scale = torch.tensor([part.weight * f.scale for f in fs], device=math_device)
        if isinstance(up, list) and isinstance(down, list):  # the inputs themselves: their norms are kept
            return Piece(up, scale, down, torch.stack([f.up_norms() for f in fs]),
                         torch.stack([f.down_norms() for f in fs]))
        return Piece(up, scale, down)

    for origin, chunk, (m, n_in, rank) in jobs:
        g = len(chunk)
        buf = torch.empty(g * (m + n_in) * rank, dtype=dtype, device=out_dev)
        dst_up = buf[:g * m * rank].view(g, m, rank)
        dst_down = buf[g * m * rank:].view(g, rank, n_in)
        have_c, have_s = plan.members[chunk[0]]
        projected = chunk[0] in plan.projected
        c = plan.c.get(chunk[0], 0.0)
        pieces, paths, ks = [], [], [0] * g
        for j in have_s:
            pieces.append(side(plan.styles[j], chunk))
            paths.append(plan.styles[j].lora.path)
        content_pieces = [side(plan.contents[i], chunk) for i in have_c]
        if projected:
            bases = (known if known is not None else _style_bases(plan, chunk, params, device, None)) if have_s else None
            downs, ks = project_batch(plan, chunk, params, [p.down for p in content_pieces], bases, earlier,
                                      device, cache)
            content_pieces = [p if a is p.down else Piece(p.up, p.scale, a, p.up_norms)
                              for p, a in zip(content_pieces, downs)]
        pieces += content_pieces
        paths += [plan.contents[i].lora.path for i in have_c]
        write_balanced(dst_up, dst_down, pieces)
        check_written(chunk, dst_up, dst_down, pieces, tuple(paths))
        for idx, n in enumerate(chunk):
            bias = _bias(*[(plan.styles[j].weight, plan.styles[j].lora.modules[n].factors.bias) for j in have_s],
                         *[(plan.contents[i].weight, plan.contents[i].lora.modules[n].factors.bias) for i in have_c])
            k, cc = (ks[idx], c) if projected else (0, 0.0)
            if bias is not None:
                require_finite(n, {"bias": bias}, dtype=dtype, what="fused bias")
            fused.modules[n] = FusedModule(n, dst_up[idx], dst_down[idx],
                                           bias.to(out_device, dtype) if bias is not None else None, origin, k, cc)
        done += g
        if progress:
            progress(done, len(plan.pairs) + len(plan.content_only) + len(plan.style_only))

    by_role = {"content": plan.contents, "style": plan.styles}
    for mod, w, origin in plan.passthrough:
        src = next(p.lora for p in by_role[origin] if p.lora.modules.get(mod.name) is mod)
        weighted = weighted_passthrough(mod, w, src.path)
        require_finite(mod.name, weighted.tensors or {}, path=src.path, what=f"{mod.kind} module (weight {w:g})")
        fused.passthrough[mod.name] = weighted
        fused.warnings.append(f"{mod.name}: {mod.kind} module from the {origin} LoRA carried over unchanged")

    for part in contents + styles:
        for key, t in part.lora.extras.items():
            if key in fused.extras:
                fused.warnings.append(f"{key}: several LoRAs bundle it; the first one's is kept"
                                      if len(contents) + len(styles) > 2 else
                                      f"{key}: both LoRAs bundle it; the content LoRA's is kept")
                continue
            fused.extras[key] = t
    return fused
