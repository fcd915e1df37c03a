"""Stand-in for ``comfy.weight_adapter``: ``LoRAAdapter`` (``weight_adapter/lora.py``) and the
``adapters`` list ``comfy.lora.load_lora`` tries.

Mirrored: ``LoRAAdapter(loaded_keys, weights)`` with ``weights = (up, down, alpha, mid, dora_scale,
reshape)``; ``LoRAAdapter.load(x, lora, alpha, dora_scale, loaded_keys)`` for the kohya
(``.lora_up.weight`` / ``.lora_down.weight`` / ``.lora_mid.weight``) and PEFT (``.lora_B.weight`` /
``.lora_A.weight``) spellings, adding the keys it reads to ``loaded_keys`` (the caller's set) and
storing that same set; ``calculate_weight`` for a plain LoRA: ``alpha / rank`` (1.0 without alpha),
``weight += (strength * alpha) * (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)`` in the
intermediate dtype, cast to the weight's dtype. Not mirrored: LoHa, LoKr, GLoRA, OFT, BOFT, DoRA,
Tucker mids in ``calculate_weight`` (the real-ComfyUI test covers those paths).
"""

from __future__ import annotations

import torch


class WeightAdapterBase:
    name: str
    loaded_keys: set
    weights: tuple


class StandInLoRAAdapter(WeightAdapterBase):
    name = "lora"

    def __init__(self, loaded_keys, weights):
        self.loaded_keys = loaded_keys
        self.weights = weights

    @classmethod
    def load(cls, x, lora, alpha, dora_scale, loaded_keys=None):
        if loaded_keys is None:
            loaded_keys = set()
        for up_s, down_s, mid_s in ((".lora_up.weight", ".lora_down.weight", ".lora_mid.weight"),
                                    (".lora_B.weight", ".lora_A.weight", None)):
            a_name = x + up_s
            if a_name in lora:
                mid = None
                if mid_s is not None and x + mid_s in lora:
                    mid = lora[x + mid_s]
                    loaded_keys.add(x + mid_s)
                loaded_keys.update((a_name, x + down_s))
                return cls(loaded_keys, (lora[a_name], lora[x + down_s], alpha, mid, dora_scale, None))
        return None

    def calculate_weight(self, weight, key, strength, strength_model, offset, function,
                         intermediate_dtype=torch.float32, original_weight=None):
        up, down, alpha, mid, dora_scale, reshape = self.weights
        assert mid is None and dora_scale is None and reshape is None, "not mirrored by the stand-in"
        mat1 = up.to(weight.device, intermediate_dtype)
        mat2 = down.to(weight.device, intermediate_dtype)
        alpha = alpha / mat2.shape[0] if alpha is not None else 1.0
        diff = torch.mm(mat1.flatten(start_dim=1), mat2.flatten(start_dim=1)).reshape(weight.shape)
        weight += function(((strength * alpha) * diff).type(weight.dtype))
        return weight


LoRAAdapter = StandInLoRAAdapter
adapters = [StandInLoRAAdapter]
