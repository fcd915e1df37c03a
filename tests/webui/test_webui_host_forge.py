"""The Forge and old-Forge/reForge adapters against stand-ins of their patcher backends, run
through the processing order of a batch: the fused patches change exactly the right weights,
survive the builtin's early return without doubling, and taking them out restores every weight
bit for bit."""

from __future__ import annotations

import pytest
import torch

import lora_factory as lf
from webui_loras import make_lora
from lib_nplora.cache import Caches
from lib_nplora.params import FuseParams
from lib_nplora.webui.hosts import HostError
from lib_nplora.webui.hosts import forge as forge_host
from lib_nplora.webui.hosts import forge_ldm as forge_ldm_host
from lib_nplora.app.request import FusionRequest
from lib_nplora.app.service import FusionService
from webui.standins import forge_backend as fb
from webui.standins.a1111_lora import StandInNetworks

UNET = lf.select("sdxl", "attn", components=("unet",), blocks=("input_blocks.4.1.transformer_blocks.0.",))
TE1 = lf.select("sdxl", "attn", components=("te1",), blocks=("layers.0.",))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("Lora")
    make_lora(d / "content.safetensors", "sdxl", UNET, rank=4, seed=1)
    make_lora(d / "style.safetensors", "sdxl", UNET, rank=4, seed=2)
    make_lora(d / "te_content.safetensors", "sdxl", UNET + TE1, rank=4, seed=3)
    make_lora(d / "te_style.safetensors", "sdxl", UNET + TE1, rank=4, seed=4)
    make_lora(d / "other.safetensors", "sdxl", UNET[:2], rank=2, seed=5)
    return d


HOSTS = {
    "forge": dict(adapter=forge_host.Adapter, backend=fb, patcher=fb.StandInModelPatcher, clip=fb.StandInCLIP,
                  builtin=fb.standin_builtin_lora),
    "forge_ldm": dict(adapter=forge_ldm_host.Adapter, backend=fb.StandInLdmLoraModule,
                      patcher=fb.StandInLdmModelPatcher, clip=fb.StandInLdmCLIP, builtin=fb.standin_ldm_builtin_lora),
}


@pytest.fixture(params=sorted(HOSTS))
def host(request, folder):
    h = HOSTS[request.param]
    networks = StandInNetworks(folder)
    networks.list_available_networks()
    sd = fb.StandInForgeModel(UNET, TE1, patcher=h["patcher"], clip=h["clip"])
    adapter = h["adapter"](networks, lora_backend=h["backend"], dynamic_args={"online_lora": False},
                           lora_dir=folder)
    return adapter, sd, h["builtin"]


class P:
    def __init__(self, sd_model):
        self.sd_model = sd_model


def fuse(adapter, content="content", style="style", **params):
    return FusionService(Caches()).fuse(adapter.index(), FusionRequest(content, style, FuseParams(**params)),
                                        device="cpu", dtype=torch.float32, arch="sdxl")


def delta_of(fused) -> dict[str, torch.Tensor]:
    """Expected weight change per stand-in parameter name."""
    out = {}
    for name, m in fused.modules.items():
        comp, path = name.split(".", 1)
        if comp == "unet":
            key = "unet.diffusion_model." + path + ".weight"
        else:
            key = "te.clip_l.transformer." + path + ".weight"
        out[key] = m.up.float() @ m.down.float()
    return out


def batch(sd, adapter, fused, builtin, loras=()):
    fb.standin_batch(sd, lambda: adapter.activate(P(sd), fused) if fused is not None else adapter.deactivate(P(sd)),
                     loras, builtin)


def lora_sd(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_patches_change_exactly_the_fused_weights_and_end_job_restores(host):
    adapter, sd, builtin = host
    before = sd.weights()
    fused = fuse(adapter, "te_content", "te_style", scope="all")
    batch(sd, adapter, fused, builtin)
    after = sd.weights()
    expected = delta_of(fused)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(expected)
    for key, d in expected.items():
        torch.testing.assert_close(after[key] - before[key], d.reshape(before[key].shape), rtol=1e-4, atol=1e-6)

    adapter.end_job(P(sd))
    assert sd.forge_objects_after_applying_lora.unet is sd.forge_objects_original.unet
    batch(sd, adapter, None, builtin)  # the next job, NP-LoRA off
    restored = sd.weights()
    assert all(torch.equal(before[k], restored[k]) for k in before)


def test_builtin_early_return_hands_back_our_objects_without_doubling(host):
    """The builtin keeps forge_objects_after_applying_lora when its LoRA set is unchanged: if a job
    ended without postprocess (interrupted), the next pass finds NP-LoRA's own objects there."""
    adapter, sd, builtin = host
    before = sd.weights()
    fused = fuse(adapter)
    batch(sd, adapter, fused, builtin)
    once = sd.weights()
    # no end_job: the next job starts with our objects in place
    batch(sd, adapter, fused, builtin)
    batch(sd, adapter, fused, builtin)  # hires pass
    assert all(torch.equal(once[k], v) for k, v in sd.weights().items())
    # a job with NP-LoRA off puts the base back even without end_job
    batch(sd, adapter, None, builtin)
    assert all(torch.equal(before[k], v) for k, v in sd.weights().items())


def test_with_a_user_lora_both_apply_and_the_users_survives_np_lora_off(host, folder):
    adapter, sd, builtin = host
    user = [("other.safetensors", lora_sd(folder / "other.safetensors"))]
    batch(sd, adapter, None, builtin, user)
    with_user = sd.weights()
    fused = fuse(adapter)
    batch(sd, adapter, fused, builtin, user)
    both = sd.weights()
    for key, d in delta_of(fused).items():
        torch.testing.assert_close(both[key] - with_user[key], d.reshape(with_user[key].shape), rtol=1e-4, atol=1e-5)
    adapter.end_job(P(sd))
    batch(sd, adapter, None, builtin, user)
    assert all(torch.equal(with_user[k], v) for k, v in sd.weights().items())


def test_unique_identifier_per_fusion_and_reuse_within_a_job(host):
    adapter, sd, builtin = host
    a = adapter.activate(P(sd), fuse(adapter, mu=0.1))
    first = sd.forge_objects_after_applying_lora
    again = adapter.activate(P(sd), fuse(adapter, mu=0.1))  # hires pass: same fusion
    assert again.ident == a.ident and sd.forge_objects_after_applying_lora is first
    b = adapter.activate(P(sd), fuse(adapter, mu=2.0))
    assert b.ident != a.ident and sd.forge_objects_after_applying_lora is not first
    assert sd.forge_objects.unet is sd.forge_objects_after_applying_lora.unet  # hires conds read forge_objects


def test_unet_only_fusion_leaves_the_text_encoder_patcher_alone(host):
    adapter, sd, builtin = host
    applied = adapter.activate(P(sd), fuse(adapter))
    assert not applied.touches_text_encoder
    assert sd.forge_objects_after_applying_lora.clip is sd.forge_objects_original.clip
    applied = adapter.activate(P(sd), fuse(adapter, "te_content", "te_style"))
    assert applied.touches_text_encoder
    assert sd.forge_objects_after_applying_lora.clip is not sd.forge_objects_original.clip


def test_model_without_matching_weights_is_refused(host, folder):
    adapter, _, _ = host
    h = HOSTS[adapter.name]
    other = fb.StandInForgeModel(lf.select("sdxl", "attn", components=("unet",), blocks=("output_blocks.2.1.",))[:2],
                                 [], patcher=h["patcher"], clip=h["clip"])
    with pytest.raises(HostError, match="none of the fused modules fits"):
        adapter.activate(P(other), fuse(adapter))


def test_model_load_drops_cached_patches(host):
    adapter, sd, _ = host
    adapter.activate(P(sd), fuse(adapter))
    assert adapter._patches
    adapter.forget_model()
    assert not adapter._patches


def test_online_mode_follows_the_builtins_rule(folder):
    networks = StandInNetworks(folder)
    adapter = forge_host.Adapter(networks, lora_backend=fb, dynamic_args={"online_lora": True}, lora_dir=folder)
    sd = fb.StandInForgeModel(UNET, TE1)
    assert adapter.online_mode(sd.forge_objects) is False  # fp32 storage: merged, as the builtin does
    sd.forge_objects.unet.model.storage_dtype = torch.float8_e4m3fn
    assert adapter.online_mode(sd.forge_objects) is True


@pytest.mark.parametrize("online", [False, True])
@pytest.mark.parametrize("gguf_cls", [fb.StandInForgeMainQ8_0, fb.StandInForgeMainQ6_K])
def test_forge_main_gguf_weights_follow_its_rule(folder, gguf_cls, online):
    """Forge main's GGUF rule (its quantizer signature has no ``parent``): offline, a type it can
    quantize again (Q8_0) takes the fused LoRA, one it cannot (Q6_K: its refresh would raise
    NotImplementedError mid-generation) is refused before any patch, naming the type; online
    ("(fp16 LoRA)") every type takes it."""
    networks = StandInNetworks(folder)
    networks.list_available_networks()
    adapter = forge_host.Adapter(networks, lora_backend=fb, dynamic_args={"online_lora": online}, lora_dir=folder)
    sd = fb.StandInForgeModel(UNET, TE1)
    km = sd.forge_objects.unet.model
    km.storage_dtype = "gguf"
    for key, _ in km.named_parameters():
        fb.as_gguf(km, key, gguf_cls)
    before = sd.forge_objects_after_applying_lora.unet
    fused = fuse(adapter)
    if gguf_cls is fb.StandInForgeMainQ6_K and not online:
        with pytest.raises(HostError, match="Forge cannot merge a LoRA into this GGUF model's StandInForgeMainQ6_K"):
            adapter.activate(P(sd), fused)
        assert sd.forge_objects_after_applying_lora.unet is before
        return
    adapter.activate(P(sd), fused)
    assert list(sd.forge_objects_after_applying_lora.unet.lora_patches) == [("nplora:" + fused.digest, 1.0, 1.0, online)]


def test_a_repeated_job_gets_the_same_patchers_unless_the_online_rule_changed(folder):
    """§5b: the same fusion over the same base in the next job hands Forge the very same patcher
    objects (its memory manager then reloads and re-merges nothing); a changed online-LoRA rule
    builds new ones."""
    networks = StandInNetworks(folder)
    networks.list_available_networks()
    args = {"online_lora": True}
    adapter = forge_host.Adapter(networks, lora_backend=fb, dynamic_args=args, lora_dir=folder)
    sd = fb.StandInForgeModel(UNET, TE1)
    sd.forge_objects_original.unet.model.storage_dtype = torch.float8_e4m3fn
    fused = fuse(adapter)
    batch(sd, adapter, fused, fb.standin_builtin_lora)
    first = sd.forge_objects.unet
    adapter.end_job(P(sd))
    batch(sd, adapter, fused, fb.standin_builtin_lora)
    assert sd.forge_objects.unet is first
    adapter.end_job(P(sd))
    args["online_lora"] = False
    batch(sd, adapter, fused, fb.standin_builtin_lora)
    assert sd.forge_objects.unet is not first
    assert [k[3] for k in sd.forge_objects.unet.lora_patches] == [False]
