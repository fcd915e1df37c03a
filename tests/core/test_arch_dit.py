"""The DiT architectures (Z-Image, Qwen-Image, FLUX.2, Chroma, Wan 14B / 5B / 1.3B, SD3.5 Large /
Medium, Lumina-Image-2.0, HiDream-I1, FLUX.2-klein 4B / 9B): literal key names from the
trainers and loaders, exact fusion of real-layout files in every input family (fused and split
projections paired by their row slices), the generic text-encoder passthrough, detection,
refusal of pairs made for different models, and the names and metadata written."""

import pytest
import torch
from safetensors.torch import load_file, save_file

import lora_factory as F
from lib_nplora import arch
from lib_nplora.errors import ArchitectureError
from lib_nplora.formats.keys import resolve_stem
from lib_nplora.formats.reader import load_lora, load_pair, peek
from lib_nplora.formats.writer import save_fused
from lib_nplora.fusion.merge import fuse
from lib_nplora.params import FuseParams

# (arch, source module stem as trainers/loaders write it, canonical name, weight shape): typed
# from the trainers' conventions, not derived from the tables
REAL_STEMS = [
    # Z-Image: musubi-tuner / sd-scripts (original names), ai-toolkit (diffusion_model. + diffusers
    # names), ComfyUI (original names), kohya-style trainers over diffusers, SimpleTuner LyCORIS
    ("zimage", "lora_unet_layers_0_attention_qkv", "unet.layers.0.attention.qkv", (11520, 3840)),
    ("zimage", "diffusion_model.layers.29.attention.to_k", "unet.layers.29.attention.qkv:k", (3840, 3840)),
    ("zimage", "diffusion_model.layers.3.attention.out", "unet.layers.3.attention.out", (3840, 3840)),
    ("zimage", "lora_unet_layers_5_attention_to_out_0", "unet.layers.5.attention.out", (3840, 3840)),
    ("zimage", "transformer.layers.2.feed_forward.w2", "unet.layers.2.feed_forward.w2", (3840, 10240)),
    ("zimage", "lora_unet_noise_refiner_1_adaLN_modulation_0", "unet.noise_refiner.1.adaLN_modulation.0",
     (15360, 256)),
    ("zimage", "transformer.all_x_embedder.2-1", "unet.x_embedder", (3840, 64)),
    ("zimage", "diffusion_model.cap_embedder.1", "unet.cap_embedder.1", (3840, 2560)),
    ("zimage", "lycoris_context_refiner_0_attention_to_v", "unet.context_refiner.0.attention.qkv:v", (3840, 3840)),
    ("zimage", "layers.7.attention.qkv", "unet.layers.7.attention.qkv", (11520, 3840)),
    # Qwen-Image (released in the diffusers layout): diffusers / ai-toolkit, musubi-tuner, ComfyUI,
    # DiffSynth-Studio (bare)
    ("qwenimage", "transformer.transformer_blocks.59.attn.to_q", "unet.transformer_blocks.59.attn.to_q", (3072, 3072)),
    ("qwenimage", "lora_unet_transformer_blocks_0_img_mlp_net_0_proj", "unet.transformer_blocks.0.img_mlp.net.0.proj",
     (12288, 3072)),
    ("qwenimage", "diffusion_model.transformer_blocks.10.txt_mod.1", "unet.transformer_blocks.10.txt_mod.1",
     (18432, 3072)),
    ("qwenimage", "transformer_blocks.3.attn.add_k_proj", "unet.transformer_blocks.3.attn.add_k_proj", (3072, 3072)),
    ("qwenimage", "lora_unet_transformer_blocks_0_attn_to_add_out", "unet.transformer_blocks.0.attn.to_add_out",
     (3072, 3072)),
    ("qwenimage", "lora_unet_img_in", "unet.img_in", (3072, 64)),
    # FLUX.2-dev: BFL names (musubi-tuner, ComfyUI), diffusers names (ai-toolkit)
    ("flux2", "lora_unet_double_blocks_0_img_attn_qkv", "unet.double_blocks.0.img_attn.qkv", (18432, 6144)),
    ("flux2", "diffusion_model.single_blocks.47.linear1", "unet.single_blocks.47.linear1", (55296, 6144)),
    ("flux2", "transformer.single_transformer_blocks.0.attn.to_qkv_mlp_proj", "unet.single_blocks.0.linear1",
     (55296, 6144)),
    ("flux2", "transformer.transformer_blocks.7.attn.add_v_proj", "unet.double_blocks.7.txt_attn.qkv:v",
     (6144, 6144)),
    ("flux2", "transformer.transformer_blocks.1.ff.linear_in", "unet.double_blocks.1.img_mlp.0", (36864, 6144)),
    ("flux2", "lora_unet_double_stream_modulation_img_lin", "unet.double_stream_modulation_img.lin",
     (36864, 6144)),
    ("flux2", "transformer.single_transformer_blocks.3.attn.to_out", "unet.single_blocks.3.linear2", (6144, 24576)),
    ("flux2", "lycoris_transformer_blocks_0_attn_to_q", "unet.double_blocks.0.img_attn.qkv:q", (6144, 6144)),
    ("flux2", "double_blocks.0.img_attn.qkv", "unet.double_blocks.0.img_attn.qkv", (18432, 6144)),
    ("chroma", "double_blocks.5.txt_mlp.0", "unet.double_blocks.5.txt_mlp.0", (12288, 3072)),
    # Chroma: BFL-like names without the per-block modulation, plus the guidance approximator
    ("chroma", "lora_unet_single_blocks_37_linear1", "unet.single_blocks.37.linear1", (21504, 3072)),
    ("chroma", "transformer.single_transformer_blocks.0.proj_mlp", "unet.single_blocks.0.linear1:mlp",
     (12288, 3072)),
    ("chroma", "diffusion_model.distilled_guidance_layer.layers.4.in_layer",
     "unet.distilled_guidance_layer.layers.4.in_layer", (5120, 5120)),
    ("chroma", "transformer.distilled_guidance_layer.layers.0.linear_2",
     "unet.distilled_guidance_layer.layers.0.out_layer", (5120, 5120)),
    ("chroma", "lora_unet_distilled_guidance_layer_in_proj", "unet.distilled_guidance_layer.in_proj", (5120, 64)),
    # Wan: musubi-tuner (lora_unet_ + Wan-Video names), ComfyUI / lightx2v / CausVid (diffusion_model.),
    # diffusers / ai-toolkit (transformer. + diffusers names), DiffSynth-Studio (bare)
    ("wan14b", "lora_unet_blocks_0_self_attn_q", "unet.blocks.0.self_attn.q", (5120, 5120)),
    ("wan14b", "lora_unet_blocks_39_cross_attn_k_img", "unet.blocks.39.cross_attn.k_img", (5120, 5120)),
    ("wan14b", "diffusion_model.blocks.7.ffn.0", "unet.blocks.7.ffn.0", (13824, 5120)),
    ("wan14b", "diffusion_model.time_projection.1", "unet.time_projection.1", (30720, 5120)),
    ("wan14b", "diffusion_model.head.head", "unet.head.head", (64, 5120)),
    ("wan14b", "transformer.blocks.3.attn2.add_v_proj", "unet.blocks.3.cross_attn.v_img", (5120, 5120)),
    ("wan14b", "transformer.blocks.3.attn1.to_out.0", "unet.blocks.3.self_attn.o", (5120, 5120)),
    ("wan14b", "transformer.condition_embedder.image_embedder.ff.net.0.proj", "unet.img_emb.proj.1",
     (1280, 1280)),
    ("wan14b", "blocks.12.cross_attn.v", "unet.blocks.12.cross_attn.v", (5120, 5120)),
    ("wan14b", "lycoris_blocks_0_ffn_net_2", "unet.blocks.0.ffn.2", (5120, 13824)),
    ("wan5b", "lora_unet_blocks_29_ffn_2", "unet.blocks.29.ffn.2", (3072, 14336)),
    ("wan5b", "diffusion_model.text_embedding.0", "unet.text_embedding.0", (3072, 4096)),
    ("wan5b", "transformer.proj_out", "unet.head.head", (192, 3072)),
    ("wan1b", "diffusion_model.blocks.29.cross_attn.o", "unet.blocks.29.cross_attn.o", (1536, 1536)),
    ("wan1b", "transformer.blocks.0.ffn.net.0.proj", "unet.blocks.0.ffn.0", (8960, 1536)),
    # SD3.5: sd-scripts (lora_unet_ + SAI MMDiT names), ComfyUI (diffusion_model.), diffusers /
    # SimpleTuner / ai-toolkit (transformer. + diffusers names, split q/k/v)
    ("sd35l", "lora_unet_joint_blocks_0_x_block_attn_qkv", "unet.joint_blocks.0.x_block.attn.qkv", (7296, 2432)),
    ("sd35l", "lora_unet_joint_blocks_37_context_block_adaLN_modulation_1",
     "unet.joint_blocks.37.context_block.adaLN_modulation.1", (4864, 2432)),
    ("sd35l", "transformer.transformer_blocks.10.attn.add_v_proj", "unet.joint_blocks.10.context_block.attn.qkv:v",
     (2432, 2432)),
    ("sd35l", "transformer.transformer_blocks.0.ff_context.net.2", "unet.joint_blocks.0.context_block.mlp.fc2",
     (2432, 9728)),
    ("sd35l", "diffusion_model.joint_blocks.36.context_block.attn.proj", "unet.joint_blocks.36.context_block.attn.proj",
     (2432, 2432)),
    ("sd35l", "transformer.time_text_embed.text_embedder.linear_1", "unet.y_embedder.mlp.0", (2432, 2048)),
    ("sd35m", "transformer.transformer_blocks.12.attn2.to_k", "unet.joint_blocks.12.x_block.attn2.qkv:k",
     (1536, 1536)),
    ("sd35m", "lora_unet_joint_blocks_3_x_block_attn2_qkv", "unet.joint_blocks.3.x_block.attn2.qkv", (4608, 1536)),
    ("sd35m", "diffusion_model.joint_blocks.23.x_block.mlp.fc1", "unet.joint_blocks.23.x_block.mlp.fc1",
     (6144, 1536)),
    ("sd35m", "lycoris_transformer_blocks_0_attn_to_out_0", "unet.joint_blocks.0.x_block.attn.proj", (1536, 1536)),
    ("sd35m", "transformer.context_embedder", "unet.context_embedder", (1536, 4096)),
    # Lumina-Image-2.0: sd-scripts / ComfyUI (NextDiT names, fused GQA qkv), diffusers / SimpleTuner
    ("lumina2", "lora_unet_layers_0_attention_qkv", "unet.layers.0.attention.qkv", (3840, 2304)),
    ("lumina2", "diffusion_model.layers.25.feed_forward.w3", "unet.layers.25.feed_forward.w3", (9216, 2304)),
    ("lumina2", "transformer.layers.3.attn.to_k", "unet.layers.3.attention.qkv:k", (768, 2304)),
    ("lumina2", "transformer.noise_refiner.1.norm1.linear", "unet.noise_refiner.1.adaLN_modulation.1",
     (9216, 1024)),
    ("lumina2", "transformer.context_refiner.0.feed_forward.linear_2", "unet.context_refiner.0.feed_forward.w2",
     (2304, 9216)),
    ("lumina2", "transformer.time_caption_embed.caption_embedder.1", "unet.cap_embedder.1", (2304, 2304)),
    ("lumina2", "transformer.norm_out.linear_2", "unet.final_layer.linear", (64, 2304)),
    ("lumina2", "lycoris_layers_2_attn_to_out_0", "unet.layers.2.attention.out", (2304, 2304)),
    # HiDream-I1 (released in the diffusers layout): diffusers / ai-toolkit, ComfyUI, kohya-style
    ("hidream", "transformer.double_stream_blocks.0.block.attn1.to_q_t",
     "unet.double_stream_blocks.0.block.attn1.to_q_t", (2560, 2560)),
    ("hidream", "diffusion_model.single_stream_blocks.31.block.ff_i.experts.3.w2",
     "unet.single_stream_blocks.31.block.ff_i.experts.3.w2", (2560, 6912)),
    ("hidream", "lora_unet_double_stream_blocks_15_block_ff_i_shared_experts_w1",
     "unet.double_stream_blocks.15.block.ff_i.shared_experts.w1", (3584, 2560)),
    ("hidream", "transformer.caption_projection.48.linear", "unet.caption_projection.48.linear", (2560, 4096)),
    ("hidream", "double_stream_blocks.2.block.ff_t.w3", "unet.double_stream_blocks.2.block.ff_t.w3", (6912, 2560)),
    # FLUX.2-klein: FLUX.2's names (musubi-tuner, ComfyUI; ai-toolkit diffusers names); the shapes
    # of the 4B's published tensors (img_in, txt_in, linear1, the shared modulations)
    ("flux2klein4b", "lora_unet_img_in", "unet.img_in", (3072, 128)),
    ("flux2klein4b", "diffusion_model.txt_in", "unet.txt_in", (3072, 7680)),
    ("flux2klein4b", "lora_unet_single_blocks_19_linear1", "unet.single_blocks.19.linear1", (27648, 3072)),
    ("flux2klein4b", "diffusion_model.double_stream_modulation_img.lin", "unet.double_stream_modulation_img.lin",
     (18432, 3072)),
    ("flux2klein4b", "transformer.single_stream_modulation.linear", "unet.single_stream_modulation.lin",
     (9216, 3072)),
    ("flux2klein4b", "transformer.transformer_blocks.4.attn.add_k_proj", "unet.double_blocks.4.txt_attn.qkv:k",
     (3072, 3072)),
    ("flux2klein9b", "lora_unet_double_blocks_7_img_attn_qkv", "unet.double_blocks.7.img_attn.qkv", (12288, 4096)),
    ("flux2klein9b", "transformer.single_transformer_blocks.23.attn.to_out", "unet.single_blocks.23.linear2",
     (4096, 16384)),
]


@pytest.mark.parametrize("arch_name,stem,canonical,shape", REAL_STEMS)
def test_real_stems_resolve_to_the_table(arch_name, stem, canonical, shape):
    a = arch.get(arch_name)
    assert resolve_stem(a, stem) == (canonical, False)
    assert a.modules[canonical].shape == shape


def test_fused_parents_are_their_parts_in_row_order():
    z = arch.get("zimage")
    qkv = z.modules["unet.layers.0.attention.qkv"]
    assert qkv.parts == ("unet.layers.0.attention.qkv:q", "unet.layers.0.attention.qkv:k",
                         "unet.layers.0.attention.qkv:v")
    assert [z.modules[p].row_offset for p in qkv.parts] == [0, 3840, 7680]
    f2 = arch.get("flux2")
    assert f2.modules["unet.double_blocks.3.txt_attn.qkv:v"].row_offset == 12288
    assert not f2.modules["unet.single_blocks.0.linear1"].parts  # fused in both layouts
    assert arch.get("chroma").modules["unet.single_blocks.2.linear1:mlp"].row_offset == 9216


def test_flux2_final_modulation_is_read_with_its_halves_swapped():
    """diffusers' norm_out.linear holds (scale, shift); BFL's final_layer.adaLN_modulation.1 (shift, scale)."""
    f2 = arch.get("flux2")
    assert resolve_stem(f2, "transformer.norm_out.linear") == ("unet.final_layer.adaLN_modulation.1", True)
    assert resolve_stem(f2, "lora_unet_final_layer_adaLN_modulation_1") == ("unet.final_layer.adaLN_modulation.1",
                                                                            False)


def test_text_encoders_without_a_table_resolve_generically():
    for name in F.DITS:
        a = arch.get(name)
        for stem in ("lora_te_model_layers_0_self_attn_q_proj", "lora_te1_model_layers_0_self_attn_q_proj",
                     "text_encoder.model.layers.0.self_attn.q_proj"):
            assert resolve_stem(a, stem) == ("te1.model_layers_0_self_attn_q_proj", False), (name, stem)
        spec = a.modules["te1.model_layers_0_self_attn_q_proj"]
        assert spec.kind == "generic" and arch.is_text_encoder(spec.name)
        assert "te1.model_layers_0_self_attn_q_proj" not in a.modules  # looked up, not stored
    with pytest.raises(KeyError):
        arch.get("zimage").modules["unet.layers.99.attention.qkv"]


# --------------------------------------------------------------------------- fusion, exact
TE_ROW = F.text_encoder_row("model.layers.0.self_attn.q_proj", (64, 48))

SUBSETS = {
    "zimage": (("layers.0.attention.", "layers.0.feed_forward.w2", "t_embedder.mlp.2"), "layers.1.attention.out",
               "noise_refiner.0.attention.qkv"),
    "qwenimage": (("transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.add_k_proj",
                   "transformer_blocks.0.img_mlp.net.2", "unet.img_in"), "transformer_blocks.1.attn.to_out.0",
                  "transformer_blocks.2.attn.to_v"),
    "flux2": (("double_blocks.0.img_attn.qkv", "double_blocks.0.txt_attn.proj", "single_blocks.0.linear2",
               "unet.img_in"), "double_blocks.1.img_attn.qkv", "single_blocks.2.linear2"),
    "chroma": (("double_blocks.0.img_attn.qkv", "single_blocks.1.linear1", "distilled_guidance_layer.layers.0.in_layer"),
               "double_blocks.1.txt_mlp.2", "single_blocks.3.linear2"),
    "wan14b": (("blocks.0.self_attn.", "blocks.0.cross_attn.k_img", "blocks.0.ffn.2", "img_emb.proj.3"),
               "blocks.1.cross_attn.o", "time_embedding.2"),
    "wan5b": (("blocks.0.cross_attn.", "blocks.0.ffn.0", "text_embedding.2"), "blocks.1.self_attn.v", "head.head"),
    "wan1b": (("blocks.0.self_attn.q", "blocks.0.ffn.", "time_projection.1"), "blocks.2.cross_attn.q",
              "blocks.29.self_attn.o"),
    "sd35l": (("joint_blocks.0.x_block.attn.qkv", "joint_blocks.0.context_block.mlp.fc2", "t_embedder.mlp.2"),
              "joint_blocks.1.x_block.attn.proj", "joint_blocks.37.context_block.attn.qkv"),
    "sd35m": (("joint_blocks.0.x_block.attn2.qkv", "joint_blocks.0.context_block.attn.qkv", "unet.context_embedder"),
              "joint_blocks.14.x_block.mlp.fc1", "joint_blocks.2.x_block.adaLN_modulation.1"),
    "lumina2": (("layers.0.attention.", "context_refiner.1.feed_forward.w1", "t_embedder.mlp.0"),
                "noise_refiner.0.attention.qkv", "layers.25.adaLN_modulation.1"),
    "hidream": (("double_stream_blocks.0.block.attn1.to_q", "double_stream_blocks.0.block.ff_i.experts.0.w1",
                 "p_embedder.pooled_embedder.linear_1"), "single_stream_blocks.0.block.attn1.to_out",
                "double_stream_blocks.1.block.ff_t.w2"),
    "flux2klein4b": (("double_blocks.0.img_attn.qkv", "double_blocks.0.img_mlp.0", "single_blocks.0.linear1"),
                     "double_blocks.4.txt_attn.proj", "single_stream_modulation.lin"),
    "flux2klein9b": (("double_blocks.0.txt_attn.qkv", "single_blocks.23.linear2", "unet.txt_in"),
                     "double_blocks.7.img_mlp.2", "double_blocks.1.img_attn.qkv"),
}


def _rows(arch_name, blocks):
    return [r for r in F.select(arch_name, "linear", ("unet",)) if any(b in r["name"] for b in blocks)]


@pytest.mark.parametrize("arch_name", F.DITS)
@pytest.mark.parametrize("fmt_c,fmt_s", [("kohya", "ldm-peft"), ("ldm", "peft"), ("lycoris", "kohya")])
def test_written_file_reconstructs_the_formula(tmp_path, arch_name, fmt_c, fmt_s):
    blocks, only_c, only_s = SUBSETS[arch_name]
    rows = _rows(arch_name, blocks) + [TE_ROW]
    alpha = {"kohya": 2, "ldm": 2, "lycoris": 2}
    c = F.make_lora(tmp_path / "c.safetensors", arch_name, rows + _rows(arch_name, (only_c,)), fmt=fmt_c, rank=4,
                    alpha=alpha.get(fmt_c), seed=1)
    s = F.make_lora(tmp_path / "s.safetensors", arch_name, rows + _rows(arch_name, (only_s,)), fmt=fmt_s, rank=6,
                    alpha=alpha.get(fmt_s), seed=2)
    C, S = load_pair(c.path, s.path)
    assert C.arch == S.arch == arch_name
    params = FuseParams(mu=0.5, content_weight=0.8, style_weight=1.2)
    fused = fuse(C, S, params, dtype=torch.float32)
    saved = save_fused(fused, tmp_path / "out.safetensors", content_meta=C.metadata, style_meta=S.metadata)
    got = F.read_output(saved.path, arch_name, [TE_ROW])
    expected = set(c.truth) | set(s.truth)
    assert set(got) == expected
    for n in expected:
        te = n.startswith("te1.")
        up, down = F.fused_factors(s.truth.get(n), c.truth.get(n), 1.2, 0.8, 0.0 if te else 1 / 3)
        err = F.lowrank_rel_err(*got[n], up, down)
        assert err < 1e-5, (n, err)
    # the smallest projected pair once more against the dense formula itself
    small = min((n for n in set(c.truth) & set(s.truth) if not n.startswith("te1.")),
                key=lambda n: c.truth[n].up.shape[0] * c.truth[n].down.shape[1])
    dense = F.dense_fused(s.truth[small], c.truth[small], 1.2, 0.8, 1 / 3)
    u, d = got[small]
    assert torch.allclose(u @ d, dense, rtol=0, atol=1e-5 * float(dense.abs().max()))


def _rewrite_split(made, arch_name, path, fmt):
    """The truth of a fused-layout file written again with every fused parent split into its parts
    (the same update, diffusers names), as a trainer on the diffusers model saves it."""
    sd = {}
    for name, t in made.truth.items():
        row = F.rows_by_name(arch_name)[name]
        alias = row["aliases"][0].split(".", 1)[1]
        if fmt == "ldm-peft":
            sd[f"diffusion_model.{alias}.lora_A.weight"] = t.down.float()
            sd[f"diffusion_model.{alias}.lora_B.weight"] = (t.scale * t.up).float()
        else:  # kohya-split
            key = "lora_unet_" + F.flat(alias)
            sd[f"{key}.lora_down.weight"] = t.down.float()
            sd[f"{key}.lora_up.weight"] = (t.scale * t.up).float()
            sd[f"{key}.alpha"] = torch.tensor(float(t.down.shape[0]))
    save_file(sd, str(path))


@pytest.mark.parametrize("arch_name,parents,fmt", [
    ("lumina2", ("unet.layers.4.attention.qkv",), "ldm-peft"),  # grouped-query: q 2304, k and v 768 rows
    ("sd35m", ("unet.joint_blocks.2.x_block.attn2.qkv", "unet.joint_blocks.2.context_block.attn.qkv"), "kohya-split"),
    ("zimage", ("unet.layers.4.attention.qkv", "unet.context_refiner.1.attention.qkv"), "ldm-peft"),
    ("zimage", ("unet.layers.4.attention.qkv",), "kohya-split"),
    ("flux2", ("unet.double_blocks.2.img_attn.qkv", "unet.double_blocks.2.txt_attn.qkv"), "ldm-peft"),
    ("chroma", ("unet.double_blocks.4.img_attn.qkv", "unet.single_blocks.2.linear1"), "ldm-peft"),
])
def test_split_content_equals_fused_content(tmp_path, arch_name, parents, fmt):
    """A fused-qkv content and the same update as split q/k/v give the same fusion with a split
    style: the pairing and the projection respect the exact row slices."""
    rows = [F.rows_by_name(arch_name)[p] for p in parents]
    style = F.make_lora(tmp_path / "s.safetensors", arch_name, rows, fmt="ldm-peft", rank=4, seed=5)
    fused_c = F.make_lora(tmp_path / "cf.safetensors", arch_name, rows, rank=4, alpha=4, seed=6)
    _rewrite_split(fused_c, arch_name, tmp_path / "cs.safetensors", fmt)
    a = fuse(*load_pair(fused_c.path, style.path), FuseParams(), dtype=torch.float32)
    b = fuse(*load_pair(tmp_path / "cs.safetensors", style.path), FuseParams(), dtype=torch.float32)
    n_parts = sum(len(r["parts"]) for r in rows)
    assert a.modules.keys() == b.modules.keys() and len(a.modules) == n_parts
    for n in a.modules:
        assert F.lowrank_rel_err(b.modules[n].up, b.modules[n].down, a.modules[n].up, a.modules[n].down) < 1e-6
    out = load_file(save_fused(a, tmp_path / "o.safetensors").path)
    key = F.kohya_key(arch_name, rows[0])
    # the written fused weight keeps the content's shared down: rank = style parts + one content down
    assert out[f"{key}.lora_down.weight"].shape[0] == len(rows[0]["parts"]) * 4 + 4


@pytest.mark.parametrize("arch_name", F.DITS)
def test_same_update_in_every_family_fuses_the_same(tmp_path, arch_name):
    """Modules without parts, written with one seed in each family, read to the same factors."""
    blocks = {"zimage": ("layers.2.feed_forward.w1", "layers.2.attention.out"),
              "qwenimage": ("transformer_blocks.5.attn.to_k", "transformer_blocks.5.txt_mlp.net.2"),
              "flux2": ("double_blocks.3.img_mlp.2", "single_blocks.9.linear1"),
              "chroma": ("double_blocks.3.img_attn.proj", "single_blocks.9.linear2"),
              "wan14b": ("blocks.5.cross_attn.v_img", "blocks.5.ffn.2"),
              "wan5b": ("blocks.5.self_attn.o", "time_embedding.0"),
              "wan1b": ("blocks.5.cross_attn.k", "head.head"),
              "sd35l": ("joint_blocks.5.x_block.mlp.fc2", "joint_blocks.5.context_block.attn.proj"),
              "sd35m": ("joint_blocks.5.x_block.attn2.proj", "y_embedder.mlp.2"),
              "lumina2": ("layers.5.feed_forward.w2", "final_layer.adaLN_modulation.1"),
              "hidream": ("single_stream_blocks.5.block.attn1.to_v", "caption_projection.3."),
              "flux2klein4b": ("double_blocks.2.img_mlp.2", "single_blocks.19.linear1"),
              "flux2klein9b": ("double_blocks.2.txt_mlp.0", "double_stream_modulation_txt.lin")}[arch_name]
    rows = _rows(arch_name, blocks)
    assert rows and not any(r.get("parts") for r in rows)
    style = F.make_lora(tmp_path / "s.safetensors", arch_name, rows, rank=5, seed=9)
    results = []
    for fmt in ("kohya", "ldm", "ldm-peft", "peft", "lycoris", "kohya-split"):
        c = F.make_lora(tmp_path / f"c_{fmt}.safetensors", arch_name, rows, fmt=fmt, rank=3, seed=8)
        C, S = load_pair(c.path, style.path)
        results.append((fmt, fuse(C, S, FuseParams(mu=2.0), dtype=torch.float32)))
    ref = results[0][1]
    for fmt, f in results[1:]:
        assert f.modules.keys() == ref.modules.keys() == {r["name"] for r in rows}, fmt
        for n, m in f.modules.items():
            assert F.lowrank_rel_err(m.up, m.down, ref.modules[n].up, ref.modules[n].down) < 1e-6, (fmt, n)


# --------------------------------------------------------------------------- output
WRITTEN_KEYS = {  # literal names ComfyUI / Forge Neo map (lora_unet_ + flattened diffusion_model key)
    "zimage": ["lora_unet_layers_0_attention_qkv", "lora_unet_layers_0_attention_out",
               "lora_unet_layers_0_feed_forward_w2", "lora_unet_t_embedder_mlp_2", "lora_te1_model_layers_0_self_attn_q_proj"],
    "qwenimage": ["lora_unet_transformer_blocks_0_attn_to_q", "lora_unet_transformer_blocks_0_attn_add_k_proj",
                  "lora_unet_transformer_blocks_0_img_mlp_net_2", "lora_unet_img_in"],
    "flux2": ["lora_unet_double_blocks_0_img_attn_qkv", "lora_unet_double_blocks_0_txt_attn_proj",
              "lora_unet_single_blocks_0_linear2", "lora_unet_img_in"],
    "chroma": ["lora_unet_double_blocks_0_img_attn_qkv", "lora_unet_single_blocks_1_linear1",
               "lora_unet_distilled_guidance_layer_layers_0_in_layer"],
    "wan14b": ["lora_unet_blocks_0_self_attn_q", "lora_unet_blocks_0_self_attn_o", "lora_unet_blocks_0_cross_attn_k_img",
               "lora_unet_blocks_0_ffn_2", "lora_unet_img_emb_proj_3"],
    "wan5b": ["lora_unet_blocks_0_cross_attn_k", "lora_unet_blocks_0_ffn_0", "lora_unet_text_embedding_2"],
    "wan1b": ["lora_unet_blocks_0_self_attn_q", "lora_unet_blocks_0_ffn_2", "lora_unet_time_projection_1"],
    "sd35l": ["lora_unet_joint_blocks_0_x_block_attn_qkv", "lora_unet_joint_blocks_0_context_block_mlp_fc2",
              "lora_unet_t_embedder_mlp_2"],
    "sd35m": ["lora_unet_joint_blocks_0_x_block_attn2_qkv", "lora_unet_joint_blocks_0_context_block_attn_qkv",
              "lora_unet_context_embedder"],
    "lumina2": ["lora_unet_layers_0_attention_qkv", "lora_unet_layers_0_attention_out",
                "lora_unet_context_refiner_1_feed_forward_w1", "lora_unet_t_embedder_mlp_0"],
    "hidream": ["lora_unet_double_stream_blocks_0_block_attn1_to_q", "lora_unet_double_stream_blocks_0_block_attn1_to_q_t",
                "lora_unet_double_stream_blocks_0_block_ff_i_experts_0_w1", "lora_unet_p_embedder_pooled_embedder_linear_1"],
    "flux2klein4b": ["lora_unet_double_blocks_0_img_attn_qkv", "lora_unet_double_blocks_0_img_mlp_0",
                     "lora_unet_single_blocks_0_linear1"],
    "flux2klein9b": ["lora_unet_double_blocks_0_txt_attn_qkv", "lora_unet_single_blocks_23_linear2", "lora_unet_txt_in"],
}
WRITTEN_META = {
    "zimage": ("z_image", "Z-Image/lora"), "qwenimage": ("qwen_image", "Qwen-Image/lora"),
    "flux2": ("flux2", "Flux.2-dev/lora"), "chroma": ("chroma", "chroma/lora"),
    "wan14b": ("wan_14b", "Wan2.1-14B/lora"), "wan5b": ("wan2.2_5b", "Wan2.2-TI2V-5B/lora"),
    "wan1b": ("wan2.1_1.3b", "Wan2.1-T2V-1.3B/lora"),
    "sd35l": ("sd3", "stable-diffusion-3.5-large/lora"), "sd35m": ("sd3", "stable-diffusion-3.5-medium/lora"),
    "lumina2": ("lumina2", "lumina-2/lora"), "hidream": ("hidream", "HiDream-I1/lora"),
    "flux2klein4b": ("flux2_klein_4b", "Flux.2-klein-4b/lora"), "flux2klein9b": ("flux2_klein_9b", "Flux.2-klein-9b/lora"),
}


@pytest.mark.parametrize("arch_name", F.DITS)
def test_output_names_and_metadata(tmp_path, arch_name):
    blocks, _, _ = SUBSETS[arch_name]
    rows = _rows(arch_name, blocks) + [TE_ROW]
    c = F.make_lora(tmp_path / "c.safetensors", arch_name, rows, fmt="ldm-peft", rank=4, seed=1)
    s = F.make_lora(tmp_path / "s.safetensors", arch_name, rows, fmt="ldm-peft", rank=4, seed=2)
    C, S = load_pair(c.path, s.path)
    saved = save_fused(fuse(C, S, FuseParams(), dtype=torch.float16), tmp_path / "o.safetensors")
    sd = load_file(saved.path)
    stems = {k.split(".")[0] for k in sd}
    for key in WRITTEN_KEYS[arch_name]:
        assert key in stems, (key, sorted(stems)[:8])
    assert all(k.startswith(("lora_unet_", "lora_te1_")) for k in stems)
    version, architecture = WRITTEN_META[arch_name]
    assert saved.metadata["ss_base_model_version"] == version
    assert saved.metadata["modelspec.architecture"] == architecture
    # Forge Neo files a LoRA as FLUX.1 by this implementation URL: a FLUX.2/Chroma file must not carry it
    assert saved.metadata["modelspec.implementation"] != "https://github.com/black-forest-labs/flux"
    # read back: detected as the same model from names, shapes and its own metadata
    again = load_lora(saved.path)
    assert again.arch == arch_name and peek(saved.path).arch == arch_name


# --------------------------------------------------------------------------- detection, refusal
@pytest.mark.parametrize("meta,expected", [
    ({"modelspec.architecture": "Z-Image/lora"}, "zimage"),
    ({"modelspec.architecture": "Qwen-Image-Edit-2511/lora"}, "qwenimage"),
    ({"modelspec.architecture": "Flux.2-dev/lora"}, "flux2"),
    ({"modelspec.architecture": "Flux.2-klein-4b/lora"}, "flux2klein4b"),
    ({"modelspec.architecture": "Flux.2-klein-base-9b/lora"}, "flux2"),  # not "klein-9b": FLUX.2 by "flux.2"
    ({"ss_base_model_version": "flux2_klein_9b"}, "flux2klein9b"),
    ({"ss_base_model_version": "chroma"}, "chroma"),
    ({"modelspec.architecture": "Flux.1-dev/lora"}, "flux"),
    ({"ss_base_model_version": "flux1"}, "flux"),
    ({"modelspec.architecture": "Wan2.2-TI2V-5B/lora"}, "wan14b"),  # "a Wan": the shapes pick the size
    ({"modelspec.implementation": "https://github.com/Wan-Video/Wan2.1"}, "wan14b"),
    ({"modelspec.architecture": "stable-diffusion-3.5-medium/lora"}, "sd35l"),  # "an SD3": shapes pick
    ({"ss_base_model_version": "sd3"}, "sd35l"),
    ({"modelspec.architecture": "lumina-2/lora"}, "lumina2"),
    ({"modelspec.architecture": "HiDream-I1/lora"}, "hidream"),
    ({"modelspec.architecture": "stable-diffusion-v1/lora"}, "sd1"),
    ({"modelspec.implementation": "https://github.com/black-forest-labs/flux"}, "flux"),
])
def test_metadata_names_the_model(meta, expected):
    assert arch.arch_from_metadata(meta) == expected


@pytest.mark.parametrize("a,rows_a,b,rows_b,labels", [
    ("zimage", ("layers.0.attention.qkv",), "qwenimage", ("transformer_blocks.30.attn.to_q",), ("Z-Image", "Qwen-Image")),
    ("flux", ("double_blocks.0.img_attn.qkv",), "flux2", ("double_blocks.0.img_attn.qkv",), ("FLUX", "FLUX.2")),
    ("chroma", ("distilled_guidance_layer.layers.0.in_layer",), "flux", ("double_blocks.0.img_mod.lin",),
     ("Chroma", "FLUX")),
    ("wan14b", ("blocks.0.self_attn.q",), "wan5b", ("blocks.0.self_attn.q",), ("Wan 2.1/2.2 14B", "Wan 2.2 5B")),
    ("wan1b", ("blocks.0.ffn.0",), "wan5b", ("blocks.0.ffn.0",), ("Wan 2.1 1.3B", "Wan 2.2 5B")),
    ("sd35l", ("joint_blocks.0.x_block.attn.qkv",), "sd35m", ("joint_blocks.0.x_block.attn.qkv",),
     ("SD3.5 Large", "SD3.5 Medium")),
    ("flux2klein4b", ("single_blocks.0.linear1",), "flux2", ("single_blocks.0.linear1",), ("FLUX.2-klein 4B", "FLUX.2")),
    ("flux2klein4b", ("double_blocks.0.img_mlp.0",), "flux2klein9b", ("double_blocks.0.img_mlp.0",),
     ("FLUX.2-klein 4B", "FLUX.2-klein 9B")),
    ("flux2klein4b", ("single_blocks.0.linear1",), "flux", ("single_blocks.0.linear1",), ("FLUX.2-klein 4B", "FLUX")),
    ("hidream", ("double_stream_blocks.0.block.attn1.to_q",), "qwenimage", ("transformer_blocks.30.attn.to_q",),
     ("HiDream-I1", "Qwen-Image")),
    ("lumina2", ("layers.0.attention.qkv",), "zimage", ("layers.0.attention.qkv",), ("Lumina-Image-2.0", "Z-Image")),
    ("sd35m", ("joint_blocks.0.x_block.mlp.fc1",), "flux", ("double_blocks.0.img_mlp.0",), ("SD3.5 Medium", "FLUX")),
    ("wan14b", ("blocks.0.cross_attn.q",), "qwenimage", ("transformer_blocks.30.attn.to_q",),
     ("Wan 2.1/2.2 14B", "Qwen-Image")),
])
def test_pair_of_different_models_is_refused_naming_both(tmp_path, a, rows_a, b, rows_b, labels):
    ra = [r for r in F.table(a) if ":" not in r["name"] and any(x in r["name"] for x in rows_a)][:1]
    rb = [r for r in F.table(b) if ":" not in r["name"] and any(x in r["name"] for x in rows_b)][:1]
    fa = F.make_lora(tmp_path / "a.safetensors", a, ra, rank=2, seed=1)
    fb = F.make_lora(tmp_path / "b.safetensors", b, rb, rank=2, seed=2)
    assert load_lora(fa.path).arch == a and load_lora(fb.path).arch == b
    with pytest.raises(ArchitectureError) as e:
        load_pair(fa.path, fb.path)
    msg = str(e.value)
    assert f"is for {labels[0]} but" in msg and f"is for {labels[1]};" in msg


def test_chroma_and_flux_pair_where_their_layers_agree(tmp_path):
    """Chroma's attention and MLP weights are FLUX.1's: such files fit both, and metadata decides."""
    rows = [F.rows_by_name("flux")["unet.double_blocks.2.img_attn.qkv"]]
    c = F.make_lora(tmp_path / "c.safetensors", "chroma", rows, rank=2, seed=1,
                    metadata={"ss_base_model_version": "chroma"})
    f = F.make_lora(tmp_path / "f.safetensors", "flux", rows, rank=2, seed=2)
    assert load_lora(c.path).arch == "chroma" and load_lora(f.path).arch == "flux"
    assert {"flux", "chroma"} <= set(load_lora(c.path).arch_candidates)
    C, S = load_pair(c.path, f.path)
    assert C.arch == S.arch
    assert C.arch == "chroma"  # the one a file's metadata names, not the preference order's FLUX.1


def _shared(tmp_path, metas):
    """Files on a layer FLUX.1 and Chroma share (their keys fit both), with these metadata."""
    rows = [F.rows_by_name("flux")["unet.double_blocks.2.img_attn.qkv"]]
    return [F.make_lora(tmp_path / f"f{i}.safetensors", "flux", rows, rank=2, seed=i, metadata=m).path
            for i, m in enumerate(metas)]


def test_files_whose_keys_fit_both_but_whose_metadata_name_different_models_are_refused(tmp_path):
    chroma, flux = _shared(tmp_path, [{"ss_base_model_version": "chroma"},
                                      {"modelspec.architecture": "Flux.1-dev/lora"}])
    with pytest.raises(ArchitectureError) as e:
        load_pair(chroma, flux)
    msg = str(e.value)
    assert "f0 is for Chroma but" in msg and "f1 is for FLUX" in msg and "metadata" in msg and "--arch" in msg
    # the loaded model decides where there is one: no refusal, both read for it
    C, S = load_pair(chroma, flux, arch="flux")
    assert C.arch == S.arch == "flux"
    # several files: the same rule (a third file without metadata does not hide the conflict)
    from lib_nplora.cache import Caches

    (tmp_path / "p").mkdir()
    (plain,) = _shared(tmp_path / "p", [{}])
    with pytest.raises(ArchitectureError, match="metadata"):
        Caches().load_set([plain, chroma, flux])
    assert {lo.arch for lo in Caches().load_set([plain, chroma])} == {"chroma"}


def test_metadata_the_keys_contradict_is_not_used_for_pairing(tmp_path):
    """A FLUX.2 file whose metadata says SDXL (a trainer's copy-paste) pairs by its keys."""
    rows = _rows("flux2", ("double_blocks.1.img_attn.qkv",))[:1]
    a = F.make_lora(tmp_path / "a.safetensors", "flux2", rows, rank=2, seed=1,
                    metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    b = F.make_lora(tmp_path / "b.safetensors", "flux2", rows, rank=2, seed=2,
                    metadata={"modelspec.architecture": "Flux.2-dev/lora"})
    C, S = load_pair(a.path, b.path)
    assert C.arch == S.arch == "flux2"


def test_wan_sizes_are_told_apart_by_shapes_whatever_the_metadata(tmp_path):
    """One marker set for every Wan: a 5B file that says "Wan" is read as the 5B, never as the 14B."""
    rows = _rows("wan5b", ("blocks.3.self_attn.q",))
    f = F.make_lora(tmp_path / "w.safetensors", "wan5b", rows, rank=2, seed=1,
                    metadata={"modelspec.architecture": "Wan2.2-TI2V-5B/lora"})
    got = load_lora(f.path)
    assert got.arch == "wan5b" and got.arch_candidates == ("wan5b",)


def test_wan_t2v_and_i2v_loras_pair_on_the_14b_table(tmp_path):
    """A Wan 2.1 I2V LoRA (image cross-attention k_img/v_img) and a T2V / Wan 2.2 A14B one fuse:
    the shared layers are projected, the I2V-only ones pass through as the content's."""
    shared = _rows("wan14b", ("blocks.2.cross_attn.k",))
    i2v_only = _rows("wan14b", ("blocks.2.cross_attn.k_img",))
    c = F.make_lora(tmp_path / "i2v.safetensors", "wan14b", shared + i2v_only, fmt="kohya", rank=3, seed=1)
    s = F.make_lora(tmp_path / "t2v.safetensors", "wan14b", shared, fmt="ldm", rank=3, seed=2)
    C, S = load_pair(c.path, s.path)
    assert C.arch == S.arch == "wan14b"
    saved = save_fused(fuse(C, S, FuseParams(mu=1.0), dtype=torch.float32), tmp_path / "o.safetensors")
    got = F.read_output(saved.path, "wan14b")
    assert set(got) == {shared[0]["name"], i2v_only[0]["name"]}
    for n in got:
        up, down = F.fused_factors(s.truth.get(n), c.truth[n], 1.0, 1.0, 0.5)
        assert F.lowrank_rel_err(*got[n], up, down) < 1e-5, n


def test_sd3_pre_only_context_modulation_is_read_with_its_halves_swapped():
    """The last joint block's context modulation is an AdaLayerNormContinuous in diffusers
    ((scale, shift), as norm_out); SAI's holds (shift, scale). The blocks before are plain."""
    a = arch.get("sd35l")
    last = "unet.joint_blocks.37.context_block.adaLN_modulation.1"
    assert resolve_stem(a, "transformer.transformer_blocks.37.norm1_context.linear") == (last, True)
    assert resolve_stem(a, "lora_unet_joint_blocks_37_context_block_adaLN_modulation_1") == (last, False)
    assert resolve_stem(a, "transformer.transformer_blocks.36.norm1_context.linear") == (
        "unet.joint_blocks.36.context_block.adaLN_modulation.1", False)
    assert "unet.joint_blocks.37.context_block.attn.proj" not in a.modules  # pre-only: no output, no MLP
    assert "unet.joint_blocks.13.x_block.attn2.qkv" not in arch.get("sd35m").modules  # attn2 in 0-12 only


def test_sd3_text_encoders_are_written_as_kohya_te1_te2_te3(tmp_path):
    """CLIP-L, CLIP-G and T5 modules (diffusers text_encoder, _2, _3) come back as sd-scripts'
    lora_te1_ / lora_te2_ / lora_te3_ names; the denoiser is fused as usual."""
    tes = [F.text_encoder_row("text_model.encoder.layers.0.self_attn.q_proj", (32, 24)),
           F.text_encoder_row("text_model.encoder.layers.1.mlp.fc1", (40, 24), "te2", "text_encoder_2"),
           F.text_encoder_row("encoder.block.0.layer.0.SelfAttention.q", (24, 24), "te3", "text_encoder_3")]
    rows = _rows("sd35m", ("joint_blocks.1.x_block.attn.proj",)) + tes
    c = F.make_lora(tmp_path / "c.safetensors", "sd35m", rows, fmt="peft", rank=3, seed=1)
    s = F.make_lora(tmp_path / "s.safetensors", "sd35m", rows, fmt="peft", rank=3, seed=2)
    C, S = load_pair(c.path, s.path)
    assert C.arch == S.arch == "sd35m"
    stems = {k.split(".")[0] for k in load_file(save_fused(fuse(C, S, FuseParams()), tmp_path / "o.safetensors").path)}
    assert stems == {"lora_unet_joint_blocks_1_x_block_attn_proj", "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
                     "lora_te2_text_model_encoder_layers_1_mlp_fc1", "lora_te3_encoder_block_0_layer_0_SelfAttention_q"}


def test_hidream_llama_text_encoder_is_te4(tmp_path):
    """HiDream's fourth text encoder (Llama-3.1, diffusers text_encoder_4) is generic te4, written
    as lora_te4_ and read back as te4 (never projected)."""
    a = arch.get("hidream")
    assert resolve_stem(a, "text_encoder_4.model.layers.0.self_attn.q_proj") == (
        "te4.model_layers_0_self_attn_q_proj", False)
    assert resolve_stem(a, "lora_te4_model_layers_0_self_attn_q_proj") == ("te4.model_layers_0_self_attn_q_proj", False)
    assert arch.is_text_encoder("te4.model_layers_0_self_attn_q_proj")
    te4 = F.text_encoder_row("model.layers.0.self_attn.q_proj", (32, 24), "te4", "text_encoder_4")
    rows = _rows("hidream", ("double_stream_blocks.3.block.attn1.to_k",)) + [te4]
    c = F.make_lora(tmp_path / "c.safetensors", "hidream", rows, fmt="peft", rank=2, seed=1)
    s = F.make_lora(tmp_path / "s.safetensors", "hidream", rows, fmt="peft", rank=2, seed=2)
    C, S = load_pair(c.path, s.path)
    assert C.arch == "hidream"
    saved = save_fused(fuse(C, S, FuseParams(), dtype=torch.float32), tmp_path / "o.safetensors")
    got = F.read_output(saved.path, "hidream", [te4])
    up, down = F.fused_factors(s.truth[te4["name"]], c.truth[te4["name"]], 1.0, 1.0, 0.0)  # not projected
    assert F.lowrank_rel_err(*got[te4["name"]], up, down) < 1e-5


def test_text_encoder_only_dit_lora_pairs_with_the_other_files_model(tmp_path):
    te = F.make_lora(tmp_path / "te.safetensors", "zimage", [TE_ROW], rank=2, seed=1)
    rows = _rows("zimage", ("layers.0.attention.out",))
    z = F.make_lora(tmp_path / "z.safetensors", "zimage", rows, rank=2, seed=2)
    C, S = load_pair(te.path, z.path)
    assert C.arch == S.arch == "zimage"
    fused = fuse(C, S, FuseParams(), dtype=torch.float32)
    assert set(fused.modules) == {TE_ROW["name"], rows[0]["name"]}


def test_a_file_for_a_model_without_a_table_is_refused_clearly(tmp_path):
    """A FLUX.2-layout LoRA of a width no table has (hidden 5120) fits no table: refused, naming
    the file."""
    sd = {"diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight": torch.zeros(2, 5120),
          "diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight": torch.zeros(15360, 2),
          "diffusion_model.double_stream_modulation_img.lin.lora_A.weight": torch.zeros(2, 5120),
          "diffusion_model.double_stream_modulation_img.lin.lora_B.weight": torch.zeros(30720, 2)}
    save_file(sd, str(tmp_path / "other.safetensors"), metadata={"modelspec.architecture": "Flux.2-pro/lora"})
    with pytest.raises(Exception) as e:
        load_lora(tmp_path / "other.safetensors")
    assert "other.safetensors" in str(e.value)


def test_klein_4b_attention_fits_flux1_too_and_metadata_decides(tmp_path):
    """The 4B's double-block attention has FLUX.1's names and shapes (hidden 3072): such a file
    fits FLUX.1, Chroma and the 4B, and is read as FLUX.1 unless its metadata (musubi-tuner's
    Flux.2-klein-4b) says klein."""
    rows = [F.rows_by_name("flux2klein4b")["unet.double_blocks.1.img_attn.qkv"]]
    bare = F.make_lora(tmp_path / "bare.safetensors", "flux2klein4b", rows, rank=2, seed=1)
    said = F.make_lora(tmp_path / "said.safetensors", "flux2klein4b", rows, rank=2, seed=2,
                       metadata={"modelspec.architecture": "Flux.2-klein-4b/lora"})
    assert {"flux", "chroma", "flux2klein4b"} <= set(load_lora(bare.path).arch_candidates)
    assert load_lora(bare.path).arch == "flux" and load_lora(said.path).arch == "flux2klein4b"
    C, S = load_pair(said.path, bare.path)  # one model for both (the first both fit, as for Chroma)
    assert C.arch == S.arch
    C, S = load_pair(said.path, said.path)
    assert C.arch == S.arch == "flux2klein4b"


def test_hosts_that_run_each_model():
    assert "a1111" not in arch.hosts_running("zimage") and "forge_neo" in arch.hosts_running("zimage")
    assert arch.hosts_running("flux2") == {"comfyui"}
    assert arch.hosts_running("sd35l") == arch.hosts_running("sd35m") == arch.hosts_running("hidream") == {"comfyui"}
    assert arch.hosts_running("lumina2") == {"forge_neo", "comfyui"}
    assert arch.hosts_running("flux2klein4b") == arch.hosts_running("flux2klein9b") == {"comfyui"}
    assert arch.hosts_running("wan5b") == {"comfyui"} and "forge_neo" in arch.hosts_running("wan14b")
    assert "a1111" in arch.hosts_running("sdxl") and "a1111" not in arch.hosts_running("flux")


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_lycoris_content_on_a_dit(tmp_path, kind):
    """SimpleTuner/LyCORIS LoHa and LoKr files for a DiT (``lycoris_`` + diffusers names) fuse
    exactly with a plain style (small modules: the truth of these kinds is dense)."""
    rows = _rows("zimage", ("t_embedder.mlp.2", "layers.0.adaLN_modulation.0"))
    c = F.make_lora(tmp_path / "c.safetensors", "zimage", rows, fmt="lycoris", rank=3, alpha=3, seed=3, kind=kind)
    s = F.make_lora(tmp_path / "s.safetensors", "zimage", rows, fmt="ldm-peft", rank=4, seed=4)
    C, S = load_pair(c.path, s.path)
    assert C.arch == "zimage" and {m.kind for m in C.modules.values()} == {kind}
    fused = fuse(C, S, FuseParams(mu=1.0), dtype=torch.float32)
    for n, m in fused.modules.items():
        want = F.dense_fused(s.truth[n], c.truth[n], 1.0, 1.0, 0.5)
        got = m.up.double() @ m.down.double()
        assert torch.allclose(got, want, rtol=0, atol=1e-5 * float(want.abs().max())), n
