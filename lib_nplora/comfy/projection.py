"""The contents' projected down factors for one fusion, from the engine (``fusion.merge.projected_contents``).

NP-LoRA changes only the content's down factor of a paired module::

    A_c' (r_c, n) = A_c - c (A_c V_k) V_k^T         (fusion.linalg.project_out)

with V_k (n, kk) the style's (or the joint styles') basis from the shared cache
(``cache.Caches.bases``: computed once per style file(s) and k, reused by every mu, as in the WebUI),
and the pairing, per-block c, ``chain`` and errors of ``fusion.merge.plan_set``: the engine's own
projection step (``merge.project_batch``), not a copy of it. The ComfyUI host hands ComfyUI the styles
unchanged and each content with these down factors, so ``up_ci @ A_ci'`` at strength w_ci plus the
styles at theirs is ``fuse_set``'s result, and mu = 0 (no module projected) is the stock LoRA stack.
"""

from __future__ import annotations

import torch

from ..cache import Caches
from ..fusion.merge import parts_of, projected_contents
from ..lora import LoraSet
from ..params import FuseParams


def projected_set(contents: list[tuple[LoraSet, float]], styles: list[tuple[LoraSet, float]], params: FuseParams,
                  caches: Caches, device=None) -> tuple[list[dict[str, torch.Tensor]], bool]:
    """(per content, canonical name -> projected down (r_c, n) float32 on the CPU, for every module
    where it is projected (all empty when none is: mu = 0, direct merge, weights of 0); whether this
    call computed style bases (False: all came from ``caches``)). The result is kept in ``caches``.

    Args:
        contents, styles: (LoRA, own weight) in order, as ``fuse_set`` takes them.

    Raises:
        ArchitectureError, UnsupportedModuleError, ParameterError: as ``merge.plan_set``.
    """
    c_parts, s_parts = parts_of(contents, styles, params)
    # what the result depends on: which inputs take part (weight != 0), the styles' weight ratios
    # (the joint basis), never the contents' weights (A_c' does not depend on them)
    key = ("comfy-projected", tuple((lo.sha256, lo.arch, p.weight != 0) for (lo, _), p in zip(contents, c_parts)),
           tuple((lo.sha256, p.own, p.weight != 0) for (lo, _), p in zip(styles, s_parts)), params.c, params.block_mu, params.k,
           params.energy, params.scope, params.method, params.chain, str(device))
    computed = False

    def make():
        nonlocal computed
        before = caches.bases_computed
        out = projected_contents(c_parts, s_parts, params, device=device, cache=caches)
        computed = caches.bases_computed > before  # some style basis was not kept: it was computed
        return out, sum(t.numel() * t.element_size() for d in out for t in d.values())

    return caches.memo(key, make), computed


def projected_downs(content: LoraSet, style: LoraSet, params: FuseParams, caches: Caches,
                    device=None) -> tuple[dict[str, torch.Tensor], bool]:
    """One content and one style: ``projected_set``'s single dict (canonical name -> (r_c, n))."""
    downs, computed = projected_set([(content, 1.0)], [(style, 1.0)], params, caches, device)
    return downs[0], computed
