"""Run by ``test_e2e_comfyui.py`` with ComfyUI's Python, in the ComfyUI folder: the DiTs sampled
through ComfyUI's own model code with the NP-LoRA Loader's patches, against the dense formula.

For each architecture named on the command line it

1. writes a random-weight checkpoint of that DiT at its real width with only block 0 of each
   block list (``double_blocks``, ``single_blocks``, ``transformer_blocks``, ``layers``,
   ``blocks``; Lumina 2's refiners whole): the model ComfyUI's detection
   (``comfy.model_detection``) builds from the table's weights of those blocks, on the meta
   device, gives every key and shape; the values are seeded random numbers (weights scaled by
   1/sqrt(fan-in), biases small, 1-D scales near 1), float32;
2. loads it as the ``UNETLoader`` node does (``comfy.sd.load_diffusion_model``) and checks
   that NP-LoRA's ``arch_of`` names it;
3. writes a content and a style LoRA (kohya names, rank 4, a module on every table weight of
   those blocks, fused weights such as FLUX's ``qkv`` / ``linear1`` as one module) and runs the
   NP-LoRA Loader node (``NpLoraLoader.load``, model only: no CLIP) at mu 0.5 and 0;
4. samples each model the same way (``comfy.sample.sample``: seeded noise, 3 Euler steps, cfg 1,
   random text features of the DiT's text width): the base model, the Loader's model at mu 0.5
   and at 0, two stock ``LoraLoader`` patch sets (``comfy.sd.load_lora_for_models``) and the
   **reference**: the same checkpoint with every patched weight replaced by W + dW, dW the
   NP-LoRA formula computed here in float64 from the LoRA factors (``lora_factory.dense_fused``,
   per row slice of a fused weight; independent of the library), loaded again by ComfyUI.

Prints one JSON line per architecture: relative differences of the sampled latents
(``||a - b|| / ||b||``), the counts of patched and reference weights, ComfyUI's config class.

    python tests/e2e/comfyui_sampling.py <repository root> <temp folder> <arch> [<arch> ...]
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

import torch

from comfyui_keymaps import VARIANTS  # this folder (the script's own, first on sys.path)

#: Wan 14B is sampled as T2V (Wan2.1-T2V-14B, Wan2.2-T2V-A14B): the key-map check's variant, whose
#: table modules left out are the I2V superset's image cross-attention and image projection
WAN14B_T2V_LEFT_OUT, WAN14B_T2V_KEYS = VARIANTS["wan14b", "t2v"]

#: keys ComfyUI's detection (a125cd84) reads that are no LoRA target, hence not in the tables
DETECTION_KEYS = {
    "flux": {"double_blocks.0.img_attn.norm.key_norm.scale": (128,)},
    "chroma": {"double_blocks.0.img_attn.norm.key_norm.scale": (128,), "distilled_guidance_layer.norms.0.scale": (5120,)},
    "qwenimage": {"txt_norm.weight": (3584,)},
    "lumina2": {"noise_refiner.0.attention.k_norm.weight": (96,)},
    "wan1b": {"head.modulation": (1, 2, 1536), "patch_embedding.weight": (1536, 16, 1, 2, 2)},
    "wan5b": {"head.modulation": (1, 2, 3072), "patch_embedding.weight": (3072, 48, 1, 2, 2)},
    "wan14b": WAN14B_T2V_KEYS,
    # ComfyUIs with Z-Image and FLUX.2 configs (3cd7b32f): Z-Image by its width and pad tokens
    "zimage": {"noise_refiner.0.attention.k_norm.weight": (128,), "x_pad_token": (1, 3840), "cap_pad_token": (1, 3840)},
    "flux2": {"double_blocks.0.img_attn.norm.key_norm.scale": (128,)},
    # ComfyUIs with FLUX.2-klein (0ab8332b): the same FLUX.2 detection, the width from img_in / txt_in
    "flux2klein4b": {"double_blocks.0.img_attn.norm.key_norm.scale": (128,)},
    "flux2klein9b": {"double_blocks.0.img_attn.norm.key_norm.scale": (128,)},
}
#: table modules a sampled model lacks
LEFT_OUT = {"wan14b": WAN14B_T2V_LEFT_OUT}
#: the sampled latent (64 x 64 pixels) and the text features: (tokens, width), extra conditioning
LATENT = {"flux": (1, 16, 8, 8), "chroma": (1, 16, 8, 8), "qwenimage": (1, 16, 1, 8, 8), "lumina2": (1, 16, 8, 8),
          "wan1b": (1, 16, 1, 8, 8), "wan5b": (1, 48, 1, 4, 4), "wan14b": (1, 16, 1, 8, 8), "zimage": (1, 16, 8, 8),
          "flux2": (1, 128, 4, 4), "flux2klein4b": (1, 128, 4, 4), "flux2klein9b": (1, 128, 4, 4)}
TEXT = {"flux": 4096, "chroma": 4096, "qwenimage": 3584, "lumina2": 2304, "wan1b": 4096, "wan5b": 4096, "wan14b": 4096,
        "zimage": 2560, "flux2": 15360, "flux2klein4b": 7680, "flux2klein9b": 12288}
MU, C = 0.5, 0.5 / 1.5


def kept(arch: str, name: str) -> bool:
    """Whether a table row's ``name`` is a module of the sampled model (not in ``LEFT_OUT``)."""
    return not any(part in name for part in LEFT_OUT.get(arch, ()))


def random_checkpoint(arch: str, path: Path, seed: int = 0) -> dict:
    """Write ``path``: the reduced DiT's state dict (see the module docstring). Returns it."""
    import comfy.model_detection
    import lora_factory as lf

    meta = {r["name"].split(".", 1)[1] + ".weight": torch.empty(r["shape"], device="meta") for r in lf.table(arch)
            if r["name"].startswith("unet.") and ":" not in r["name"] and lf.in_first_blocks(r["name"].split(".", 1)[1])
            and kept(arch, r["name"])}
    meta.update({k: torch.empty(s, device="meta") for k, s in DETECTION_KEYS[arch].items()})
    config = comfy.model_detection.model_config_from_unet(meta, "")
    if config is None:
        raise RuntimeError(f"ComfyUI's detection found no model in the reduced {arch} checkpoint")
    shapes = {k[len("diffusion_model."):]: v.shape for k, v in config.get_model({}, device="meta").state_dict().items()
              if k.startswith("diffusion_model.")}
    sd = lf.random_weights(shapes, seed)
    write(sd, path)
    return sd


def write(sd: dict, path: Path) -> None:
    """A safetensors file, streamed tensor by tensor (``safetensors.torch.save_file`` holds a byte
    copy of the whole model: twice FLUX.2's 9 GB); read back by the safetensors library."""
    from lib_nplora.formats.safetensors_file import write_file

    write_file(path, sd, overwrite=True)


def sample(patcher, arch: str, cond: list, seed: int = 7) -> torch.Tensor:
    import comfy.sample

    latent = torch.zeros(LATENT[arch])
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(patcher, noise, 3, 1.0, "euler", "simple", cond, cond, latent, seed=seed).float()


def conditioning(arch: str) -> list:
    g = torch.Generator().manual_seed(11)
    extra = {}
    if arch in ("flux", "chroma") or arch.startswith("flux2"):  # Chroma's / FLUX.2's config is FLUX's:
        # it reads a pooled output, then ignores it
        extra = {"pooled_output": torch.randn(1, 768, generator=g), "guidance": 3.5}
    elif arch in ("lumina2", "zimage"):  # its model takes the caption's token count from the mask
        extra = {"attention_mask": torch.ones(1, 8, dtype=torch.long)}
    return [[torch.randn(1, 8, TEXT[arch], generator=g), extra]]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def run(arch: str, tmp: Path) -> dict:
    import comfy.model_management
    import comfy.sd
    import comfy.utils
    import folder_paths
    import lora_factory as lf
    from lib_nplora.comfy.models import arch_of
    from lib_nplora.comfy.nodes import NpLoraLoader, NpLoraSave

    t0 = time.monotonic()
    ckpt = tmp / f"{arch}-random.safetensors"
    base_sd = random_checkpoint(arch, ckpt)
    loras = tmp / "loras"
    loras.mkdir(exist_ok=True)
    # the only loras folder (the node's Save writes into it, never into the checkout's models/)
    folder_paths.folder_names_and_paths["loras"] = ([str(loras)], folder_paths.folder_names_and_paths["loras"][1])
    rows = [r for r in lf.first_block_rows(arch) if kept(arch, r["name"])]
    content = lf.make_lora(loras / f"{arch}_c.safetensors", arch, rows, rank=4, seed=1)
    style = lf.make_lora(loras / f"{arch}_s.safetensors", arch, rows, rank=4, seed=2)
    ref_path = tmp / f"{arch}-reference.safetensors"
    write(lf.reference_weights(arch, base_sd, rows, content, style, C, in_place=True), ref_path)
    del base_sd  # one model in memory at a time: the reference is sampled first, then the base's patch sets
    cond = conditioning(arch)
    out = {}
    reference = comfy.sd.load_diffusion_model(str(ref_path))
    out["reference"] = sample(reference, arch, cond)
    comfy.model_management.unload_all_models()
    del reference
    gc.collect()
    base = comfy.sd.load_diffusion_model(str(ckpt))

    def loader(mu):
        return NpLoraLoader().load(base, None, content=content.path.name, style=style.path.name, content_weight=1.0,
                                   style_weight=1.0, mu=mu, hard=False, k=0, scope="unet", method="nplora")[0]

    stacked = base
    for made in (content, style):
        lora = comfy.utils.load_torch_file(str(made.path), safe_load=True)
        stacked = comfy.sd.load_lora_for_models(stacked, None, lora, 1.0, 0.0)[0]
    fused, mu0 = loader(MU), loader(0.0)
    saved_name = NpLoraSave().save(f"{arch}_saved", False, content=content.path.name, style=style.path.name,
                                   content_weight=1.0, style_weight=1.0, mu=MU, hard=False, k=0, scope="unet",
                                   method="nplora")["result"][0]
    saved_sd = comfy.utils.load_torch_file(str(loras / saved_name), safe_load=True)
    saved = comfy.sd.load_lora_for_models(base, None, saved_sd, 1.0, 0.0)[0]
    for name, m in (("base", base), ("fused", fused), ("mu0", mu0), ("stacked", stacked), ("saved", saved)):
        out[name] = sample(m, arch, cond)
        comfy.model_management.unload_all_models()
    return {"arch": arch, "detected": arch_of(base), "comfy_config": type(base.model.model_config).__name__,
            "table_weights": len(rows), "fused_patched": len({k if isinstance(k, str) else k[0] for k in fused.patches}),
            "finite": all(bool(torch.isfinite(v).all()) for v in out.values()),
            "fused_vs_reference": rel(out["fused"], out["reference"]),
            "fused_vs_stacked": rel(out["fused"], out["stacked"]), "fused_vs_base": rel(out["fused"], out["base"]),
            "mu0_vs_stacked": rel(out["mu0"], out["stacked"]), "mu0_equal_stacked": bool(torch.equal(out["mu0"], out["stacked"])),
            "stacked_vs_base": rel(out["stacked"], out["base"]),
            "saved_vs_reference": rel(out["saved"], out["reference"]),
            "saved_dtypes": sorted({str(v.dtype) for k, v in saved_sd.items() if k.endswith("weight")}),
            "saved_modules": len({k.rsplit(".lora_", 1)[0] for k in saved_sd if ".lora_" in k}), "seconds": round(time.monotonic() - t0, 1)}


def main() -> None:
    root, tmp, archs = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    sys.path[:0] = [os.getcwd(), str(root), str(root / "tests")]  # ComfyUI's folder first
    import comfy.options

    comfy.options.enable_args_parsing()
    sys.argv[1:] = ["--cpu"]
    for arch in archs:
        try:
            row = run(arch, tmp)
        except Exception as e:  # one row saying why, then the next architecture
            import traceback

            row = {"arch": arch, "error": f"{type(e).__name__}: {e}"[:400], "trace": traceback.format_exc()[-2000:]}
        print(json.dumps(row), flush=True)
        for f in tmp.glob(f"{arch}-*.safetensors"):
            f.unlink()


if __name__ == "__main__":
    main()
