"""Checks that a result is usable before it is written or applied: every value finite, and
representable in the dtype it is stored in (float16's largest value is 65504; a float32 value
beyond it becomes Inf when cast).

``merge.fuse`` checks each fused module as it is written (its output buffer is already in the
target dtype, so a float16 overflow shows as Inf there); ``require_finite`` is also what a
writer calls before casting factors to another dtype or after re-factoring them.
"""

from __future__ import annotations

import os

import torch

from ..errors import FormatError

OVERFLOW_HINT = ("An alpha, scale or weight in the LoRA is far outside the usual range (the file may be "
                 "damaged or made by a broken tool); lower the LoRA weight, or write the result in float32")


def dtype_label(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def all_finite(t: torch.Tensor) -> bool:
    """True if every value of ``t`` is finite (an empty tensor is).

    One float32 sum first: NaN and Inf propagate through addition, so a finite sum proves every
    value finite without the bool copy ``isfinite`` makes (3-20x faster on large fp16/fp32
    factors). Only a non-finite sum (some NaN/Inf, or finite values whose sum leaves float32's
    range) is checked value by value.
    """
    if t.numel() == 0:
        return True
    return bool(torch.isfinite(t.sum(dtype=torch.float32))) or bool(torch.isfinite(t).all())


def finite_per_module(x: torch.Tensor) -> torch.Tensor:
    """(G,) bool: is every value of module i of a (G, ...) batch finite? (as ``all_finite``)."""
    ok = torch.isfinite(x.flatten(1).sum(1, dtype=torch.float32))
    return ok if bool(ok.all()) else torch.isfinite(x).flatten(1).all(1)


def fits(t: torch.Tensor, dtype: torch.dtype) -> bool:
    """True if ``t`` is finite and every value is representable in floating ``dtype``."""
    if not all_finite(t):
        return False
    if t.numel() == 0 or not dtype.is_floating_point:
        return True
    return float(t.detach().abs().amax()) <= torch.finfo(dtype).max


def require_finite(module: str, tensors: dict[str, torch.Tensor], *, dtype: torch.dtype | None = None,
                   path: str | os.PathLike | None = None, what: str = "fused update") -> None:
    """Raise unless every tensor is finite and fits ``dtype`` (default: its own dtype).

    Args:
        module: the canonical module name (named in the error).
        tensors: role -> tensor (up, down, bias, ...), any dtype and device.
        dtype: the dtype the tensors will be stored in.
        path: the input file to blame, if one is known.

    Raises:
        FormatError: naming the module (and the file), saying which limit was passed.
    """
    for role, t in tensors.items():
        if t is None:
            continue
        if not all_finite(t):
            raise FormatError(f"the {what} is not finite (its {role} has Inf or NaN values, "
                              f"in {dtype_label(t.dtype)})", path=path, module=module, hint=OVERFLOW_HINT)
        if dtype is not None and not fits(t, dtype):
            raise FormatError(f"the {what} does not fit {dtype_label(dtype)} (its {role} has values beyond "
                              f"{torch.finfo(dtype).max:g})", path=path, module=module, hint=OVERFLOW_HINT)
