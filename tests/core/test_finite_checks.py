"""The finiteness checks' fast path (one float32 sum) gives the value-by-value answer, also where
the sum itself overflows float32 with finite values."""

import pytest
import torch

from lib_nplora.fusion.checks import all_finite, finite_per_module


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_all_finite_agrees_with_isfinite(dtype):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(64, 33, generator=g).to(dtype)
    assert all_finite(base) and all_finite(torch.empty(0, 3, dtype=dtype))
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = base.clone()
        t[17, 5] = bad
        assert not all_finite(t), bad
    t = base.clone()
    t[0, 0], t[1, 1] = float("inf"), -float("inf")  # the sum is NaN, not 0
    assert not all_finite(t)
    big = torch.full((8, 8), torch.finfo(dtype).max, dtype=dtype)  # finite; a float32 sum overflows
    assert bool(torch.isfinite(big).all()) and all_finite(big)


def test_finite_per_module_agrees_with_isfinite():
    x = torch.randn(5, 7, 3)
    x[3, 2, 1] = float("nan")
    assert finite_per_module(x).tolist() == [True, True, True, False, True]
    y = torch.full((3, 4, 4), torch.finfo(torch.float32).max)
    y[1, 0, 0] = float("inf")
    assert finite_per_module(y).tolist() == [True, False, True]
