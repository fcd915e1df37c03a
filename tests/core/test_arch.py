"""The architecture tables against literal key names seen in real LoRA files (not derived from
the tables, so a drift in the generator shows up here)."""

import pytest

from lib_nplora import arch
from lib_nplora.formats.keys import resolve_stem

REAL_STEMS = [
    # (arch, source module stem, canonical name, weight shape)
    ("sd1", "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
     "unet.input_blocks.1.1.transformer_blocks.0.attn1.to_q", (320, 320)),
    ("sd1", "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k",
     "unet.input_blocks.4.1.transformer_blocks.0.attn2.to_k", (640, 768)),
    ("sd1", "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj",
     "unet.middle_block.1.transformer_blocks.0.ff.net.0.proj", (10240, 1280)),
    ("sd1", "lora_unet_up_blocks_3_attentions_2_proj_out", "unet.output_blocks.11.1.proj_out", (320, 320, 1, 1)),
    ("sd1", "lora_unet_down_blocks_0_resnets_0_conv1", "unet.input_blocks.1.0.in_layers.2", (320, 320, 3, 3)),
    ("sd1", "lora_unet_down_blocks_0_downsamplers_0_conv", "unet.input_blocks.3.0.op", (320, 320, 3, 3)),
    ("sd1", "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
     "te.text_model.encoder.layers.0.self_attn.q_proj", (768, 768)),
    ("sd1", "lora_te_text_model_encoder_layers_11_mlp_fc1", "te.text_model.encoder.layers.11.mlp.fc1", (3072, 768)),
    ("sd1", "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q",
     "unet.input_blocks.1.1.transformer_blocks.0.attn1.to_q", (320, 320)),
    ("sd1", "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_out",
     "unet.output_blocks.3.1.transformer_blocks.0.attn2.to_out.0", (1280, 1280)),
    ("sd1", "text_encoder.text_model.encoder.layers.0.self_attn.to_q",
     "te.text_model.encoder.layers.0.self_attn.q_proj", (768, 768)),
    ("sd2", "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k",
     "unet.input_blocks.4.1.transformer_blocks.0.attn2.to_k", (640, 1024)),
    ("sd2", "lora_te_text_model_encoder_layers_22_self_attn_out_proj",
     "te.text_model.encoder.layers.22.self_attn.out_proj", (1024, 1024)),
    ("sdxl", "text_encoder.encoder.layers.3.mlp.fc1", "te1.text_model.encoder.layers.3.mlp.fc1", (3072, 768)),
    ("sdxl", "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
     "unet.input_blocks.4.1.transformer_blocks.0.attn1.to_q", (640, 640)),
    ("sdxl", "lora_unet_input_blocks_7_1_transformer_blocks_0_attn2_to_k",
     "unet.input_blocks.7.1.transformer_blocks.0.attn2.to_k", (1280, 2048)),
    ("sdxl", "lora_unet_middle_block_1_transformer_blocks_0_ff_net_0_proj",
     "unet.middle_block.1.transformer_blocks.0.ff.net.0.proj", (10240, 1280)),
    ("sdxl", "lora_unet_output_blocks_0_1_proj_in", "unet.output_blocks.0.1.proj_in", (1280, 1280)),
    ("sdxl", "lora_unet_input_blocks_1_0_in_layers_2", "unet.input_blocks.1.0.in_layers.2", (320, 320, 3, 3)),
    ("sdxl", "lora_unet_input_blocks_1_0_emb_layers_1", "unet.input_blocks.1.0.emb_layers.1", (320, 1280)),
    ("sdxl", "lora_unet_input_blocks_3_0_op", "unet.input_blocks.3.0.op", (320, 320, 3, 3)),
    ("sdxl", "lora_unet_output_blocks_2_2_conv", "unet.output_blocks.2.2.conv", (1280, 1280, 3, 3)),
    ("sdxl", "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
     "te1.text_model.encoder.layers.0.self_attn.q_proj", (768, 768)),
    ("sdxl", "lora_te2_text_model_encoder_layers_31_mlp_fc1", "te2.text_model.encoder.layers.31.mlp.fc1", (5120, 1280)),
    ("sdxl", "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
     "unet.input_blocks.4.1.transformer_blocks.0.attn1.to_q", (640, 640)),
    ("sdxl", "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj",
     "te2.text_model.encoder.layers.0.self_attn.q_proj", (1280, 1280)),
    ("sdxl", "diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_v",
     "unet.input_blocks.4.1.transformer_blocks.1.attn2.to_v", (640, 2048)),
    ("flux", "lora_unet_double_blocks_0_img_attn_qkv", "unet.double_blocks.0.img_attn.qkv", (9216, 3072)),
    ("flux", "lora_unet_double_blocks_0_img_mod_lin", "unet.double_blocks.0.img_mod.lin", (18432, 3072)),
    ("flux", "lora_unet_single_blocks_0_linear1", "unet.single_blocks.0.linear1", (21504, 3072)),
    ("flux", "lora_unet_single_blocks_37_linear2", "unet.single_blocks.37.linear2", (3072, 15360)),
    ("flux", "transformer.transformer_blocks.0.attn.to_q", "unet.double_blocks.0.img_attn.qkv:q", (3072, 3072)),
    ("flux", "transformer.transformer_blocks.3.attn.add_v_proj", "unet.double_blocks.3.txt_attn.qkv:v", (3072, 3072)),
    ("flux", "transformer.single_transformer_blocks.0.proj_mlp", "unet.single_blocks.0.linear1:mlp", (12288, 3072)),
    ("flux", "transformer.single_transformer_blocks.9.proj_out", "unet.single_blocks.9.linear2", (3072, 15360)),
    ("flux", "double_blocks.0.processor.qkv_lora1", "unet.double_blocks.0.img_attn.qkv", (9216, 3072)),
    ("flux", "double_blocks.0.processor.proj_lora2", "unet.double_blocks.0.txt_attn.proj", (3072, 3072)),
    ("flux", "lora_te3_encoder_block_0_layer_0_SelfAttention_q", "te3.encoder.block.0.layer.0.SelfAttention.q",
     (4096, 4096)),
    ("flux", "lora_te1_text_model_encoder_layers_0_mlp_fc2", "te1.text_model.encoder.layers.0.mlp.fc2", (768, 3072)),
    ("flux", "lora_transformer_single_transformer_blocks_2_attn_to_k", "unet.single_blocks.2.linear1:k", (3072, 3072)),
]


@pytest.mark.parametrize("arch_name,stem,canonical,shape", REAL_STEMS)
def test_real_key_names_resolve(arch_name, stem, canonical, shape):
    a = arch.get(arch_name)
    hit = resolve_stem(a, stem)
    assert hit is not None and hit[0] == canonical
    assert a.modules[canonical].shape == shape


def test_flux_parts_cover_their_parents_in_order():
    a = arch.get("flux")
    for name, spec in a.modules.items():
        if spec.parts:
            rows = [a.modules[p] for p in spec.parts]
            assert [p.row_offset for p in rows] == [sum(r.out_features for r in rows[:i]) for i in range(len(rows))]
            assert sum(r.out_features for r in rows) == spec.out_features
    assert a.modules["unet.single_blocks.0.linear1:mlp"].row_offset == 9216
    assert resolve_stem(a, "transformer.norm_out.linear") == ("unet.final_layer.adaLN_modulation.1", True)


def test_kohya_keys_written_are_the_trainer_conventions():
    assert arch.get("sd1").kohya_key("unet.input_blocks.4.1.transformer_blocks.0.attn2.to_k") == \
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    assert arch.get("sd1").kohya_key("unet.time_embed.0") == "lora_unet_time_embed_0"
    assert arch.get("sdxl").kohya_key("unet.output_blocks.0.1.proj_in") == "lora_unet_output_blocks_0_1_proj_in"
    assert arch.get("sdxl").kohya_key("te2.text_model.encoder.layers.1.mlp.fc2") == \
        "lora_te2_text_model_encoder_layers_1_mlp_fc2"
    assert arch.get("flux").kohya_key("unet.single_blocks.3.linear1") == "lora_unet_single_blocks_3_linear1"


def test_metadata_hints():
    assert arch.arch_from_metadata({"ss_base_model_version": "sdxl_base_v1-0"}) == "sdxl"
    assert arch.arch_from_metadata({"modelspec.architecture": "flux-1-dev/lora"}) == "flux"
    assert arch.arch_from_metadata({"ss_v2": "True"}) == "sd2"
    assert arch.arch_from_metadata({"ss_base_model_version": "sd_v1"}) == "sd1"
    assert arch.arch_from_metadata({"format": "pt"}) is None
