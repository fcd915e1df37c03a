"""The A1111 adapter against stand-ins of the builtin Lora extension: the fused network changes
exactly the layers it should by exactly up @ down, and taking it out restores every weight bit
for bit."""

from __future__ import annotations

import pytest
import torch

import lora_factory as lf
from webui_loras import make_lora, sd1_te_rows, sd1_unet_rows
from lib_nplora.params import FuseParams
from lib_nplora.webui.hosts import HostError
from lib_nplora.webui.hosts.a1111 import Adapter, layer_name
from lib_nplora.app.request import FusionRequest
from lib_nplora.app.service import FusionService
from lib_nplora.cache import Caches
from webui.standins.a1111_lora import (StandInNetwork, StandInNetworkOnDisk, StandInNetworks, StandInSdModel,
                                       network, snapshot)


class StandInDevices:
    fp8 = False


class StandInShared:
    def __init__(self, sd_model, cache_fp16_weight=False):
        self.sd_model = sd_model
        self.opts = type("Opts", (), {"cache_fp16_weight": cache_fp16_weight})()


@pytest.fixture
def host(lora_dir):
    folder, made = lora_dir
    networks = StandInNetworks(folder)
    networks.list_available_networks()
    sd_model = StandInSdModel("sd1", sd1_unet_rows(), sd1_te_rows())
    networks.assign_network_names_to_compvis_modules(sd_model)
    adapter = Adapter(networks, network_module=network, shared=StandInShared(sd_model), devices=StandInDevices(),
                      lora_dir=folder)
    return adapter, networks, sd_model, made


class P:
    def __init__(self, sd_model):
        self.sd_model = sd_model


def fuse(adapter, content="content", style="style", **params):
    service = FusionService(Caches())
    return service.fuse(adapter.index(), FusionRequest(content, style, FuseParams(**params)),
                        device="cpu", dtype=torch.float32, arch="sd1")


@pytest.mark.parametrize("canonical,arch,expected", [
    ("unet.input_blocks.1.1.transformer_blocks.0.attn1.to_q", "sd1",
     "diffusion_model_input_blocks_1_1_transformer_blocks_0_attn1_to_q"),
    ("te.text_model.encoder.layers.3.self_attn.q_proj", "sd1", "transformer_text_model_encoder_layers_3_self_attn_q_proj"),
    ("te.text_model.encoder.layers.3.mlp.fc1", "sd1", "transformer_text_model_encoder_layers_3_mlp_fc1"),
    ("te1.text_model.encoder.layers.0.self_attn.k_proj", "sdxl", "0_transformer_text_model_encoder_layers_0_self_attn_k_proj"),
    ("te2.text_model.encoder.layers.5.self_attn.v_proj", "sdxl", "1_model_transformer_resblocks_5_attn_v_proj"),
    ("te2.text_model.encoder.layers.5.self_attn.out_proj", "sdxl", "1_model_transformer_resblocks_5_attn_out_proj"),
    ("te2.text_model.encoder.layers.5.mlp.fc2", "sdxl", "1_model_transformer_resblocks_5_mlp_c_proj"),
    ("te.text_model.encoder.layers.2.mlp.fc1", "sd2", "model_transformer_resblocks_2_mlp_c_fc"),
    ("te.text_model.final_layer_norm", "sd2", "model_ln_final"),
    ("te2.text_projection", "sdxl", None),
    ("unet.double_blocks.0.img_attn.qkv", "flux", None),
])
def test_layer_names(canonical, arch, expected):
    assert layer_name(canonical, arch) == expected


def test_applies_exactly_the_fused_update_and_restores_bit_for_bit(host):
    adapter, networks, sd_model, _ = host
    before = snapshot(sd_model)
    fused = fuse(adapter, "te_content", "te_style", scope="all")
    applied = adapter.activate(P(sd_model), fused)
    assert applied.ident == "nplora_" + fused.digest and applied.touches_text_encoder
    assert applied.modules == len(fused.modules) and not applied.warnings
    assert [n.name for n in networks.loaded_networks] == [applied.ident]

    networks.forward_all(sd_model)
    after = snapshot(sd_model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    expected = {layer_name(n, "sd1") + ".weight" for n in fused.modules}
    assert changed == expected
    for name, m in fused.modules.items():
        key = layer_name(name, "sd1") + ".weight"
        delta = after[key] - before[key]
        torch.testing.assert_close(delta, (m.up.float() @ m.down.float()).reshape(delta.shape), rtol=1e-4, atol=1e-6)

    adapter.end_job(P(sd_model))
    assert networks.loaded_networks == []
    networks.forward_all(sd_model)
    restored = snapshot(sd_model)
    assert all(torch.equal(before[k], restored[k]) for k in before)


def test_other_loras_stay_and_only_ours_is_replaced(host):
    adapter, networks, sd_model, _ = host
    user_net = StandInNetwork("someone_elses", StandInNetworkOnDisk("someone_elses", "x.safetensors"))
    networks.loaded_networks.append(user_net)
    a = adapter.activate(P(sd_model), fuse(adapter, mu=0.2))
    b = adapter.activate(P(sd_model), fuse(adapter, mu=0.9))  # hires / next batch with other parameters
    assert a.ident != b.ident
    assert [n.name for n in networks.loaded_networks] == ["someone_elses", b.ident]
    adapter.deactivate(P(sd_model))
    assert networks.loaded_networks == [user_net]


def test_network_is_cached_per_fusion_and_dropped_on_model_load(host):
    adapter, networks, sd_model, _ = host
    fused = fuse(adapter)
    adapter.activate(P(sd_model), fused)
    first = networks.loaded_networks[-1]
    adapter.activate(P(sd_model), fused)
    assert networks.loaded_networks[-1] is first  # same name: layers do not re-apply
    adapter.forget_model()
    assert networks.loaded_networks == []
    adapter.activate(P(sd_model), fused)
    assert networks.loaded_networks[-1] is not first


def test_fp8_with_cached_fp16_weights_warns_about_other_loras(host):
    adapter, networks, sd_model, _ = host
    adapter._devices.fp8 = True
    adapter._shared.opts.cache_fp16_weight = True
    fused = fuse(adapter)
    assert adapter.activate(P(sd_model), fused).warnings == []  # alone: nothing is lost
    networks.loaded_networks.insert(0, StandInNetwork("mine", None))
    (warning,) = adapter.activate(P(sd_model), fused).warnings
    assert "only the last network" in warning and "mine" in warning


def test_modules_the_model_lacks_are_reported(host, lora_dir):
    adapter, networks, _, made = host
    small = StandInSdModel("sd1", sd1_unet_rows()[:4], [])  # half the UNet layers, no text encoder
    networks.assign_network_names_to_compvis_modules(small)
    applied = adapter.activate(P(small), fuse(adapter, "te_content", "te_style"))
    assert applied.modules == 4
    assert any("have no layer in this model" in w for w in applied.warnings)
    empty = StandInSdModel("sd1", [], [])
    networks.assign_network_names_to_compvis_modules(empty)
    with pytest.raises(HostError, match="none of the fused modules fits"):
        adapter.activate(P(empty), fuse(adapter))


def test_openclip_attention_gets_all_four_projections(tmp_path):
    """SDXL's second text encoder is an nn.MultiheadAttention in A1111: a fusion touching only q
    and v of a block still changes q and v (k and out get zero updates, so A1111 applies them)."""
    te2 = lf.rows_by_name("sdxl")
    layer0 = "te2.text_model.encoder.layers.0."
    rows = [te2[layer0 + "self_attn.q_proj"], te2[layer0 + "self_attn.v_proj"], te2[layer0 + "mlp.fc1"]]
    unet = lf.select("sdxl", "attn", components=("unet",), limit=2)
    make_lora(tmp_path / "c.safetensors", "sdxl", unet + rows, seed=1)
    make_lora(tmp_path / "s.safetensors", "sdxl", unet + rows, seed=2)
    networks = StandInNetworks(tmp_path)
    networks.list_available_networks()
    sd_model = StandInSdModel("sdxl", unet, [], te2_blocks=1)
    networks.assign_network_names_to_compvis_modules(sd_model)
    adapter = Adapter(networks, network_module=network, shared=StandInShared(sd_model), devices=StandInDevices(),
                      lora_dir=tmp_path)
    fused = FusionService(Caches()).fuse(adapter.index(), FusionRequest("c", "s", FuseParams(scope="all")),
                                         device="cpu", dtype=torch.float32, arch="sdxl")
    applied = adapter.activate(P(sd_model), fused)
    net = networks.loaded_networks[-1]
    block = "1_model_transformer_resblocks_0_attn"
    assert {f"{block}_{p}_proj" for p in ("q", "k", "v", "out")} <= set(net.modules)
    assert applied.modules == len(fused.modules)

    mha = sd_model.network_layer_mapping[block]
    before_in, before_out = mha.in_proj_weight.detach().clone(), mha.out_proj.weight.detach().clone()
    networks.forward_all(sd_model)
    dq, dk, dv = (mha.in_proj_weight.detach() - before_in).chunk(3, 0)
    q = fused.modules["te2.text_model.encoder.layers.0.self_attn.q_proj"]
    v = fused.modules["te2.text_model.encoder.layers.0.self_attn.v_proj"]
    torch.testing.assert_close(dq, q.up.float() @ q.down.float(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(dv, v.up.float() @ v.down.float(), rtol=1e-4, atol=1e-6)
    assert torch.count_nonzero(dk) == 0 and torch.equal(mha.out_proj.weight, before_out)
    assert networks.apply_errors == {}


def test_passthrough_modules_use_the_hosts_module_types(host, lora_dir, tmp_path):
    """A norm module (passthrough) is built by the host's own module type and applied."""
    from safetensors.torch import save_file

    adapter, networks, sd_model, _ = host
    folder, _ = lora_dir
    norm_name = "te.text_model.final_layer_norm"
    key = "lora_te_text_model_final_layer_norm"
    save_file({f"{key}.w_norm": torch.full((768,), 0.5), f"{key}.b_norm": torch.full((768,), 0.25)},
              str(folder / "norm_only.safetensors"))
    networks.list_available_networks()
    ln = torch.nn.LayerNorm(768)
    from webui.standins import torch_tree

    torch_tree.put(sd_model.cond_stage_model.wrapped, "transformer.text_model.final_layer_norm", ln)
    networks.assign_network_names_to_compvis_modules(sd_model)
    fused = FusionService(Caches()).fuse(adapter.index(), FusionRequest("norm_only", "style"),
                                         device="cpu", dtype=torch.float32, arch="sd1")
    assert norm_name in fused.passthrough
    adapter.activate(P(sd_model), fused)
    w0 = ln.weight.detach().clone()
    networks.forward_all(sd_model)
    torch.testing.assert_close(ln.weight.detach() - w0, torch.full((768,), 0.5))
