import math

import pytest

from lib_nplora.errors import ParameterError
from lib_nplora.params import FuseParams


def test_defaults_are_the_papers():
    p = FuseParams()
    assert p.mu == 0.5 and math.isclose(p.c, 1 / 3) and p.k is None and p.scope == "unet"
    assert "full numerical rank" in p.k_policy


@pytest.mark.parametrize("kw,c", [({"mu": 0}, 0.0), ({"mu": 1}, 0.5), ({"mu": 10}, 10 / 11),
                                  ({"hard": True}, 1.0), ({"method": "direct", "mu": 3}, 0.0),
                                  ({"method": "direct", "hard": True}, 0.0)])
def test_c(kw, c):
    assert math.isclose(FuseParams(**kw).c, c)


@pytest.mark.parametrize("kw,match", [
    ({"mu": -0.1}, "mu must be between"), ({"mu": float("nan")}, "finite"), ({"mu": float("inf")}, "finite"),
    ({"mu": "abc"}, "number"), ({"k": 0}, "k must be between"), ({"k": -3}, "k must be between"),
    ({"k": 10 ** 9}, "k must be between"), ({"k": 2.5}, "whole number"), ({"k": True}, "whole number"),
    ({"energy": 0}, "energy"), ({"energy": 1.5}, "energy"), ({"k": 4, "energy": 0.9}, "either k or energy"),
    ({"content_weight": 1e9}, "content_weight"), ({"style_weight": float("-inf")}, "finite"),
    ({"scope": "vae"}, "scope"), ({"method": "ties"}, "method"), ({"hard": "yes"}, "hard"),
])
def test_bad_values_are_refused(kw, match):
    with pytest.raises(ParameterError, match=match):
        FuseParams(**kw)


def test_with_validates_and_to_dict():
    p = FuseParams().with_(mu=1.0, k=8)
    assert p.to_dict()["c"] == 0.5 and p.k == 8
    with pytest.raises(ParameterError):
        p.with_(mu=-1)
