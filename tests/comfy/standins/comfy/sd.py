"""Stand-in for ``comfy.sd.CLIP``: ``cond_stage_model`` (the text encoders), ``patcher`` (a
``ModelPatcher`` over it), ``clone()`` (a new CLIP sharing ``cond_stage_model`` with
``patcher.clone()``), ``add_patches(patches, strength_patch=1.0, strength_model=1.0)`` ->
``patcher.add_patches``."""

from __future__ import annotations

from .model_patcher import StandInModelPatcher


class StandInCLIP:
    def __init__(self, cond_stage_model):
        self.cond_stage_model = cond_stage_model
        self.patcher = StandInModelPatcher(cond_stage_model)

    def clone(self):
        n = StandInCLIP.__new__(StandInCLIP)
        n.cond_stage_model = self.cond_stage_model
        n.patcher = self.patcher.clone()
        return n

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        return self.patcher.add_patches(patches, strength_patch, strength_model)


CLIP = StandInCLIP
