"""Stand-in for ``comfy.model_patcher.ModelPatcher``: the patch list and how weights are computed.

Mirrored: ``ModelPatcher(model)``, ``.model``, ``.patches`` (weight key -> list of
``(strength_patch, patch, strength_model, offset, function)``); ``clone()`` (the same model, a copy
of every patch list); ``add_patches(patches, strength_patch=1.0, strength_model=1.0)``: a key is
a string or ``(key, offset[, function])``; kept only when ``key`` is in ``model.state_dict()``;
returns the kept keys. ``patched_weight(key)`` is the stand-in's name for what
``patch_weight_to_device`` computes: a float32 copy of the weight through ``comfy.lora.calculate_weight``
(per patch: ``weight.narrow(*offset)`` when there is an offset, the adapter's ``calculate_weight``
on it), then cast to the weight's dtype. The base weights are never changed.
"""

from __future__ import annotations

import torch


class StandInModelPatcher:
    def __init__(self, model):
        self.model = model
        self.patches: dict = {}

    def clone(self):
        n = StandInModelPatcher(self.model)
        n.patches = {k: list(v) for k, v in self.patches.items()}
        return n

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        p = set()
        model_sd = self.model.state_dict()
        for k in patches:
            offset = function = None
            if isinstance(k, str):
                key = k
            else:
                offset, key = k[1], k[0]
                if len(k) > 2:
                    function = k[2]
            if key in model_sd:
                p.add(k)
                self.patches.setdefault(key, []).append((strength_patch, patches[k], strength_model, offset, function))
        return list(p)

    def patched_weight(self, key: str) -> torch.Tensor:
        base = self.model.state_dict()[key]
        weight = base.to(torch.float32, copy=True)
        for strength, v, strength_model, offset, function in self.patches.get(key, []):
            function = function or (lambda a: a)
            target = weight.narrow(*offset) if offset is not None else weight
            if strength_model != 1.0:
                target *= strength_model
            v.calculate_weight(target, key, strength, strength_model, offset, function, torch.float32)
        return weight.to(base.dtype)


ModelPatcher = StandInModelPatcher
