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
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from .devices import resolve_device
from .fusion.basis import compute_bases
from .fusion.batching import pair_batches, stack
from .fusion.merge import plan_fusion
from .lora import LoraSet
from .params import FuseParams


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

    def to_dict(self) -> dict:
        return asdict(self)


def block_of(name: str) -> str:
    """Block label of a canonical module name (``unet.input_blocks.4`` -> "input_blocks.4")."""
    component, path = name.split(".", 1)
    if component != "unet":
        return component
    parts = path.split(".")
    if parts[0] in ("input_blocks", "output_blocks", "double_blocks", "single_blocks"):
        return f"{parts[0]}.{parts[1]}"
    if parts[0] == "middle_block":
        return "middle_block"
    return "unet (other)"


_BLOCK_ORDER = ("input_blocks", "middle_block", "output_blocks", "double_blocks", "single_blocks", "unet (other)",
                "te", "te1", "te2", "te3")


def block_sort_key(block: str) -> tuple:
    """Model order: input, middle, output (or double, single) blocks by index, then text encoders."""
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
                name=n, block=block_of(n),
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
    return result
