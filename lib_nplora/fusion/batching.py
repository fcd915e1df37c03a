"""Grouping modules of equal shape into bounded batches.

Stacking equal-shaped modules lets one QR / SVD / matmul call process many at once; bounding a
batch's float32 working set keeps peak memory a small fraction of the inputs and lets the
allocator reuse the same memory from batch to batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping

import torch

#: Float32 working-set budget of one batch, in bytes.
BATCH_BYTES = 24 << 20


def batches(names: Iterable[str], key: Callable[[str], Hashable], item_bytes: Callable[[str], int],
            budget: int = BATCH_BYTES) -> Iterator[tuple[Hashable, list[str]]]:
    """Yield (shape key, names) batches: equal keys together, each within ``budget`` bytes.

    Order is deterministic: groups in order of first appearance, names in input order.
    """
    groups: dict[Hashable, list[str]] = defaultdict(list)
    for n in names:
        groups[key(n)].append(n)
    for k, members in groups.items():
        per = max(1, item_bytes(members[0]))
        size = max(1, budget // per)
        for i in range(0, len(members), size):
            yield k, members[i:i + size]


def lowrank_shape(module) -> tuple[int, int, int]:
    """(out, in * kh * kw, rank) of a low-rank ``lora.LoraModule``'s factors."""
    f = module.factors
    return f.out_features, f.in_features, f.rank


def stacked_bytes(out: int, inn: int, rank: int) -> int:
    """Float32 working set of one stacked module: its up (out, rank) and down (rank, in), three
    times over (inputs, intermediates, results)."""
    return 4 * rank * (out + inn) * 3


def module_batches(names: Iterable[str], modules: Mapping, item_bytes: Callable[[int, int, int], int] = stacked_bytes,
                   budget: int = BATCH_BYTES) -> Iterator[tuple[tuple[int, int, int], list[str]]]:
    """``batches`` of low-rank modules of one LoRA with equal (out, in, rank).

    Args:
        modules: name -> ``LoraModule`` (a ``LoraSet.modules``).
        item_bytes: working set of one module from its (out, in, rank).
    """
    return batches(names, lambda n: lowrank_shape(modules[n]), lambda n: item_bytes(*lowrank_shape(modules[n])),
                   budget)


def pair_batches(names: Iterable[str], style: Mapping, content: Mapping, split: Callable[[str], Hashable] | None = None,
                 budget: int = BATCH_BYTES) -> Iterator[tuple[tuple, list[str]]]:
    """``batches`` of modules present in two LoRAs, with equal (out, in, style rank, content rank)
    and, when given, equal ``split(name)`` (appended to the key).

    The working set of a pair is that of one stacked module of rank r_style + r_content.
    """
    def key(n):
        fs, fc = style[n].factors, content[n].factors
        shape = (fs.out_features, fs.in_features, fs.rank, fc.rank)
        return shape + (split(n),) if split is not None else shape

    def nbytes(n):
        m, i, rs, rc = key(n)[:4]
        return stacked_bytes(m, i, rs + rc)

    return batches(names, key, nbytes, budget)


def stack(tensors: list[torch.Tensor] | torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    """Stack equal-shaped tensors into one float32 batch on ``device`` (a batch already stacked
    is only moved and converted where needed)."""
    out = tensors if isinstance(tensors, torch.Tensor) else torch.stack(tensors)
    return out.to(device=device, dtype=torch.float32, non_blocking=True)
