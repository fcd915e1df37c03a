"""The content's projected down factors for one fusion, from the engine's own pieces.

NP-LoRA changes only the content's down factor of a paired module::

    A_c' (r_c, n) = A_c - c (A_c V_k) V_k^T         (fusion.linalg.project_out)

with V_k (n, kk) the style's basis from the shared cache (``cache.Caches.bases``: computed once per
style file and k, reused by every mu, as in the WebUI) and the pairing from ``fusion.merge.plan_fusion``
(which modules are projected, each one's c with per-block mu, the same errors). The ComfyUI host hands ComfyUI the style LoRA
unchanged and the content LoRA with these down factors, so ``up_c @ A_c'`` at strength wc plus the
style at strength ws is ``fuse``'s result, and mu = 0 (no module projected) is the stock LoRA stack.
"""

from __future__ import annotations

import torch

from ..cache import Caches
from ..fusion import linalg
from ..fusion.batching import pair_batches, stack
from ..fusion.merge import plan_fusion
from ..lora import LoraSet
from ..params import FuseParams


def projected_downs(content: LoraSet, style: LoraSet, params: FuseParams, caches: Caches,
                    device=None) -> tuple[dict[str, torch.Tensor], bool]:
    """(canonical name -> projected content down (r_c, n) float32 on the CPU, for every module the
    fusion projects (empty when none is: mu = 0, direct merge, a weight of 0); whether this call
    computed style bases (False: all came from ``caches``)). The result is kept in ``caches``.

    Raises:
        ArchitectureError, UnsupportedModuleError, ParameterError: as ``plan_fusion``.
    """
    plan = plan_fusion(content, style, params)
    names = sorted(plan.projected)
    if not names:
        return {}, False
    key = ("comfy-projected", content.sha256, content.arch, style.sha256, params.c, params.block_mu, params.k,
           params.energy, params.scope, params.method, str(device))

    computed = False

    def make():
        nonlocal computed
        misses = caches.stats().misses
        bases = caches.bases(style, names, params.k, params.energy, device)
        computed = caches.stats().misses > misses  # the style's entry was not kept: it was computed
        out: dict[str, torch.Tensor] = {}
        with linalg.float32_math():
            # one suppression strength per batch: per-block mu gives modules their group's c (plan.c)
            for _, chunk in pair_batches(names, style.modules, content.modules, split=plan.c.__getitem__):
                a = stack([content.modules[n].factors.down for n in chunk], device)   # (G, r_c, n)
                v = torch.stack([bases[n].v for n in chunk]).to(a.device)          # (G, n, kk)
                projected = linalg.project_out(a, v, plan.c[chunk[0]])
                out.update({n: projected[i].cpu() for i, n in enumerate(chunk)})
        return out, sum(t.numel() * t.element_size() for t in out.values())

    return caches.memo(key, make), computed
