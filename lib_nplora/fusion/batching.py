"""Grouping modules of equal shape into bounded batches.

Stacking equal-shaped modules lets one QR / SVD / matmul call process many at once; bounding a
batch's float32 working set keeps peak memory a small fraction of the inputs and lets the
allocator reuse the same memory from batch to batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator

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


def stack(tensors: list[torch.Tensor] | torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    """Stack equal-shaped tensors into one float32 batch on ``device`` (a batch already stacked
    is only moved and converted where needed)."""
    out = tensors if isinstance(tensors, torch.Tensor) else torch.stack(tensors)
    return out.to(device=device, dtype=torch.float32, non_blocking=True)
