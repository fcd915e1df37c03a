"""Build small real torch module trees at given dotted paths (for stand-in models)."""

from __future__ import annotations

import torch


def put(root: torch.nn.Module, path: str, module: torch.nn.Module) -> torch.nn.Module:
    """Place ``module`` at ``root.<path>``, creating empty parent modules as needed."""
    parts = path.split(".")
    node = root
    for part in parts[:-1]:
        child = node._modules.get(part)
        if child is None:
            child = torch.nn.Module()
            node.add_module(part, child)
        node = child
    node.add_module(parts[-1], module)
    return module


def layer(kind: str, shape, seed: int) -> torch.nn.Module:
    """A Linear (out, in), Conv2d (out, in, kh, kw) or LayerNorm (n,) with seeded random weights."""
    g = torch.Generator().manual_seed(seed)
    if kind == "linear":
        m = torch.nn.Linear(shape[1], shape[0])
    elif kind == "conv":
        m = torch.nn.Conv2d(shape[1], shape[0], kernel_size=tuple(shape[2:4]), padding=shape[2] // 2)
    elif kind == "norm":
        m = torch.nn.LayerNorm(shape[0])
    else:
        raise ValueError(kind)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return m


def tree(rows, prefix_map) -> torch.nn.Module:
    """A module tree with one layer per arch-table row; ``prefix_map(canonical) -> path`` or None."""
    root = torch.nn.Module()
    for i, row in enumerate(rows):
        path = prefix_map(row["name"])
        if path is not None:
            put(root, path, layer(row["kind"], row["shape"], seed=1000 + i))
    return root
