"""Check the architecture tables against the model classes of a real ComfyUI or Forge Neo checkout.

For each model the host runs, its own model class is instantiated on the meta device (the
config its own model detection uses) and every table weight must exist in the model's
``diffusion_model.`` state dict under the table's canonical path with the same shape; for
ComfyUI, its own ``comfy.lora.model_lora_keys_unet`` must also map the key NP-LoRA writes
(``lora_unet_<flat path>``) to that weight. Prints one line per model; exit status 1 on any miss.

Developer tool, not a test (it needs the host's own Python environment). Run with the host's
Python, from anywhere:
    /path/to/comfyui-venv/bin/python tools/check_host_layouts.py --comfyui /path/to/ComfyUI
    /path/to/neo-venv/bin/python tools/check_host_layouts.py --neo /path/to/forge-neo
(Forge Neo's backend imports gguf and einops; a venv with torch, those two and the checkout's
requirements is enough.)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from pathlib import Path

TABLES = Path(__file__).resolve().parent.parent / "lib_nplora" / "arch" / "tables"

_BFL = dict(context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38,
            axes_dim=[16, 56, 56], theta=10000, qkv_bias=True, patch_size=2)
_CHROMA = dict(_BFL, in_channels=64, out_channels=64, in_dim=64, out_dim=3072, hidden_dim=5120, n_layers=5)


def _wan(dim, ffn_dim, num_layers, in_dim, out_dim, model_type):
    """The Wan config both hosts' detection builds from a checkpoint (model_detection.py /
    huggingface_guess/detection.py, "head.modulation" branch)."""
    return dict(image_model="wan2.1", dim=dim, out_dim=out_dim, num_heads=dim // 128, ffn_dim=ffn_dim,
                num_layers=num_layers, patch_size=(1, 2, 2), freq_dim=256, window_size=(-1, -1), qk_norm=True,
                cross_attn_norm=True, eps=1e-6, in_dim=in_dim, model_type=model_type)


_WAN14B = _wan(5120, 13824, 40, 36, 16, "i2v")  # Wan2.1-I2V-14B: the superset table
_WAN5B = _wan(3072, 14336, 30, 48, 48, "t2v")  # Wan2.2-TI2V-5B
_WAN1B = _wan(1536, 8960, 30, 16, 16, "t2v")  # Wan2.1-T2V-1.3B


def _mmdit(hidden, pos_embed_max_size, attn2_layers):
    """The SD3 config ComfyUI's detection builds (model_detection.py, "mmdit model" branch)."""
    return dict(in_channels=16, patch_size=2, out_channels=16, depth=hidden // 64, input_size=None,
                adm_in_channels=2048, context_embedder_config={"target": "torch.nn.Linear", "params": {
                    "in_features": 4096, "out_features": hidden}},
                num_patches=pos_embed_max_size ** 2, pos_embed_max_size=pos_embed_max_size, qk_norm="rms",
                pos_embed_scaling_factor=None, x_block_self_attn_layers=list(attn2_layers))

#: Lumina-Image-2.0 as ComfyUI's detection builds it ("cap_embedder.1.weight" branch)
_LUMINA2 = dict(patch_size=2, in_channels=16, dim=2304, cap_feat_dim=2304, n_layers=26, n_heads=24, n_kv_heads=8,
                qk_norm=True, axes_dims=[32, 32, 32], axes_lens=[300, 512, 512])

#: FLUX.2-dev and klein as ComfyUI's detection builds them (783545f6, v0.33.0, the "flux2" branch:
#: fixed fields, then hidden size, text width and block counts from the checkpoint's weights)
_FLUX2 = dict(image_model="flux2", axes_dim=[32, 32, 32, 32], mlp_ratio=3.0, theta=2000, out_channels=128,
              global_modulation=True, mlp_silu_act=True, qkv_bias=False, ops_bias=False, default_ref_method="index",
              ref_index_scale=10.0, txt_ids_dims=[3], in_channels=128, patch_size=1, vec_in_dim=None, yak_mlp=False,
              txt_norm=False)


def _flux2(hidden, context, depth, single, guidance):
    return dict(_FLUX2, hidden_size=hidden, num_heads=hidden // 128, context_in_dim=context, depth=depth,
                depth_single_blocks=single, guidance_embed=guidance)


#: what later revisions' detection (783545f6) also sets for FLUX.1 and Chroma, given where their
#: params classes have the field (0.3.64's do not)
_LATER_FLUX_FIELDS = dict(txt_ids_dims=[], vec_in_dim=None)

#: ComfyUI: arch -> (supported_models class, unet_config as comfy/model_detection.py builds it);
#: a class the checkout lacks (ZImage, Flux2 before late 2025) is reported and skipped
COMFY = {
    "flux": ("Flux", dict(_BFL, image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768,
                          guidance_embed=True)),
    "chroma": ("Chroma", dict(_CHROMA, image_model="chroma")),
    "qwenimage": ("QwenImage", {"image_model": "qwen_image"}),
    "wan14b": ("WAN21_I2V", _WAN14B),
    "wan5b": ("WAN22_T2V", _WAN5B),
    "wan1b": ("WAN21_T2V", _WAN1B),
    "sd35l": ("SD3", _mmdit(2432, 192, ())),
    "sd35m": ("SD3", _mmdit(1536, 384, range(13))),
    "lumina2": ("Lumina2", dict(_LUMINA2, image_model="lumina2")),
    "hidream": ("HiDream", dict(
        image_model="hidream", attention_head_dim=128, axes_dims_rope=[64, 32, 32], caption_channels=[4096, 4096],
        max_resolution=[128, 128], in_channels=16, llama_layers=list(range(32)) + [31] * 16, num_attention_heads=20,
        num_routed_experts=4, num_activated_experts=2, num_layers=16, num_single_layers=32, out_channels=16,
        patch_size=2, text_emb_dim=2048)),
    "zimage": ("ZImage", dict(
        image_model="lumina2", patch_size=2, in_channels=16, dim=3840, cap_feat_dim=2560, n_layers=30, qk_norm=True,
        n_heads=30, n_kv_heads=30, axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512], rope_theta=256.0,
        ffn_dim_multiplier=8.0 / 3.0, z_image_modulation=True, time_scale=1000.0, pad_tokens_multiple=32)),
    "flux2": ("Flux2", _flux2(6144, 15360, 8, 48, True)),
    "flux2klein4b": ("Flux2", _flux2(3072, 7680, 5, 20, False)),
    "flux2klein9b": ("Flux2", _flux2(4096, 12288, 8, 24, False)),
}
#: Forge Neo: arch -> (module, class, config as modules_forge/packages/huggingface_guess/detection.py builds it)
NEO = {
    "zimage": ("backend.nn.lumina", "NextDiT", dict(
        patch_size=2, in_channels=16, dim=3840, cap_feat_dim=2560, n_layers=30, qk_norm=True, n_heads=30,
        n_kv_heads=30, axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512], rope_theta=256.0,
        ffn_dim_multiplier=8.0 / 3.0, z_image_modulation=True, time_scale=1000.0)),
    "qwenimage": ("backend.nn.qwen", "QwenImageTransformer2DModel", dict(
        patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=3584)),
    "chroma": ("backend.nn.chroma", "IntegratedChromaTransformer2DModel", _CHROMA),
    # Forge Neo lists Wan 2.1 T2V / I2V (huggingface_guess/model_list.py); not the 5B (Wan 2.2 latent)
    "wan14b": ("backend.nn.wan", "WanModel", {k: v for k, v in _WAN14B.items() if k != "image_model"}),
    # Forge Neo's detection adds rope_theta and ffn_dim_multiplier=4.0 for Lumina 2
    "lumina2": ("backend.nn.lumina", "NextDiT", dict(_LUMINA2, rope_theta=10000.0, ffn_dim_multiplier=4.0)),
    "wan1b": ("backend.nn.wan", "WanModel", {k: v for k, v in _WAN1B.items() if k != "image_model"}),
}


#: weights a host's class holds that no LoRA can target, left out of the tables on purpose:
#: HiDream's MoE router gates (a bare parameter in diffusers' MoEGate, so PEFT cannot wrap them)
NOT_LORA_TARGETS = {"hidream": (".ff_i.gate",)}


def table_weights(arch: str) -> dict[str, list[int]]:
    rows = json.loads((TABLES / f"{arch}.json").read_text())["modules"]
    return {r["name"][len("unet."):]: r["shape"] for r in rows if r["name"].startswith("unet.") and ":" not in r["name"]}


def compare(label: str, arch: str, model_weights: dict[str, list[int]], key_map: dict | None = None) -> int:
    table = table_weights(arch)
    bad = [p for p, shape in table.items() if model_weights.get(p) != shape]
    unmapped = [] if key_map is None else [
        p for p in table if key_map.get("lora_unet_" + p.replace(".", "_")) != f"diffusion_model.{p}.weight"]
    skipped = [p for p in model_weights if p not in table and p.endswith(NOT_LORA_TARGETS.get(arch, ()))]
    extra = sorted(set(model_weights) - set(table) - set(skipped))
    print(f"{label} {arch}: {len(table)} table weights, {len(bad)} missing or with another shape"
          + ("" if key_map is None else f", {len(unmapped)} not mapped from lora_unet_<flat path>")
          + f"; the model has {len(model_weights)} linear/conv weights, {len(extra)} not in the table"
          + (f" (+ {len(skipped)} no LoRA targets: {', '.join(NOT_LORA_TARGETS[arch])})" if skipped else "")
          + (f" (first: {(bad + unmapped + extra)[0]})" if bad or unmapped or extra else ""))
    return len(bad) + len(unmapped) + len(extra)


def weights_2d(state_dict, prefix: str = "") -> dict[str, list[int]]:
    """Linear (2-D) and Conv2d (4-D) weights: what the tables list (norms are 1-D, Conv3d 5-D)."""
    return {k[len(prefix):-len(".weight")]: list(v.shape) for k, v in state_dict.items()
            if k.startswith(prefix) and k.endswith(".weight") and v.dim() in (2, 4)}


def check_comfyui(folder: str) -> int:
    sys.path.insert(0, folder)
    import torch

    import comfy.options
    comfy.options.enable_args_parsing()
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.cli_args  # noqa: F401  (parses --cpu)
    import comfy.lora
    import comfy.supported_models as sm

    import comfy.ldm.chroma.model
    import comfy.ldm.flux.model

    failures = 0
    for arch, (cls, unet_config) in COMFY.items():
        if not hasattr(sm, cls):
            print(f"ComfyUI {arch}: this checkout has no {cls} config, skipped")
            continue
        unet_config = dict(unet_config)
        if arch in ("flux", "chroma"):
            params = comfy.ldm.flux.model.FluxParams if arch == "flux" else comfy.ldm.chroma.model.ChromaParams
            fields = {f.name for f in dataclasses.fields(params)}
            unet_config.update({k: v for k, v in _LATER_FLUX_FIELDS.items() if k in fields and k not in unet_config})
        model = getattr(sm, cls)(unet_config).get_model({}, device=torch.device("meta"))
        key_map = comfy.lora.model_lora_keys_unet(model, {})
        failures += compare("ComfyUI", arch, weights_2d(model.state_dict(), "diffusion_model."), key_map)
    return failures


def check_neo(folder: str) -> int:
    sys.path.insert(0, folder)
    sys.argv = [sys.argv[0], "--always-cpu"]
    import torch

    failures = 0
    for arch, (module, cls, cfg) in NEO.items():
        with torch.device("meta"):
            model = getattr(importlib.import_module(module), cls)(**cfg)
        failures += compare("Forge Neo", arch, weights_2d(model.state_dict()))
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfyui", help="a ComfyUI checkout")
    ap.add_argument("--neo", help="a Forge Neo checkout (the neo branch of sd-webui-forge-classic)")
    ns = ap.parse_args()
    if not ns.comfyui and not ns.neo:
        ap.error("give --comfyui or --neo")
    failures = (check_comfyui(ns.comfyui) if ns.comfyui else 0) + (check_neo(ns.neo) if ns.neo else 0)
    print("OK" if failures == 0 else f"{failures} FAILURES")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
