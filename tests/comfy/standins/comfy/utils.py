"""Stand-in for ``comfy.utils``: ``load_torch_file(ckpt, safe_load=False, device=None)`` for a
``.safetensors`` file (the real one: ``safetensors.safe_open`` then ``get_tensor`` per key, on
the CPU by default)."""

from __future__ import annotations

from safetensors import safe_open


def load_torch_file(ckpt, safe_load=False, device=None, return_metadata=False):
    with safe_open(ckpt, framework="pt", device="cpu") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    return (sd, metadata) if return_metadata else sd
