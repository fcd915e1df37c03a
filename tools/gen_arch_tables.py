"""Generate lib_nplora/arch/tables/*.json from the real model classes.

The UNets / DiT and text encoders are instantiated on the meta device (no weights, no download)
from the published configs written below; every Linear, Conv2d and (for the SD models) affine
norm layer is listed with its weight shape, its canonical name (original LDM/SGM layout for SD
UNets, BFL layout for FLUX, HF transformers layout for text encoders) and its diffusers pipeline
name. ``--check`` runs diffusers' own original->diffusers checkpoint converters on a fake
checkpoint built from the tables and asserts that every module lands where the table says.

The DiT tables (``DIT_MODELS``: Z-Image, Qwen-Image, FLUX.2-dev and -klein, Chroma, Wan, SD3.5,
Lumina-Image-2.0, HiDream-I1) list the denoiser only:
their text encoders (Qwen2.5-VL, Qwen3, Mistral, T5, ...) are read as generic passthrough
modules (see ``lib_nplora.arch``), so they need no table. Each DiT row's canonical name is the
original checkpoint path (the one ComfyUI and Forge Neo hold the model under), its aliases the
diffusers path; where the original fuses projections that diffusers splits, the fused weight
is a parent with row-sliced parts. ``--check`` also runs diffusers' single-file converters and
its LoRA converters (original / kohya LoRA -> diffusers) on fake inputs built from the tables.

Developer tool, not needed at run time. Two throw-away venvs:
* SD1/SD2/SDXL/FLUX (text encoders need transformers 4.x: transformers 5 dropped the
  ``text_model.`` level of CLIPTextModel that every LoRA trainer's names contain):
    pip install torch==2.13.0 diffusers==0.31.0 transformers==4.46.1 huggingface-hub==0.26.2 accelerate
    python tools/gen_arch_tables.py --arch sd1 sd2 sdxl flux [--check]
* the DiTs (classes that exist from diffusers 0.36 on):
    pip install torch==2.13.0 diffusers==0.42.1 transformers accelerate
    python tools/gen_arch_tables.py --arch zimage qwenimage flux2 chroma flux2klein4b flux2klein9b \
        wan14b wan5b wan1b sd35l sd35m lumina2 hidream [--check]
Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent.parent / "lib_nplora" / "arch" / "tables"

# ---------------------------------------------------------------------------- published configs
SD15_UNET = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280], cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
SD21_UNET = dict(SD15_UNET, attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024,
                 use_linear_projection=True, sample_size=96)
SDXL_UNET = dict(
    act_fn="silu", addition_embed_type="text_time", addition_embed_type_num_heads=64,
    addition_time_embed_dim=256, attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280],
    cross_attention_dim=2048, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, out_channels=4,
    projection_class_embeddings_input_dim=2816, sample_size=128, transformer_layers_per_block=[1, 2, 10],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], use_linear_projection=True)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu", projection_dim=768)
SD2_TE = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
              max_position_embeddings=77, vocab_size=49408, hidden_act="gelu", projection_dim=512)
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              max_position_embeddings=77, vocab_size=49408, hidden_act="gelu", projection_dim=1280)
FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True)
T5_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, feed_forward_proj="gated-gelu",
              vocab_size=32128, is_encoder_decoder=False)


def _layers(model, with_norms: bool):
    """(path, kind, shape) of every Linear / Conv2d (/ affine norm) in definition order."""
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            yield name, "linear", list(mod.weight.shape)
        elif isinstance(mod, torch.nn.Conv2d):
            yield name, "conv", list(mod.weight.shape)
        elif with_norms and isinstance(mod, (torch.nn.LayerNorm, torch.nn.GroupNorm)) \
                and getattr(mod, "weight", None) is not None:
            yield name, "norm", list(mod.weight.shape)


# ---------------------------------------------------------------------------- diffusers -> LDM UNet
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def ldm_unet_path(path: str, cfg: dict) -> str:
    """Original (LDM / SGM openaimodel) path of a diffusers UNet2DConditionModel module."""
    p = path.split(".")
    per = cfg["layers_per_block"]
    top = {"conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
           "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
    if path in top:
        return top[path]

    def inner(kind, rest):
        if kind == "resnets":
            return _RESNET[rest[0]] + ("." + ".".join(rest[1:]) if rest[1:] else "")
        return ".".join(rest)

    if p[0] == "down_blocks":
        i, kind, j, rest = int(p[1]), p[2], int(p[3]), p[4:]
        if kind == "downsamplers":
            assert rest == ["conv"], path
            return f"input_blocks.{(per + 1) * (i + 1)}.0.op"
        block = 1 + i * (per + 1) + j
        return f"input_blocks.{block}.{0 if kind == 'resnets' else 1}.{inner(kind, rest)}"
    if p[0] == "mid_block":
        kind, j, rest = p[1], int(p[2]), p[3:]
        idx = 1 if kind == "attentions" else (0 if j == 0 else 2)
        return f"middle_block.{idx}.{inner(kind, rest)}"
    if p[0] == "up_blocks":
        i, kind, j, rest = int(p[1]), p[2], int(p[3]), p[4:]
        has_attn = "CrossAttn" in cfg["up_block_types"][i]
        if kind == "upsamplers":
            assert rest == ["conv"], path
            return f"output_blocks.{i * (per + 1) + per}.{2 if has_attn else 1}.conv"
        block = i * (per + 1) + j
        return f"output_blocks.{block}.{0 if kind == 'resnets' else 1}.{inner(kind, rest)}"
    raise ValueError(f"unmapped UNet module {path}")


# ---------------------------------------------------------------------------- diffusers -> BFL FLUX
_FLUX_DOUBLE = {
    "attn.to_q": "img_attn.qkv:q", "attn.to_k": "img_attn.qkv:k", "attn.to_v": "img_attn.qkv:v",
    "attn.add_q_proj": "txt_attn.qkv:q", "attn.add_k_proj": "txt_attn.qkv:k", "attn.add_v_proj": "txt_attn.qkv:v",
    "attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj",
    "ff.net.0.proj": "img_mlp.0", "ff.net.2": "img_mlp.2",
    "ff_context.net.0.proj": "txt_mlp.0", "ff_context.net.2": "txt_mlp.2",
    "norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin",
}
_FLUX_SINGLE = {"attn.to_q": "linear1:q", "attn.to_k": "linear1:k", "attn.to_v": "linear1:v",
                "proj_mlp": "linear1:mlp", "proj_out": "linear2", "norm.linear": "modulation.lin"}
_FLUX_TOP = {
    "x_embedder": "img_in", "context_embedder": "txt_in", "proj_out": "final_layer.linear",
    "norm_out.linear": "final_layer.adaLN_modulation.1",
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
}
_FLUX_SWAPPED = {"norm_out.linear"}
FLUX_PARTS = {"img_attn.qkv": ("q", "k", "v"), "txt_attn.qkv": ("q", "k", "v"), "linear1": ("q", "k", "v", "mlp")}


def bfl_like_path(path: str, top: dict, double: dict, single: dict, label: str) -> str:
    """BFL path of a diffusers double/single-stream DiT module, from the model's three maps
    (top-level modules, inside ``transformer_blocks.N``, inside ``single_transformer_blocks.N``)."""
    if path in top:
        return top[path]
    p = path.split(".")
    rest = ".".join(p[2:])
    if p[0] == "transformer_blocks":
        return f"double_blocks.{p[1]}.{double[rest]}"
    if p[0] == "single_transformer_blocks":
        return f"single_blocks.{p[1]}.{single[rest]}"
    raise ValueError(f"unmapped {label} module {path}")


def bfl_path(path: str) -> str:
    return bfl_like_path(path, _FLUX_TOP, _FLUX_DOUBLE, _FLUX_SINGLE, "FLUX")


# ---------------------------------------------------------------------------- building
def _row(name, kind, shape, aliases=(), **extra):
    row = {"name": name, "kind": kind, "shape": shape, "aliases": list(aliases)}
    row.update(extra)
    return row


def sd_unet_rows(cfg):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg)
    return [_row(f"unet.{ldm_unet_path(p, cfg)}", kind, shape, [f"unet.{p}"])
            for p, kind, shape in _layers(unet, with_norms=True)]


def text_rows(prefix: str, pipeline: str, cfg: dict, with_projection=False, t5=False):
    import transformers as tf

    with torch.device("meta"):
        if t5:
            model = tf.T5EncoderModel(tf.T5Config(**cfg))
        elif with_projection:
            model = tf.CLIPTextModelWithProjection(tf.CLIPTextConfig(**cfg))
        else:
            model = tf.CLIPTextModel(tf.CLIPTextConfig(**cfg))
    rows = []
    for p, kind, shape in _layers(model, with_norms=not t5):
        aliases = [f"{pipeline}.{p}"]
        if not t5 and not with_projection and p.startswith("text_model."):
            # transformers 5 drops CLIPTextModel's text_model level; LoRAs saved from it do too
            aliases.append(f"{pipeline}.{p[len('text_model.'):]}")
        rows.append(_row(f"{prefix}.{p}", kind, shape, aliases))
    return rows


def dit_rows(model, to_original, parts_order: dict[str, tuple[str, ...]], swapped=frozenset()) -> list[dict]:
    """Rows of a DiT denoiser: canonical ``unet.<original path>``, alias ``transformer.<diffusers path>``.

    ``to_original`` maps a diffusers module path to its original-checkpoint path, or to
    ``parent:part`` where the original holds it as a row slice of a fused weight; the parent
    rows are added (shape = the parts stacked in ``parts_order[parent suffix]``), each followed
    by its parts in row order. ``swapped``: diffusers paths whose halves are swapped against the
    original (AdaLayerNormContinuous: shift/scale).
    """
    rows = []
    parts: dict[str, dict[str, list]] = {}
    for p, kind, shape in _layers(model, with_norms=False):
        name = f"unet.{to_original(p)}"
        extra = {"swapped_halves_aliases": [f"transformer.{p}"]} if p in swapped else {}
        row = _row(name, kind, shape, [f"transformer.{p}"], **extra)
        if ":" in name:
            parent, part = name.split(":")
            if parent not in parts:
                parts[parent] = {}
                rows.append(parent)  # placeholder: the parent goes where its first part was
            parts[parent][part] = row
        else:
            rows.append(row)
    out = []
    for r in rows:
        if isinstance(r, dict):
            out.append(r)
            continue
        got = parts[r]
        suffix = next(k for k in parts_order if r.endswith("." + k))
        order = parts_order[suffix]
        assert set(got) == set(order), (r, sorted(got), order)
        ins = {tuple(got[n]["shape"][1:]) for n in order}
        assert len(ins) == 1, f"{r}: parts with different input sizes"
        out.append(_row(r, "linear", [sum(got[n]["shape"][0] for n in order), *ins.pop()], [],
                        parts=[[n, got[n]["shape"][0]] for n in order]))
        out += [got[n] for n in order]
    return out


def _meta_model(cls_name: str, cfg: dict):
    import diffusers

    with torch.device("meta"):
        return getattr(diffusers, cls_name)(**cfg)


def flux_rows():
    return dit_rows(_meta_model("FluxTransformer2DModel", FLUX_DEV), bfl_path, FLUX_PARTS, _FLUX_SWAPPED)


# ---------------------------------------------------------------------------- the DiTs
# Each config is the model's published transformer/config.json (repository named in `source`);
# the fields that do not change a weight's shape (rope axes, theta, eps, t_scale) are left at
# the class defaults. The generator also asserts that each equals the diffusers class default
# where diffusers uses that model's config as its default, so a drift shows.
Z_IMAGE_TURBO = dict(all_patch_size=[2], all_f_patch_size=[1], in_channels=16, dim=3840, n_layers=30,
                     n_refiner_layers=2, n_heads=30, n_kv_heads=30, qk_norm=True, cap_feat_dim=2560)
QWEN_IMAGE = dict(patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
                  num_attention_heads=24, joint_attention_dim=3584, guidance_embeds=False)
FLUX2_DEV = dict(patch_size=1, in_channels=128, num_layers=8, num_single_layers=48, attention_head_dim=128,
                 num_attention_heads=48, joint_attention_dim=15360, timestep_guidance_channels=256,
                 mlp_ratio=3.0, guidance_embeds=True)
# FLUX.2-klein: no published config.json could be read offline. The dimensions are those of
# third-party implementations (an InvokeAI FLUX.2-klein integration note with tensor shapes:
# img_in [3072, 128], txt_in [3072, 7680], single_blocks.0.linear1 [27648, 3072]; the C / Zig
# ports: 5 double + 20 single blocks, 24 heads of 128, Qwen3 layers 9/18/27 stacked), the
# 9B's (hidden 4096, 8 + 24 blocks, Qwen3-8B: 3 x 4096) from the same note, consistent with its
# ~9.1B parameters (another port says 6 double blocks: 8.1B). DiffSynth-Studio 000ba473
# (diffsynth/configs/model_configs.py) builds both from BFL's released files with these very
# overrides (docs/models.md). A wrong dimension only refuses files.
FLUX2_KLEIN_4B = dict(FLUX2_DEV, num_layers=5, num_single_layers=20, num_attention_heads=24,
                      joint_attention_dim=7680, guidance_embeds=False)
FLUX2_KLEIN_9B = dict(FLUX2_DEV, num_layers=8, num_single_layers=24, num_attention_heads=32,
                      joint_attention_dim=12288, guidance_embeds=False)
CHROMA1_HD = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                  num_attention_heads=24, joint_attention_dim=4096, approximator_num_channels=64,
                  approximator_hidden_dim=5120, approximator_layers=5)


def zimage_path(path: str) -> str:
    """Z-Image (Tongyi-MAI) original path of a diffusers ZImageTransformer2DModel module (the
    inverse of diffusers' ``convert_z_image_transformer_checkpoint_to_diffusers``)."""
    for a, b in (("all_x_embedder.2-1", "x_embedder"), ("all_final_layer.2-1.", "final_layer.")):
        if path.startswith(a):
            return b + path[len(a):]
    head, _, last = path.rpartition(".")
    if head.endswith(".attention") and last in ("to_q", "to_k", "to_v"):
        return f"{head}.qkv:{last[-1]}"
    if path.endswith(".attention.to_out.0"):
        return path[: -len("to_out.0")] + "out"
    return path


_FLUX2_DOUBLE = {
    "attn.to_q": "img_attn.qkv:q", "attn.to_k": "img_attn.qkv:k", "attn.to_v": "img_attn.qkv:v",
    "attn.add_q_proj": "txt_attn.qkv:q", "attn.add_k_proj": "txt_attn.qkv:k", "attn.add_v_proj": "txt_attn.qkv:v",
    "attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj",
    "ff.linear_in": "img_mlp.0", "ff.linear_out": "img_mlp.2",
    "ff_context.linear_in": "txt_mlp.0", "ff_context.linear_out": "txt_mlp.2",
}
_FLUX2_SINGLE = {"attn.to_qkv_mlp_proj": "linear1", "attn.to_out": "linear2"}
_FLUX2_TOP = {
    "x_embedder": "img_in", "context_embedder": "txt_in", "proj_out": "final_layer.linear",
    "norm_out.linear": "final_layer.adaLN_modulation.1",
    "time_guidance_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_guidance_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_guidance_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_guidance_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "double_stream_modulation_img.linear": "double_stream_modulation_img.lin",
    "double_stream_modulation_txt.linear": "double_stream_modulation_txt.lin",
    "single_stream_modulation.linear": "single_stream_modulation.lin",
}
FLUX2_PARTS = {"img_attn.qkv": ("q", "k", "v"), "txt_attn.qkv": ("q", "k", "v")}


def flux2_path(path: str) -> str:
    """BFL FLUX.2 path of a diffusers Flux2Transformer2DModel module (the inverse of
    ``convert_flux2_transformer_checkpoint_to_diffusers``). The single blocks' linear1 is fused
    (q, k, v, MLP gate+up) in both layouts, so it has no parts."""
    return bfl_like_path(path, _FLUX2_TOP, _FLUX2_DOUBLE, _FLUX2_SINGLE, "FLUX.2")


_CHROMA_TOP = {"x_embedder": "img_in", "context_embedder": "txt_in", "proj_out": "final_layer.linear"}


def chroma_path(path: str) -> str:
    """Chroma (lodestones) original path of a diffusers ChromaTransformer2DModel module (the
    inverse of ``convert_chroma_transformer_checkpoint_to_diffusers``): FLUX.1's BFL layout
    without the per-block modulation, plus the distilled guidance approximator."""
    if path in _CHROMA_TOP:
        return _CHROMA_TOP[path]
    if path.startswith("distilled_guidance_layer."):
        return path.replace(".linear_1", ".in_layer").replace(".linear_2", ".out_layer")
    return bfl_path(path)


# Wan 2.1 / 2.2 (Wan-Video): diffusers' WanTransformer3DModel; the original layout is the one
# ComfyUI (comfy/ldm/wan/model.py) and Forge Neo (backend/nn/wan.py) hold. Its configs are those
# of diffusers' scripts/convert_wan_to_diffusers.py for each released checkpoint. The 3-D patch
# embedding (Conv3d) is not listed: no trainer targets it.
WAN_14B_I2V = dict(patch_size=[1, 2, 2], num_attention_heads=40, attention_head_dim=128, in_channels=36,
                   out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40,
                   cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280,
                   added_kv_proj_dim=5120)
WAN_5B = dict(patch_size=[1, 2, 2], num_attention_heads=24, attention_head_dim=128, in_channels=48,
              out_channels=48, text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30,
              cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)
WAN_1_3B = dict(WAN_5B, num_attention_heads=12, ffn_dim=8960, in_channels=16, out_channels=16)
_WAN_TOP = {
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "condition_embedder.image_embedder.ff.net.0.proj": "img_emb.proj.1",
    "condition_embedder.image_embedder.ff.net.2": "img_emb.proj.3",
    "proj_out": "head.head",
}
_WAN_BLOCK = {"attn1": "self_attn", "attn2": "cross_attn", "to_q": "q", "to_k": "k", "to_v": "v",
              "to_out.0": "o", "add_k_proj": "k_img", "add_v_proj": "v_img",
              "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2"}


def wan_path(path: str) -> str:
    """Original Wan path of a diffusers WanTransformer3DModel module (the inverse of
    ``convert_wan_transformer_to_diffusers``): ``blocks.N.self_attn.q`` ... ``ffn.2``."""
    if path in _WAN_TOP:
        return _WAN_TOP[path]
    p = path.split(".")
    if p[0] != "blocks":
        raise ValueError(f"unmapped Wan module {path}")
    rest = ".".join(p[2:])
    if rest in _WAN_BLOCK:
        return f"blocks.{p[1]}.{_WAN_BLOCK[rest]}"
    attn, proj = rest.split(".", 1)
    return f"blocks.{p[1]}.{_WAN_BLOCK[attn]}.{_WAN_BLOCK[proj]}"


# Stable Diffusion 3.5 (Stability AI MMDiT): diffusers' SD3Transformer2DModel; the original
# (SAI) layout is the one ComfyUI (comfy/ldm/modules/diffusionmodules/mmdit.py) holds. The last
# joint block's context stream is pre-only: no attention output, no MLP, and its modulation is
# an AdaLayerNormContinuous in diffusers (halves swapped, as norm_out).
SD35_LARGE = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=38, attention_head_dim=64,
                  num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432,
                  pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192, qk_norm="rms_norm")
SD35_MEDIUM = dict(SD35_LARGE, num_layers=24, num_attention_heads=24, caption_projection_dim=1536,
                   pos_embed_max_size=384, dual_attention_layers=list(range(13)))
_SD3_TOP = {
    "pos_embed.proj": "x_embedder.proj", "context_embedder": "context_embedder",
    "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
    "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
    "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
    "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2",
    "proj_out": "final_layer.linear", "norm_out.linear": "final_layer.adaLN_modulation.1",
}
_SD3_BLOCK = {
    "attn.to_q": "x_block.attn.qkv:q", "attn.to_k": "x_block.attn.qkv:k", "attn.to_v": "x_block.attn.qkv:v",
    "attn.add_q_proj": "context_block.attn.qkv:q", "attn.add_k_proj": "context_block.attn.qkv:k",
    "attn.add_v_proj": "context_block.attn.qkv:v",
    "attn.to_out.0": "x_block.attn.proj", "attn.to_add_out": "context_block.attn.proj",
    "attn2.to_q": "x_block.attn2.qkv:q", "attn2.to_k": "x_block.attn2.qkv:k", "attn2.to_v": "x_block.attn2.qkv:v",
    "attn2.to_out.0": "x_block.attn2.proj",
    "norm1.linear": "x_block.adaLN_modulation.1", "norm1_context.linear": "context_block.adaLN_modulation.1",
    "ff.net.0.proj": "x_block.mlp.fc1", "ff.net.2": "x_block.mlp.fc2",
    "ff_context.net.0.proj": "context_block.mlp.fc1", "ff_context.net.2": "context_block.mlp.fc2",
}
SD3_PARTS = {"x_block.attn.qkv": ("q", "k", "v"), "context_block.attn.qkv": ("q", "k", "v"),
             "x_block.attn2.qkv": ("q", "k", "v")}


def sd3_path(path: str) -> str:
    """SAI MMDiT path of a diffusers SD3Transformer2DModel module (the inverse of
    ``convert_sd3_transformer_checkpoint_to_diffusers``): ``joint_blocks.N.x_block.attn.qkv:q``."""
    if path in _SD3_TOP:
        return _SD3_TOP[path]
    p = path.split(".")
    if p[0] != "transformer_blocks":
        raise ValueError(f"unmapped SD3 module {path}")
    return f"joint_blocks.{p[1]}.{_SD3_BLOCK['.'.join(p[2:])]}"


def sd3_swapped(cfg: dict) -> frozenset:
    return frozenset({"norm_out.linear", f"transformer_blocks.{cfg['num_layers'] - 1}.norm1_context.linear"})


# Lumina-Image-2.0 (Alpha-VLLM NextDiT, the ancestor of Z-Image's layout): diffusers'
# Lumina2Transformer2DModel; ComfyUI and Forge Neo hold it as NextDiT (comfy/ldm/lumina/model.py,
# backend/nn/lumina.py). Grouped-query attention: the fused qkv is q 2304 + k 768 + v 768 rows.
LUMINA2 = dict(sample_size=128, patch_size=2, in_channels=16, hidden_size=2304, num_layers=26,
               num_refiner_layers=2, num_attention_heads=24, num_kv_heads=8, multiple_of=256,
               ffn_dim_multiplier=None, norm_eps=1e-5, scaling_factor=1.0, cap_feat_dim=2304)
_LUMINA2_TOP = {"time_caption_embed.caption_embedder.1": "cap_embedder.1",
                "time_caption_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
                "time_caption_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
                "norm_out.linear_1": "final_layer.adaLN_modulation.1", "norm_out.linear_2": "final_layer.linear"}
_LUMINA2_BLOCK = {"attn.to_q": "attention.qkv:q", "attn.to_k": "attention.qkv:k", "attn.to_v": "attention.qkv:v",
                  "attn.to_out.0": "attention.out", "feed_forward.linear_1": "feed_forward.w1",
                  "feed_forward.linear_2": "feed_forward.w2", "feed_forward.linear_3": "feed_forward.w3",
                  "norm1.linear": "adaLN_modulation.1"}


def lumina2_path(path: str) -> str:
    """Alpha-VLLM NextDiT path of a diffusers Lumina2Transformer2DModel module (the inverse of
    ``convert_lumina2_to_diffusers``): ``layers.N.attention.qkv:q``, ``feed_forward.w1``."""
    if path in _LUMINA2_TOP or path == "x_embedder":
        return _LUMINA2_TOP.get(path, path)
    block, _, rest = path.partition(".")
    index, _, rest = rest.partition(".")
    if block not in ("layers", "noise_refiner", "context_refiner") or rest not in _LUMINA2_BLOCK:
        raise ValueError(f"unmapped Lumina2 module {path}")
    return f"{block}.{index}.{_LUMINA2_BLOCK[rest]}"


# HiDream-I1 (Full, Dev, Fast: one layout): diffusers' HiDreamImageTransformer2DModel, released in
# that layout (diffusers' single-file converter only strips a prefix); ComfyUI's
# comfy/ldm/hidream/model.py keeps it. Mixture-of-experts feed-forwards (4 routed experts + one
# shared, each w1/w2/w3); the routers' gate is a bare parameter, not a linear, so not listed.
# llama_layers (which Llama-3.1 hidden states feed the blocks) does not change a weight: omitted.
HIDREAM_I1 = dict(patch_size=2, in_channels=16, out_channels=16, num_layers=16, num_single_layers=32,
                  attention_head_dim=128, num_attention_heads=20, caption_channels=[4096, 4096], text_emb_dim=2048,
                  num_routed_experts=4, num_activated_experts=2, axes_dims_rope=[64, 32, 32],
                  max_resolution=[128, 128])


@dataclass(frozen=True)
class DitModel:
    cls: str
    config: dict
    source: str
    to_original: Callable[[str], str]
    parts: dict = field(default_factory=dict)
    swapped: frozenset = frozenset()


DIT_MODELS = {
    "zimage": DitModel("ZImageTransformer2DModel", Z_IMAGE_TURBO,
                       "Tongyi-MAI/Z-Image-Turbo transformer/config.json", zimage_path,
                       {"attention.qkv": ("q", "k", "v")}),
    "qwenimage": DitModel("QwenImageTransformer2DModel", QWEN_IMAGE,
                          "Qwen/Qwen-Image transformer/config.json (Qwen-Image-Edit, -2509, -2511: same shapes)",
                          lambda p: p),  # released in the diffusers layout: ComfyUI/Neo keep it
    "flux2": DitModel("Flux2Transformer2DModel", FLUX2_DEV, "black-forest-labs/FLUX.2-dev transformer/config.json",
                      flux2_path, FLUX2_PARTS, frozenset({"norm_out.linear"})),
    "flux2klein4b": DitModel("Flux2Transformer2DModel", FLUX2_KLEIN_4B,
                             "black-forest-labs/FLUX.2-klein-4B (config not read: third-party dimensions, see above)",
                             flux2_path, FLUX2_PARTS, frozenset({"norm_out.linear"})),
    "flux2klein9b": DitModel("Flux2Transformer2DModel", FLUX2_KLEIN_9B,
                             "black-forest-labs/FLUX.2-klein-9B (config not read: third-party dimensions, see above)",
                             flux2_path, FLUX2_PARTS, frozenset({"norm_out.linear"})),
    "chroma": DitModel("ChromaTransformer2DModel", CHROMA1_HD, "lodestones/Chroma1-HD transformer/config.json",
                       chroma_path, FLUX_PARTS),
    # Wan2.1-I2V-14B's layers are a superset of Wan2.1-T2V-14B's and Wan2.2-T2V/I2V-A14B's (the
    # image cross-attention k_img/v_img and img_emb; the 2.2 experts have neither): one table
    "wan14b": DitModel("WanTransformer3DModel", WAN_14B_I2V,
                       "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers transformer/config.json (T2V-14B, Wan2.2-T2V/"
                       "I2V-A14B: the same without image_dim / added_kv_proj_dim)", wan_path),
    "wan5b": DitModel("WanTransformer3DModel", WAN_5B, "Wan-AI/Wan2.2-TI2V-5B-Diffusers transformer/config.json",
                      wan_path),
    "lumina2": DitModel("Lumina2Transformer2DModel", LUMINA2,
                        "Alpha-VLLM/Lumina-Image-2.0 transformer/config.json", lumina2_path,
                        {"attention.qkv": ("q", "k", "v")}),
    "hidream": DitModel("HiDreamImageTransformer2DModel", HIDREAM_I1,
                        "HiDream-ai/HiDream-I1-Full transformer/config.json (-Dev, -Fast: the same)", lambda p: p),
    "sd35l": DitModel("SD3Transformer2DModel", SD35_LARGE,
                      "stabilityai/stable-diffusion-3.5-large transformer/config.json (-large-turbo: the same)",
                      sd3_path, SD3_PARTS, sd3_swapped(SD35_LARGE)),
    # SD3-medium (3.0) has the same layers without the 13 blocks' second attention (attn2)
    "sd35m": DitModel("SD3Transformer2DModel", SD35_MEDIUM,
                      "stabilityai/stable-diffusion-3.5-medium transformer/config.json (SD3 Medium 3.0: its attention and MLP fit, its first 13 blocks' modulation does not)",
                      sd3_path, SD3_PARTS, sd3_swapped(SD35_MEDIUM)),
    "wan1b": DitModel("WanTransformer3DModel", WAN_1_3B, "Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json",
                      wan_path),
}


def dit_model_rows(arch: str) -> list[dict]:
    import inspect

    import diffusers

    m = DIT_MODELS[arch]
    defaults = {k: v.default for k, v in inspect.signature(getattr(diffusers, m.cls).__init__).parameters.items()}
    drift = {k: (v, defaults.get(k)) for k, v in m.config.items()
             if k in defaults and _norm(defaults[k]) != _norm(v)}
    if drift:
        print(f"note {arch}: config differs from the diffusers {m.cls} defaults: {drift}")
    return dit_rows(_meta_model(m.cls, m.config), m.to_original, m.parts, m.swapped)


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


SD_FLUX = ("sd1", "sd2", "sdxl", "flux")


def build(arches) -> dict[str, list]:
    makers = {
        "sd1": lambda: sd_unet_rows(SD15_UNET) + text_rows("te", "text_encoder", CLIP_L),
        "sd2": lambda: sd_unet_rows(SD21_UNET) + text_rows("te", "text_encoder", SD2_TE),
        "sdxl": lambda: sd_unet_rows(SDXL_UNET) + text_rows("te1", "text_encoder", CLIP_L)
        + text_rows("te2", "text_encoder_2", CLIP_G, with_projection=True),
        "flux": lambda: flux_rows() + text_rows("te1", "text_encoder", CLIP_L)
        + text_rows("te3", "text_encoder_2", T5_XXL, t5=True),
    }
    return {a: (makers[a]() if a in makers else dit_model_rows(a)) for a in arches}


def write(tables: dict[str, list]) -> None:
    import diffusers
    import transformers

    OUT.mkdir(parents=True, exist_ok=True)
    versions = {"torch": torch.__version__.split("+")[0], "diffusers": diffusers.__version__,
                "transformers": transformers.__version__}
    for arch, rows in tables.items():
        names = [r["name"] for r in rows]
        assert len(names) == len(set(names)), f"{arch}: duplicate names"
        flat = {}
        for r in rows:
            comp = r["name"].split(".", 1)[0]
            for n in [r["name"]] + r["aliases"]:
                key = (comp, n.split(".", 1)[1].replace(".", "_"))
                assert flat.setdefault(key, r["name"]) == r["name"], f"{arch}: {n} collides with {flat[key]}"
        lines = [json.dumps(r, separators=(",", ":")) for r in rows]
        model = ""
        if arch in DIT_MODELS:
            m = DIT_MODELS[arch]
            model = '"class":%s,"config_source":%s,"config":%s,' % (
                json.dumps(m.cls), json.dumps(m.source), json.dumps(m.config, sort_keys=True))
        text = ('{"arch":%s,"generator":"tools/gen_arch_tables.py","versions":%s,%s"modules":[\n%s\n]}\n'
                % (json.dumps(arch), json.dumps(versions, sort_keys=True), model, ",\n".join(lines)))
        (OUT / f"{arch}.json").write_text(text)
        kinds = {}
        for r in rows:
            k = (r["name"].split(".", 1)[0], r["kind"])
            kinds[k] = kinds.get(k, 0) + 1
        print(arch, len(rows), "modules:", ", ".join(f"{c}/{k}={n}" for (c, k), n in sorted(kinds.items())))


# ---------------------------------------------------------------------------- checks
def check_sd_flux(tables: dict[str, list]) -> int:
    """Run diffusers' own converters on fake original-layout checkpoints built from the tables.

    Every weight gets shape (rows, 1) holding a unique id per module plus the row index, so the
    check sees both where each module lands and the row order of split fused weights.
    """
    from diffusers.loaders import single_file_utils as sfu

    failures = 0
    for arch, cfg in (("sd1", SD15_UNET), ("sd2", SD21_UNET), ("sdxl", SDXL_UNET)):
        rows = [r for r in tables[arch] if r["name"].startswith("unet.")]
        ckpt, expect = {}, {}
        for i, r in enumerate(rows):
            ldm = "model.diffusion_model." + r["name"][len("unet."):]
            ckpt[ldm + ".weight"] = torch.full((r["shape"][0], 1), float(i))
            ckpt[ldm + ".bias"] = torch.full((r["shape"][0],), float(i))
            expect[r["aliases"][0][len("unet."):] + ".weight"] = i
        diff_cfg = dict(cfg)
        out = sfu.convert_ldm_unet_checkpoint(ckpt, diff_cfg)
        bad = [k for k, i in expect.items() if k not in out or float(out[k].flatten()[0]) != i]
        extra = [k for k in out if k.endswith(".weight") and k not in expect]
        print(f"check {arch} UNet: {len(expect)} modules, {len(bad)} misplaced, {len(extra)} unexpected")
        failures += len(bad) + len(extra)
        for k in (bad + extra)[:5]:
            print("   ", k)
    rows = [r for r in tables["flux"] if r["name"].startswith("unet.")]
    ckpt, expect = {}, {}
    byname = {r["name"]: r for r in rows}
    for i, r in enumerate(rows):
        if ":" in r["name"]:
            continue
        out_rows = r["shape"][0]
        ckpt[r["name"][len("unet."):] + ".weight"] = (i * 100000 + torch.arange(out_rows, dtype=torch.float64))[:, None]
        ckpt[r["name"][len("unet."):] + ".bias"] = i * 100000 + torch.arange(out_rows, dtype=torch.float64)
        if r.get("parts"):
            off = 0
            for pn, n in r["parts"]:
                part = byname[f"{r['name']}:{pn}"]
                expect[part["aliases"][0][len("transformer."):] + ".weight"] = (i, off, n, False)
                off += n
        else:
            swapped = bool(r.get("swapped_halves_aliases"))
            expect[r["aliases"][0][len("transformer."):] + ".weight"] = (i, 0, out_rows, swapped)
    for j in range(FLUX_DEV["num_layers"]):  # norm scales the converter expects
        for s in ("img", "txt"):
            for q in ("query", "key"):
                ckpt[f"double_blocks.{j}.{s}_attn.norm.{q}_norm.scale"] = torch.zeros(128)
    for j in range(FLUX_DEV["num_single_layers"]):
        for q in ("query", "key"):
            ckpt[f"single_blocks.{j}.norm.{q}_norm.scale"] = torch.zeros(128)
    out = sfu.convert_flux_transformer_checkpoint_to_diffusers(ckpt)
    bad = []
    for k, (i, off, n, swapped) in expect.items():
        want = i * 100000 + torch.arange(off, off + n, dtype=torch.float64)
        if swapped:
            h = n // 2
            want = torch.cat([want[h:], want[:h]])
        got = out.get(k)
        if got is None or not torch.equal(got.flatten().double(), want):
            bad.append(k)
    extra = [k for k in out if k.endswith(".weight") and k not in expect and "norm_" not in k]
    print(f"check flux transformer: {len(expect)} modules, {len(bad)} misplaced/misordered, {len(extra)} unexpected")
    for k in (bad + extra)[:5]:
        print("   ", k)
    failures += len(bad) + len(extra)
    # the spellings trainers actually write must exist (kohya keys, diffusers names)
    must = {"sd1": ["te.text_model.encoder.layers.0.self_attn.q_proj", "unet.input_blocks.1.1.proj_in"],
            "sd2": ["te.text_model.encoder.layers.22.mlp.fc2", "unet.output_blocks.11.1.proj_out"],
            "sdxl": ["te1.text_model.encoder.layers.11.self_attn.out_proj", "te2.text_model.encoder.layers.31.mlp.fc1",
                     "te2.text_projection", "unet.input_blocks.7.1.transformer_blocks.9.attn2.to_k"],
            "flux": ["te1.text_model.encoder.layers.0.mlp.fc1", "te3.encoder.block.23.layer.1.DenseReluDense.wi_1",
                     "unet.single_blocks.37.linear1:mlp", "unet.double_blocks.18.txt_attn.qkv:v"]}
    for arch, names in must.items():
        have = {r["name"] for r in tables[arch]}
        for n in names:
            if n not in have:
                print(f"missing expected module {arch}:{n}")
                failures += 1
    sdxl_lora = [r for r in tables["sdxl"] if r["name"].startswith("unet.") and r["kind"] == "linear"
                 and (".transformer_blocks." in r["name"] or r["name"].endswith((".proj_in", ".proj_out")))]
    print(f"SDXL default kohya UNet LoRA targets (linears in transformer blocks + proj_in/out): {len(sdxl_lora)}")
    return failures


def _ids(i: int, n: int) -> torch.Tensor:
    """Rows of module i: unique float64 values i * 10^6 + row."""
    return i * 1_000_000 + torch.arange(n, dtype=torch.float64)


def _expected(rows: list[dict]) -> tuple[dict[str, int], dict[str, tuple[int, int, int, bool]]]:
    """(original path -> module id) for the weights a checkpoint holds, and
    (diffusers path -> (id, first row, rows, halves swapped)) for where each must land."""
    byname = {r["name"]: r for r in rows}
    ids, expect = {}, {}
    for i, r in enumerate(rows):
        if ":" in r["name"]:
            continue
        ids[r["name"][len("unet."):]] = i
        if r.get("parts"):
            off = 0
            for pn, n in r["parts"]:
                part = byname[f"{r['name']}:{pn}"]
                expect[part["aliases"][0][len("transformer."):]] = (i, off, n, False)
                off += n
        else:
            expect[r["aliases"][0][len("transformer."):]] = (i, 0, r["shape"][0], bool(r.get("swapped_halves_aliases")))
    return ids, expect


def _compare(label: str, got: dict[str, torch.Tensor], expect: dict, suffix: str, ignore=()) -> int:
    bad, unswapped = [], []
    for k, (i, off, n, swapped) in expect.items():
        want = _ids(i, off + n)[off:]
        if swapped:
            want = torch.cat([want[n // 2:], want[: n // 2]])
        t = got.get(k + suffix)
        if t is None or not torch.equal(t.flatten().double(), want):
            plain = _ids(i, off + n)[off:]
            (unswapped if swapped and t is not None and torch.equal(t.flatten().double(), plain) else bad).append(k)
    extra = [k for k in got if k.endswith(suffix) and k[: -len(suffix)] not in expect
             and not any(x in k for x in ignore)]
    print(f"check {label}: {len(expect)} modules, {len(bad)} misplaced/misordered, {len(extra)} unexpected"
          + (f"; halves not swapped by this converter: {unswapped}" if unswapped else ""))
    for k in (bad + extra)[:5]:
        print("   ", k)
    return len(bad) + len(extra)


def _run_filling(fn, ckpt: dict, limit: int = 5000):
    """Call a single-file converter, adding the norm scales/biases it asks for (KeyError) as zeros:
    the tables hold only the weights a LoRA can target."""
    for _ in range(limit):
        try:
            return fn(dict(ckpt))
        except KeyError as e:
            key = e.args[0]
            if not isinstance(key, str) or key in ckpt:
                raise
            ckpt[key] = torch.zeros(128, dtype=torch.float64)
    raise RuntimeError("converter kept asking for keys")


_SINGLE_FILE = {"zimage": "convert_z_image_transformer_checkpoint_to_diffusers",
                "flux2": "convert_flux2_transformer_checkpoint_to_diffusers",
                "chroma": "convert_chroma_transformer_checkpoint_to_diffusers",
                "flux2klein4b": "convert_flux2_transformer_checkpoint_to_diffusers",
                "flux2klein9b": "convert_flux2_transformer_checkpoint_to_diffusers",
                "wan14b": "convert_wan_transformer_to_diffusers",
                "wan5b": "convert_wan_transformer_to_diffusers",
                "wan1b": "convert_wan_transformer_to_diffusers",
                "sd35l": "convert_sd3_transformer_checkpoint_to_diffusers",
                "sd35m": "convert_sd3_transformer_checkpoint_to_diffusers",
                "lumina2": "convert_lumina2_to_diffusers",
                "hidream": "convert_hidream_transformer_to_diffusers"}
#: diffusers LoRA converters: (function, key family, original paths it does not convert). Families:
#: "ldm" = diffusion_model.<original path> + lora_A/B; "kohya" = lora_unet_<flat original path>
#: + lora_down/up/alpha; "kohya-split" = lora_unet_<flat diffusers path> (trainers that wrap
#: the diffusers model with kohya naming).
_LORA_CONVERTERS = {
    "zimage": [("_convert_non_diffusers_z_image_lora_to_diffusers", "kohya-split", ())],
    "qwenimage": [("_convert_non_diffusers_qwen_lora_to_diffusers", "kohya", ()),
                  ("_convert_non_diffusers_qwen_lora_to_diffusers", "ldm", ())],
    "flux2": [("_convert_non_diffusers_flux2_lora_to_diffusers", "ldm", ()),
              # diffusers 0.42.1 logs these as "Unsupported keys for Kohya Flux2 LoRA conversion"
              ("_convert_kohya_flux2_lora_to_diffusers", "kohya",
               ("guidance_in.", "double_stream_modulation_", "single_stream_modulation.", "final_layer.adaLN"))],
    **{k: [("_convert_non_diffusers_flux2_lora_to_diffusers", "ldm", ()),
           ("_convert_kohya_flux2_lora_to_diffusers", "kohya",
            ("double_stream_modulation_", "single_stream_modulation.", "final_layer.adaLN"))]
       for k in ("flux2klein4b", "flux2klein9b")},
    **{w: [("_convert_non_diffusers_wan_lora_to_diffusers", "ldm", ()),
           # musubi-tuner's Wan LoRAs: the blocks only (it raises on any other key)
           ("_convert_musubi_wan_lora_to_diffusers", "kohya",
            ("time_embedding.", "text_embedding.", "time_projection.", "img_emb.", "head."))]
       for w in ("wan14b", "wan5b", "wan1b")},
    # the blocks only (it raises on any other key); fused qkv split [2304, 768, 768]
    "hidream": [("_convert_non_diffusers_hidream_lora_to_diffusers", "ldm", ())],
    "lumina2": [("_convert_non_diffusers_lumina2_lora_to_diffusers", "ldm",
                 ("x_embedder", "t_embedder.", "cap_embedder.", "final_layer."))],
}


def check_dit(arch: str, rows: list[dict]) -> int:
    """The DiT table against diffusers' single-file converter (original checkpoint -> diffusers)
    and its LoRA converters (original / kohya LoRA keys -> diffusers PEFT keys)."""
    from diffusers.loaders import lora_conversion_utils as lcu
    from diffusers.loaders import single_file_utils as sfu

    failures = 0
    ids, expect = _expected(rows)
    byname = {r["name"][len("unet."):]: r for r in rows}
    # diffusers path -> original path (parts: the parent's), to filter by original prefixes
    byname_alias = {r["aliases"][0][len("transformer."):]: r["name"][len("unet."):].split(":")[0]
                    for r in rows if r["aliases"]}
    if arch in _SINGLE_FILE:
        ckpt = {}
        for path, i in ids.items():
            n = byname[path]["shape"][0]
            ckpt[path + ".weight"] = _ids(i, n)[:, None]
            ckpt[path + ".bias"] = _ids(i, n)
        out = _run_filling(getattr(sfu, _SINGLE_FILE[arch]), ckpt)
        failures += _compare(f"{arch} single-file {_SINGLE_FILE[arch]}", out, expect, ".weight",
                             ignore=("norm_q", "norm_k", "norm_added", "norms.", "norm_final", "pad_token"))
    for fn, family, unsupported in _LORA_CONVERTERS.get(arch, ()):
        sd = {}
        want = {k: v for k, v in expect.items()
                if not any(byname_alias.get(k, "").startswith(u) for u in unsupported)}
        for path, i in ids.items():
            r = byname[path]
            if any(path.startswith(u) for u in unsupported):
                continue
            if family == "kohya-split":
                off = 0
                for pn, n in r.get("parts") or [(None, r["shape"][0])]:
                    spelled = byname[f"{path}:{pn}" if pn else path]["aliases"][0][len("transformer."):]
                    key = "lora_unet_" + spelled.replace(".", "_")
                    sd[key + ".lora_down.weight"] = torch.ones(1, 1, dtype=torch.float64)
                    sd[key + ".lora_up.weight"] = _ids(i, off + n)[off:, None]
                    sd[key + ".alpha"] = torch.tensor(1.0, dtype=torch.float64)
                    off += n
                continue
            up = _ids(i, r["shape"][0])[:, None]
            down = torch.ones(1, 1, dtype=torch.float64)
            if family == "ldm":
                sd[f"diffusion_model.{path}.lora_A.weight"] = down
                sd[f"diffusion_model.{path}.lora_B.weight"] = up
            else:
                key = "lora_unet_" + path.replace(".", "_")
                sd[key + ".lora_down.weight"], sd[key + ".lora_up.weight"] = down, up
                sd[key + ".alpha"] = torch.tensor(1.0, dtype=torch.float64)
        out = getattr(lcu, fn)(sd)
        out = {k.removeprefix("transformer."): v for k, v in out.items()}
        note = f"; not converted by diffusers: {', '.join(unsupported)}" if unsupported else ""
        failures += _compare(f"{arch} LoRA {fn} ({family} keys{note})", out, want, ".lora_B.weight")
    return failures


def check(tables: dict[str, list]) -> int:
    failures = 0
    if all(a in tables for a in SD_FLUX):
        failures += check_sd_flux(tables)
    for arch, rows in tables.items():
        if arch in DIT_MODELS:
            failures += check_dit(arch, rows)
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="also verify the mappings with diffusers' converters")
    ap.add_argument("--arch", nargs="+", default=list(SD_FLUX), choices=list(SD_FLUX) + list(DIT_MODELS),
                    help="tables to generate (default: %(default)s; the DiTs need the newer venv)")
    ns = ap.parse_args()
    tables = build(ns.arch)
    write(tables)
    if ns.check:
        failures = check(tables)
        print("OK" if failures == 0 else f"{failures} FAILURES")
        return 1 if failures else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
