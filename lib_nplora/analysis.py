"""How much the content update lives in the style's principal input subspace: the picture of
the method's premise, per module and per block.

Per module present in both LoRAs (all from the factors, never the dense matrix):

* ``overlap`` = ||dW_c V_k||_F / ||dW_c||_F: the share of the content update that NP-LoRA
  attenuates (by c) — 0 means the two do not interfere, 1 means the content lies entirely in
  the style's input directions;
* ``cosines``: cosines of the principal angles between the row spaces of dW_c and dW_s
  (singular values of V_c^T V_s), largest first;
* ``style_energy_kept``: share of the style update's sigma^2 energy in its top-k directions.

Block totals weight modules by their content energy (overlap) and style energy (energy kept).

Several inputs (``analyze_set``): the numbers above are of the joint content update (the
weighted sum of the contents) against the joint style update, and beside them, per content,
its overlap with the joint style subspace (``contents``) and, per pair of contents, how much
of the later one lies in the earlier one's principal input directions (``between``: what
``chain`` would attenuate). ``groups`` gives the overlap per block group of ``arch.blocks``
(the names per-block mu takes), with ``matters`` where it is at least ``MATTERS`` — the groups
where the choice of mu changes the result most.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field

import torch

from .arch import blocks as blockmod
from .devices import resolve_device
from .fusion.basis import compute_bases
from .fusion.batching import pair_batches, stack
from .fusion.merge import plan_fusion
from .lora import LoraModule, LoraSet, LowRank
from .params import FuseParams

#: a block group's overlap from which projection clearly matters there (``GroupAnalysis.matters``)
MATTERS = 0.2


@dataclass
class ModuleAnalysis:
    name: str
    block: str
    overlap: float
    cosines: list[float]
    style_energy_kept: float
    k: int
    style_rank: int
    content_rank: int
    projected: bool
    content_energy: float  # ||wc * dW_c||_F^2
    style_energy: float    # ||ws * dW_s||_F^2


@dataclass
class BlockAnalysis:
    block: str
    modules: int
    overlap: float
    max_cosine: float
    style_energy_kept: float
    projected: int = 0  # modules of the block that the fusion projects (0 for text encoders by default)


@dataclass
class GroupAnalysis:
    """Overlap in one block group of ``arch.blocks`` (a name ``mub=`` takes)."""

    group: str
    coarse: bool
    modules: int
    overlap: float
    matters: bool


@dataclass
class InputOverlap:
    """One content's overlap with the joint style subspace, or (``of`` set) with an earlier
    content's principal input directions."""

    content: str
    overlap: float
    of: str | None = None
    blocks: dict[str, float] = field(default_factory=dict)  # coarse group -> overlap


@dataclass
class Analysis:
    arch: str
    params: dict
    content: str
    style: str
    modules: list[ModuleAnalysis] = field(default_factory=list)
    blocks: list[BlockAnalysis] = field(default_factory=list)
    total: BlockAnalysis | None = None
    content_only: int = 0
    style_only: int = 0
    groups: list[GroupAnalysis] = field(default_factory=list)
    contents: list[InputOverlap] = field(default_factory=list)
    between: list[InputOverlap] = field(default_factory=list)

    def suggested_groups(self) -> list[str]:
        """The coarse groups where projection matters, highest overlap first."""
        return [g.group for g in sorted(self.groups, key=lambda g: -g.overlap) if g.coarse and g.matters]

    def to_dict(self) -> dict:
        return asdict(self)


def _run_paths() -> tuple[str, ...]:
    """Every numbered block list of ``arch.blocks``, in table order, once each."""
    out: dict[str, None] = {}
    for arch in blockmod.TABLES:
        out.update((r.path, None) for r in blockmod.runs(arch))
    return tuple(out)


_RUN_PATHS = _run_paths()
_SINGLE_RUNS = frozenset(r.path for a in blockmod.TABLES for r in blockmod.runs(a) if r.depth == 1)


def block_of(name: str, arch: str | None = None) -> str:
    """Block label of a canonical module name (``unet.input_blocks.4`` -> "input_blocks.4",
    ``unet.layers.7.attention.qkv:k`` -> "layers.7"): a numbered block of ``arch``'s block lists
    (``arch.blocks``; of any architecture's when None), "middle_block" for a list of one, else
    "unet (other)" or the text encoder's component."""
    component, path = name.split(".", 1)
    if component != "unet":
        return component
    parts = path.split(".")
    paths = _RUN_PATHS if arch is None else tuple(r.path for r in blockmod.runs(arch))
    if parts[0] in paths:
        if parts[0] in _SINGLE_RUNS:
            return parts[0]
        if len(parts) > 1 and parts[1].isdigit():
            return f"{parts[0]}.{parts[1]}"
    return "unet (other)"


_BLOCK_ORDER = _RUN_PATHS + ("unet (other)", "te", "te1", "te2", "te3", "te4")


def block_sort_key(block: str) -> tuple:
    """Model order: the block lists in ``arch.blocks`` order (input, middle, output; double,
    single; refiners, layers), each by index, then the rest of the denoiser, then text encoders."""
    head, _, idx = block.partition(".")
    return (_BLOCK_ORDER.index(head) if head in _BLOCK_ORDER else len(_BLOCK_ORDER),
            int(idx) if idx.isdigit() else -1, block)


def _aggregate(label: str, items: list[ModuleAnalysis]) -> BlockAnalysis:
    ce = sum(m.content_energy for m in items)
    inside = sum(m.content_energy * m.overlap ** 2 for m in items)
    se = sum(m.style_energy for m in items)
    kept = sum(m.style_energy * m.style_energy_kept for m in items)
    return BlockAnalysis(label, len(items), math.sqrt(inside / ce) if ce > 0 else 0.0,
                         max((m.cosines[0] for m in items if m.cosines), default=0.0),
                         kept / se if se > 0 else 0.0, sum(m.projected for m in items))


def _gram_energy(b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """||b @ a||_F^2 for batches b (G, m, r), a (G, r, n) via r x r Gram matrices."""
    return ((b.mT @ b) * (a @ a.mT)).sum(dim=(1, 2))


def analyze(content: LoraSet, style: LoraSet, params: FuseParams | None = None, *, device=None,
            cache=None, max_cosines: int = 16) -> Analysis:
    """Per-module and per-block analysis of a content/style pair (see module docstring).

    ``cache`` (``cache.Caches``) keeps the style bases, shared with ``fuse``.
    """
    params = params or FuseParams()
    device = resolve_device(device) if device is not None else None  # refuses meta, xla, absent GPUs
    plan = plan_fusion(content, style, params)
    provider = cache.bases if cache is not None else compute_bases
    names = plan.pairs
    chosen = provider(style, names, params.k, params.energy, device)
    full_s = chosen if params.k is None and params.energy is None else provider(style, names, None, None, device)
    full_c = compute_bases(content, names, None, None, device)
    cm, sm = content.modules, style.modules
    result = Analysis(content.arch, params.to_dict(), content.name, style.name,
                      content_only=len(plan.content_only), style_only=len(plan.style_only))

    wc, ws = params.content_weight, params.style_weight
    for _, chunk in pair_batches(names, sm, cm):
        b_c = stack([cm[n].factors.up for n in chunk], device)
        a_c = stack([cm[n].factors.down for n in chunk], device)
        b_s = stack([sm[n].factors.up for n in chunk], device)
        a_s = stack([sm[n].factors.down for n in chunk], device)
        v = torch.stack([chosen[n].v for n in chunk]).to(a_c.device)
        ce = _gram_energy(b_c, a_c)
        inside = _gram_energy(b_c, a_c @ v)
        se = _gram_energy(b_s, a_s)
        vc = torch.stack([full_c[n].v for n in chunk]).to(a_c.device)
        vs = torch.stack([full_s[n].v for n in chunk]).to(a_c.device)
        cos = torch.linalg.svdvals(vc.mT @ vs).clamp(0, 1)
        for i, n in enumerate(chunk):
            sc = (wc * cm[n].factors.scale) ** 2
            ss = (ws * sm[n].factors.scale) ** 2
            e = float(ce[i])
            rank_c, rank_s = full_c[n].rank, full_s[n].rank
            result.modules.append(ModuleAnalysis(
                name=n, block=block_of(n, content.arch),
                overlap=math.sqrt(min(1.0, float(inside[i]) / e)) if e > 0 else 0.0,
                cosines=[round(x, 6) for x in cos[i, :min(rank_c, rank_s, max_cosines)].tolist()],
                style_energy_kept=chosen[n].energy_kept, k=chosen[n].k,
                style_rank=rank_s, content_rank=rank_c, projected=n in plan.projected,
                content_energy=e * sc, style_energy=float(se[i]) * ss))
    by_block: dict[str, list[ModuleAnalysis]] = {}
    for m in result.modules:
        by_block.setdefault(m.block, []).append(m)
    result.blocks = [_aggregate(b, by_block[b]) for b in sorted(by_block, key=block_sort_key)]
    result.total = _aggregate("total", result.modules)
    result.groups = _groups(content.arch, result.modules)
    return result


def _groups(arch: str, modules: list[ModuleAnalysis]) -> list[GroupAnalysis]:
    """Energy-weighted overlap per coarse and fine block group, in model order."""
    members: dict[str, list[ModuleAnalysis]] = {}
    for m in modules:
        coarse, fine = blockmod.group_of(arch, m.name)
        for g in (coarse, fine):
            if g is not None:
                members.setdefault(g, []).append(m)
    order = blockmod.groups(arch) + blockmod.fine_groups(arch)
    out = []
    for g in sorted(members, key=lambda g: order.index(g) if g in order else len(order)):
        overlap = _aggregate(g, members[g]).overlap
        out.append(GroupAnalysis(g, g in blockmod.groups(arch), len(members[g]), overlap, overlap >= MATTERS))
    return out


def joint_lora(parts: list[tuple[LoraSet, float]], label: str) -> LoraSet:
    """Several LoRAs of one architecture as one: per module the weighted sum of those holding it,
    as stacked factors [w_1 s_1 B_1, ...] @ [A_1; ...] (float32; scale 1). Non-low-rank modules are
    left out. Its ``sha256`` identifies the inputs and weights (the basis cache keys on it)."""
    if len(parts) == 1 and parts[0][1] == 1.0:
        return parts[0][0]
    names: dict[str, None] = {}
    for lora, _ in parts:
        names.update((n, None) for n, m in lora.modules.items() if m.is_lowrank)
    modules = {}
    for n in names:
        held = [(lora.modules[n].factors, w) for lora, w in parts if n in lora.modules and lora.modules[n].is_lowrank]
        up = torch.cat([f.up.float() * (w * f.scale) for f, w in held], dim=1)
        down = torch.cat([f.down.float() for f, _ in held], dim=0)
        modules[n] = LoraModule(n, "lora", LowRank(up, down))
    key = "|".join(f"{lora.sha256}*{w!r}" for lora, w in parts)
    first = parts[0][0]
    return LoraSet("", label, first.arch, first.arch_candidates, "joint", {}, modules,
                   sha256=hashlib.sha256(key.encode()).hexdigest())


def analyze_set(contents: list[tuple[LoraSet, float]], styles: list[tuple[LoraSet, float]],
                params: FuseParams | None = None, *, device=None, cache=None) -> Analysis:
    """``analyze`` for several contents and styles (see the module docstring): one of each with
    weight 1 is ``analyze`` itself."""
    params = params or FuseParams()
    contents = [(lo, w) for lo, w in contents if w != 0] or contents[:1]
    styles = [(lo, w) for lo, w in styles if w != 0] or styles[:1]
    label = " + ".join
    style = joint_lora(styles, label(lo.name for lo, _ in styles))
    content = joint_lora(contents, label(lo.name for lo, _ in contents))
    result = analyze(content, style, params, device=device, cache=cache)
    if len(contents) == 1 and len(styles) == 1:
        return result
    unweighted = params.with_(content_weight=1.0, style_weight=1.0)

    def summary(c: LoraSet, s: LoraSet, of: str | None) -> InputOverlap:
        a = analyze(c, s, unweighted, device=device, cache=cache)
        coarse = {g.group: g.overlap for g in a.groups if g.coarse}
        return InputOverlap(c.name, a.total.overlap if a.total else 0.0, of, coarse)

    result.contents = [summary(lo, style, None) for lo, _ in contents]
    result.between = [summary(later, earlier, earlier.name) for i, (earlier, _) in enumerate(contents)
                      for later, _ in contents[i + 1:]]
    return result
