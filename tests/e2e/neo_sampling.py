"""Run by ``test_e2e_neo_keymaps.py`` with Forge Neo's Python, in the Neo folder: the DiTs Neo runs,
sampled through Neo's own model classes with NP-LoRA's fused LoRA patched in by Neo's own LoRA code,
against the dense formula.

For each of Z-Image, Qwen-Image, Chroma, Lumina 2, Wan 1.3B and FLUX.1 it

1. builds Neo's model class (``tools/check_host_layouts.py``'s ``NEO`` configs: the ones its
   detection builds) at the real width with one block per block list (Z-Image / Lumina 2 keep
   their two refiners each), with seeded random weights (scaled by 1/sqrt(fan-in); biases small,
   1-D scales near 1), float32, wrapped in Neo's ``KModel`` (``backend.modules.k_model``) with a
   flow prediction (``PredictionFlux(mu=1.0)``, as its FLUX and Chroma engines make it);
2. writes a content and a style LoRA (kohya names, rank 4, a module on every table weight of the
   kept blocks), fuses them at mu 0.5 and turns the result into the state dict the Forge Neo
   adapter hands Neo (``formats.writer.to_state_dict``, as ``ForgeNeoAdapter.state_for``);
3. does with it what Neo's ``sd_forge_lora/networks.py`` ``load_lora_for_models`` does (its
   ``model_lora_keys_unet``, ``convert_z_image_lora`` where the key map has Z-Image's final
   layer, ``load_lora``, the mismatch count, ``ModelPatcher.add_patches``), then
   ``refresh_loras`` (Neo's ``LoraLoader.refresh``: the patches merged into the weights, as for
   every generation);
4. samples (3 Euler steps of ``KModel.apply_model``, seeded noise, random text features) the base
   model, the patched one, the same with the two input files through the same path (stacked),
   and the **reference**: the base weights with every table weight replaced by W + dW, dW the
   NP-LoRA formula computed here in float64 (``lora_factory.dense_fused``, per row slice of a
   fused weight), independent of the library and of Neo's LoRA code; then ``refresh_loras``
   with no patches must restore every weight bit for bit.

Prints one JSON line per model (relative differences ``||a - b|| / ||b||`` of the samples).

    python tests/e2e/neo_sampling.py <repository root> <temp folder>
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

#: arch -> (Neo's huggingface_repo for it, the config fields that set the number of blocks)
MODELS = {"zimage": ("Tongyi-MAI/Z-Image-Turbo", {"n_layers": 1}),
          "qwenimage": ("Qwen/Qwen-Image", {"num_layers": 1}),
          "chroma": ("Chroma", {"depth": 1, "depth_single_blocks": 1}),
          "lumina2": ("neta-art/Neta-Lumina", {"n_layers": 1}),
          "wan1b": ("Wan-AI/Wan2.1-T2V-14B", {"num_layers": 1}),
          "flux": ("black-forest-labs/FLUX.1-dev", {"depth": 1, "depth_single_blocks": 1})}
#: the latent (64 x 64 pixels), the text width and the model's extra inputs
LATENT = {"zimage": (1, 16, 8, 8), "qwenimage": (1, 16, 1, 8, 8), "chroma": (1, 16, 8, 8), "lumina2": (1, 16, 8, 8),
          "wan1b": (1, 16, 1, 8, 8), "flux": (1, 16, 8, 8)}
TEXT = {"zimage": 2560, "qwenimage": 3584, "chroma": 4096, "lumina2": 2304, "wan1b": 4096, "flux": 4096}
C = 0.5 / 1.5


def extra_inputs(arch: str, g: torch.Generator) -> dict:
    if arch in ("zimage", "lumina2"):
        return {"num_tokens": 8}  # all 8 caption tokens real: no mask
    if arch == "flux":
        return {"y": torch.randn(1, 768, generator=g), "guidance": torch.tensor([3.5])}
    if arch == "chroma":
        return {"guidance": torch.tensor([0.0])}
    return {}


@torch.no_grad()
def sample(kmodel, arch: str, seed: int = 7) -> torch.Tensor:
    """3 Euler steps from sigma 1 to 0 through ``KModel.apply_model`` (seeded noise and text)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(LATENT[arch], generator=g)
    context = torch.randn(1, 8, TEXT[arch], generator=g)
    extra = extra_inputs(arch, g)
    sigmas = torch.tensor([1.0, 0.66, 0.33, 0.0])
    for i in range(3):
        s = sigmas[i].reshape(1)
        denoised = kmodel.apply_model(x, s, c_crossattn=context, **extra)
        x = x + (x - denoised) / s * (sigmas[i + 1] - sigmas[i])
    return x.float()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def build_dit(arch: str, layouts, flux, operations=None):
    """Neo's class for ``arch`` (one block per list, see ``MODELS``) on the meta device, then empty
    CPU tensors; under ``operations`` (a ``using_forge_operations(...)`` context) when given.
    Returns (model, its config)."""
    import contextlib

    module, cls, cfg = (flux if arch == "flux" else layouts.NEO[arch])
    cfg = dict(cfg, **MODELS[arch][1])
    with operations if operations is not None else contextlib.nullcontext():
        with torch.device("meta"):
            dit = getattr(importlib.import_module(module), cls)(**cfg)
    return dit, cfg


def wrap(dit, arch: str, cfg: dict, storage_dtype=torch.float32, computation_dtype=torch.float32):
    """``dit`` as Neo's loader leaves it (config, storage / computation dtype), in its ``KModel``
    with a flow prediction and a ``ModelPatcher``: (kmodel, patcher)."""
    from backend.modules.k_model import KModel
    from backend.modules.k_prediction import PredictionFlux
    from backend.patcher.base import ModelPatcher

    if not hasattr(dit, "config"):
        dit.config = dict(cfg)
    dit.storage_dtype, dit.computation_dtype = storage_dtype, computation_dtype  # as Neo's loader sets them
    kmodel = KModel(dit, None, k_predictor=PredictionFlux(mu=1.0),
                    config=SimpleNamespace(huggingface_repo=MODELS[arch][0]))
    return kmodel, ModelPatcher(kmodel, torch.device("cpu"), torch.device("cpu"))


def neo_load(patcher, lora: dict, filename: str, online_mode: bool = False):
    """What Neo's ``networks.load_lora_for_models`` does with the UNet (no CLIP here): its key map,
    the Z-Image conversion, ``load_lora``, the mismatch rule, ``add_patches`` on a clone.
    Returns (clone, unmatched keys, skipped patches, weights patched)."""
    from backend.patcher.lora import load_lora, model_lora_keys_unet

    keys = model_lora_keys_unet(patcher.model, {})
    if "diffusion_model.final_layer.adaLN_modulation.1" in keys:
        from backend.nn._z_lora import convert_z_image_lora
        lora = convert_z_image_lora(lora)
    patches, unmatched = load_lora(lora, keys)
    if len(unmatched) / len(lora) > 0.5:
        raise RuntimeError(f"Neo: LoRA mismatch for {filename}")
    new = patcher.clone()
    loaded = new.add_patches(filename=filename, patches=patches, strength_patch=1.0, online_mode=online_mode)
    return new, len(unmatched), len(patches) - len(loaded), len({k if isinstance(k, str) else k[0] for k in loaded})


def fused_pair(arch: str, tmp: Path):
    """Content and style LoRAs (kohya, rank 4, every table weight of the kept blocks) and the state
    dict the Forge Neo adapter hands Neo for their mu 0.5 fusion: (rows, content, style, state)."""
    import lora_factory as lf
    from lib_nplora.cache import Caches
    from lib_nplora.formats.writer import to_state_dict
    from lib_nplora.fusion.merge import fuse
    from lib_nplora.params import FuseParams

    rows = lf.first_block_rows(arch)
    c_path, s_path = tmp / f"{arch}_c.safetensors", tmp / f"{arch}_s.safetensors"
    content_truth = lf.make_lora(c_path, arch, rows, rank=4, seed=1)
    style_truth = lf.make_lora(s_path, arch, rows, rank=4, seed=2)
    content, style = Caches().load_pair(c_path, s_path, arch)
    fused_state, _ = to_state_dict(fuse(content, style, FuseParams(mu=0.5), dtype=torch.float32))
    return rows, content_truth, style_truth, fused_state


def main() -> None:
    root, tmp = Path(sys.argv[1]), Path(sys.argv[2])
    import neo_keymaps

    layouts = neo_keymaps.neo_imports(root)
    import lora_factory as lf

    for arch in MODELS:
        t0 = time.monotonic()
        dit, cfg = build_dit(arch, layouts, neo_keymaps.FLUX)
        dit = dit.to_empty(device="cpu")
        floats = {k: tuple(v.shape) for k, v in dit.state_dict().items() if v.is_floating_point()}
        dit.load_state_dict(lf.random_weights(floats), strict=False)
        kmodel, patcher = wrap(dit, arch, cfg)
        base_sd = {k: v.clone() for k, v in dit.state_dict().items()}
        rows, content_truth, style_truth, fused_state = fused_pair(arch, tmp)
        c_path, s_path = content_truth.path, style_truth.path

        from safetensors.torch import load_file

        out, counts = {}, {}
        out["base"] = sample(kmodel, arch)
        fused, unmatched, skipped, weights = neo_load(patcher, fused_state, "nplora:test")
        counts.update(fused_unmatched=unmatched, fused_skipped=skipped, fused_weights=weights)
        fused.refresh_loras()
        out["fused"] = sample(kmodel, arch)
        stacked, *_ = neo_load(patcher, load_file(str(c_path)), "content")
        stacked, *_ = neo_load(stacked, load_file(str(s_path)), "style")
        stacked.refresh_loras()
        out["stacked"] = sample(kmodel, arch)
        patcher.refresh_loras()  # no LoRA: Neo restores its backup
        restored = all(torch.equal(v, base_sd[k]) for k, v in dit.state_dict().items())
        out["base_again"] = sample(kmodel, arch)

        dit.load_state_dict(lf.reference_weights(arch, base_sd, rows, content_truth, style_truth, C))
        out["reference"] = sample(kmodel, arch)
        print(json.dumps({"arch": arch, "table_weights": len(rows), **counts,
                          "finite": all(bool(torch.isfinite(v).all()) for v in out.values()),
                          "fused_vs_reference": rel(out["fused"], out["reference"]),
                          "fused_vs_stacked": rel(out["fused"], out["stacked"]),
                          "stacked_vs_base": rel(out["stacked"], out["base"]),
                          "restored": restored, "base_again_equal": bool(torch.equal(out["base_again"], out["base"])),
                          "seconds": round(time.monotonic() - t0, 1)}), flush=True)
        for p in (c_path, s_path):
            p.unlink()
        del dit, kmodel, patcher, fused, stacked, base_sd


if __name__ == "__main__":
    main()
