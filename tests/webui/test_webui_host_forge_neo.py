"""The Forge Neo adapter against stand-ins of Neo's builtin loader (``load_lora_for_models``),
its Forge2-style patchers and a Nunchaku model; and Forge Classic (``ldm_patched``, no
``forge_objects_after_applying_lora`` while no ``<lora:…>`` is active) through the old-Forge
adapter, in Classic's processing order."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lib_nplora.webui.hosts import HostError, detect
from lib_nplora.webui.hosts import forge_ldm as forge_ldm_host
from lib_nplora.webui.hosts import forge_neo as neo_host
from webui.standins import forge_backend as fb
from webui.standins import forge_classic as fc
from webui.standins.forge_backend import StandInQ4_K, StandInQ8_0, as_gguf
from webui.standins.forge_neo import StandInNeoNetworks, StandInNunchakuModel
from webui.test_webui_hosts_common import fake_find_spec
from webui.test_webui_host_forge import TE1, UNET, P, delta_of, folder, fuse, lora_sd  # noqa: F401 - fixture


def neo(folder, tmp_path, nunchaku=False):
    networks = StandInNeoNetworks(folder, {"nunchaku": nunchaku})
    networks.list_available_networks()
    adapter = neo_host.Adapter(networks, lora_backend=fb, dynamic_args=networks.dynamic_args, lora_dir=folder,
                               file_dir=tmp_path / "host-files")
    return adapter, networks


def batch(sd, adapter, fused, loras=()):
    hook = (lambda: adapter.activate(P(sd), fused)) if fused is not None else (lambda: adapter.deactivate(P(sd)))
    fb.standin_batch(sd, hook, loras, fb.standin_builtin_lora)


@pytest.mark.parametrize("present,expected", [
    ({"modules", "modules_forge", "backend.patcher.lora", "backend.nn._z_lora"}, "forge_neo"),
    ({"modules", "modules_forge", "backend.patcher.lora", "backend.nn.svdq"}, "forge_neo"),
    ({"modules", "modules_forge", "backend.patcher.lora"}, "forge"),
    ({"modules", "modules_forge", "ldm_patched.modules.lora"}, "forge_ldm"),  # Forge Classic, reForge
])
def test_detect_neo_and_classic_by_capability(present, expected):
    assert detect(fake_find_spec(present)) == expected


def test_neo_patches_come_from_its_own_loader_and_restore_bit_exactly(folder, tmp_path):
    adapter, networks = neo(folder, tmp_path)
    sd = fb.StandInForgeModel(UNET, TE1)
    before = sd.weights()
    fused = fuse(adapter, "te_content", "te_style", scope="all")
    batch(sd, adapter, fused)
    assert networks.loads == ["nplora:" + fused.digest]  # Neo's load_lora_for_models built the patches
    after = sd.weights()
    expected = delta_of(fused)
    assert {k for k in before if not torch.equal(before[k], after[k])} == set(expected)
    for key, d in expected.items():
        torch.testing.assert_close(after[key] - before[key], d.reshape(before[key].shape), rtol=1e-4, atol=1e-6)
    adapter.end_job(P(sd))
    batch(sd, adapter, None)
    assert all(torch.equal(before[k], v) for k, v in sd.weights().items())


def test_a_repeated_generation_reuses_the_patchers_and_merges_nothing(folder, tmp_path):
    """§5b: the same tag again (nothing changed) hands the host the very same patcher objects, as
    the builtin's early return does for stacked LoRAs: no clone, no new patches, no re-merge."""
    adapter, networks = neo(folder, tmp_path)
    sd = fb.StandInForgeModel(UNET, TE1)
    fused = fuse(adapter)
    batch(sd, adapter, fused)
    unet = sd.forge_objects.unet
    adapter.end_job(P(sd))
    merges = unet.lora_loader.merges
    batch(sd, adapter, fused)  # the next job, same fusion
    assert sd.forge_objects.unet is unet
    assert unet.lora_loader.merges == merges and networks.loads == ["nplora:" + fused.digest]
    adapter.end_job(P(sd))
    other = fuse(adapter, mu=3.0)
    batch(sd, adapter, other)  # another fusion: new patches under a new identifier
    assert sd.forge_objects.unet is not unet and networks.loads[-1] == "nplora:" + other.digest


def test_neo_refusing_the_fusion_is_a_clear_error_not_a_crash(folder, tmp_path):
    """Neo returns the patchers unchanged when more than half the keys are unmatched."""
    adapter, _ = neo(folder, tmp_path)
    other = fb.StandInForgeModel(lf_rows_elsewhere(), [])
    with pytest.raises(HostError, match="took none of the fused modules"):
        adapter.activate(P(other), fuse(adapter))
    assert other.forge_objects_after_applying_lora.unet is other.forge_objects_original.unet


def lf_rows_elsewhere():
    import lora_factory as lf

    return lf.select("sdxl", "attn", components=("unet",), blocks=("output_blocks.2.1.",))[:2]


def test_neo_with_a_user_lora_both_apply(folder, tmp_path):
    adapter, _ = neo(folder, tmp_path)
    sd = fb.StandInForgeModel(UNET, TE1)
    user = [("other.safetensors", lora_sd(folder / "other.safetensors"))]
    batch(sd, adapter, None, user)
    with_user = sd.weights()
    fused = fuse(adapter)
    batch(sd, adapter, fused, user)
    both = sd.weights()
    for key, d in delta_of(fused).items():
        torch.testing.assert_close(both[key] - with_user[key], d.reshape(with_user[key].shape), rtol=1e-4, atol=1e-5)
    adapter.end_job(P(sd))
    batch(sd, adapter, None, user)
    assert all(torch.equal(with_user[k], v) for k, v in sd.weights().items())


def test_nunchaku_follows_neos_rule_by_file_and_is_taken_out_again(folder, tmp_path):
    adapter, networks = neo(folder, tmp_path, nunchaku=True)
    sd = StandInNunchakuModel()
    dm = sd.forge_objects.unet.model.diffusion_model
    dm.loras.append(("/user/own.safetensors", 0.7))  # a user's LoRA, put there by the builtin
    fused = fuse(adapter, "te_content", "te_style", scope="all")
    applied = adapter.activate(P(sd), fused)
    path, strength = dm.loras[-1]
    assert strength == 1.0 and dm.loras[0] == ("/user/own.safetensors", 0.7)
    assert networks.loads == [path]  # handed to Neo's load_lora_for_models, which appends it
    assert set(load_file(path)) and not applied.touches_text_encoder
    assert any("text-encoder" in w for w in applied.warnings)
    adapter.activate(P(sd), fused)  # hires pass: still once
    assert [e for e in dm.loras if e[0] == path] == [(path, 1.0)]
    adapter.end_job(P(sd))
    assert dm.loras == [("/user/own.safetensors", 0.7)]


def test_nunchaku_model_without_a_lora_list_is_said_and_not_a_crash(folder, tmp_path):
    adapter, _ = neo(folder, tmp_path, nunchaku=True)
    sd = StandInNunchakuModel()
    del sd.forge_objects_after_applying_lora.unet.model.diffusion_model.loras
    with pytest.raises(HostError, match="cannot apply a LoRA"):
        adapter.activate(P(sd), fuse(adapter))


def test_quantized_storage_merges_through_the_hosts_loader(folder, tmp_path):
    """fp8 storage without a "(fp16 LoRA)" choice: Neo merges patches in its LoraLoader; the
    adapter hands them over the same way, in offline mode, as the builtin does."""
    adapter, networks = neo(folder, tmp_path)
    sd = fb.StandInForgeModel(UNET, TE1)
    sd.forge_objects.unet.model.storage_dtype = torch.float8_e4m3fn
    fused = fuse(adapter)
    adapter.activate(P(sd), fused)
    idents = list(sd.forge_objects_after_applying_lora.unet.lora_patches)
    assert idents == [("nplora:" + fused.digest, 1.0, 1.0, False)]


def gguf_model(gguf_cls):
    """A stand-in Forge model whose UNet weights are stored as ``gguf_cls`` ("gguf" storage)."""
    sd = fb.StandInForgeModel(UNET, TE1)
    km = sd.forge_objects.unet.model
    km.storage_dtype = "gguf"
    for key, _ in km.named_parameters():
        if key.endswith(".weight"):
            as_gguf(km, key, gguf_cls)
    return sd


@pytest.mark.parametrize("online", [False, True])
@pytest.mark.parametrize("gguf_cls", [StandInQ8_0, StandInQ4_K])
def test_gguf_weights_follow_neos_rule_offline_and_online(folder, tmp_path, gguf_cls, online):
    """Offline (no "(fp16 LoRA)"), Neo merges into the dequantized weight and quantizes it again:
    the fused LoRA goes in for a type with a PyTorch quantizer (Q8_0); for one without (Q4_K, where
    Neo's refresh raises NotImplementedError mid-generation) the adapter hands over nothing and
    says why, naming the type, a weight and the setting that helps. Online, Neo applies the patches
    at every forward: every type takes the fused LoRA, in online mode."""
    adapter, networks = neo(folder, tmp_path)
    networks.dynamic_args["online_lora"] = online
    sd = gguf_model(gguf_cls)
    before = sd.forge_objects_after_applying_lora.unet
    fused = fuse(adapter, "te_content", "te_style", scope="all")
    if gguf_cls is StandInQ4_K and not online:
        with pytest.raises(HostError) as e:
            adapter.activate(P(sd), fused)
        msg = str(e.value)
        assert "cannot merge a LoRA into this GGUF model's StandInQ4_K weights" in msg
        assert "diffusion_model." in msg and "fp16 LoRA" in msg, msg
        assert sd.forge_objects_after_applying_lora.unet is before  # nothing swapped in
        assert sd.forge_objects.unet is before
        return
    applied = adapter.activate(P(sd), fused)
    idents = list(sd.forge_objects_after_applying_lora.unet.lora_patches)
    assert idents == [("nplora:" + fused.digest, 1.0, 1.0, online)]
    assert applied.modules > 0


def test_a_gguf_model_neo_cannot_merge_into_is_said_and_generated_without(folder, tmp_path):
    """Through the generation hook: the tag's fusion on a Q4_K model offline leaves the model as
    it was, and the infotext and the console say why and what to choose."""
    from lib_nplora.app.service import FusionService
    from lib_nplora.cache import Caches
    from lib_nplora.app.request import INFOTEXT
    from lib_nplora.webui import hooks
    from lib_nplora.webui.accordion import UiValues
    from lib_nplora.webui.runtime import Runtime
    from webui.standins.webui_modules import StandInOptions, StandInProcessing, standin_parse_prompt

    adapter, networks = neo(folder, tmp_path)
    networks.dynamic_args["online_lora"] = False
    sd = gguf_model(StandInQ4_K)
    before = sd.forge_objects_after_applying_lora.unet
    printed = []
    rt = Runtime(adapter=adapter, service=FusionService(Caches()), opts=lambda: StandInOptions(),
                 host_device=lambda: torch.device("cpu"), printer=printed.append)
    prompt = "a dog <nplora:content:style:mu=0.5>"
    p = StandInProcessing(sd, prompt)
    hooks.begin_job(rt, p, UiValues())
    assert hooks.on_pass(rt, p, standin_parse_prompt(prompt)) is None
    warning = p.extra_generation_params[INFOTEXT["warning"]]
    assert "GGUF model's StandInQ4_K weights" in warning and "without NP-LoRA" in warning, warning
    assert any("StandInQ4_K" in line and "fp16 LoRA" in line for line in printed), printed
    assert sd.forge_objects_after_applying_lora.unet is before and sd.forge_objects.unet is before


def test_gguf_text_encoder_weights_are_checked_too(folder, tmp_path):
    """A GGUF text encoder (Neo loads them: Qwen2.5-VL, T5) whose type cannot be quantized again
    stops the fusion offline the same way, even when the UNet is not GGUF."""
    adapter, networks = neo(folder, tmp_path)
    networks.dynamic_args["online_lora"] = False
    sd = fb.StandInForgeModel(UNET, TE1)
    te = sd.forge_objects.clip.cond_stage_model
    for key, _ in te.named_parameters():
        as_gguf(te, key, StandInQ4_K)
    with pytest.raises(HostError, match="StandInQ4_K"):
        adapter.activate(P(sd), fuse(adapter, "te_content", "te_style", scope="all"))
    adapter.activate(P(sd), fuse(adapter))  # a UNet-only fusion touches no text-encoder weight


# ---------------------------------------------------------------------------- Forge Classic


def classic(folder):
    from webui.standins.a1111_lora import StandInNetworks

    networks = StandInNetworks(folder)
    networks.list_available_networks()
    adapter = forge_ldm_host.Adapter(networks, lora_backend=fb.StandInLdmLoraModule, lora_dir=folder)
    return adapter, fc.StandInClassicShared(), fc.standin_classic_model(UNET, TE1)


def test_classic_without_builtin_loras_gets_the_fusion_and_restores(folder):
    adapter, shared, sd = classic(folder)
    before = sd.weights()
    fused = fuse(adapter, "te_content", "te_style", scope="all")
    on = lambda: adapter.activate(P(sd), fused)  # noqa: E731
    fc.standin_classic_batch(shared, sd, on, hires_hook=on)
    after = sd.weights()
    for key, d in delta_of(fused).items():
        torch.testing.assert_close(after[key] - before[key], d.reshape(before[key].shape), rtol=1e-4, atol=1e-6)
    assert sd.forge_objects_after_applying_lora is None  # the slot Classic leaves empty stays empty
    adapter.end_job(P(sd))
    fc.standin_classic_batch(shared, sd, lambda: adapter.deactivate(P(sd)))
    assert all(torch.equal(before[k], v) for k, v in sd.weights().items())


def test_classic_with_a_builtin_lora_both_apply_and_the_users_survives(folder):
    adapter, shared, sd = classic(folder)
    user = [("other.safetensors", lora_sd(folder / "other.safetensors"))]
    fc.standin_classic_batch(shared, sd, lambda: None, user)
    with_user = sd.weights()
    fused = fuse(adapter)
    fc.standin_classic_batch(shared, sd, lambda: adapter.activate(P(sd), fused), user)
    both = sd.weights()
    for key, d in delta_of(fused).items():
        torch.testing.assert_close(both[key] - with_user[key], d.reshape(with_user[key].shape), rtol=1e-4, atol=1e-5)
    adapter.end_job(P(sd))
    fc.standin_classic_batch(shared, sd, lambda: adapter.deactivate(P(sd)), user)
    assert all(torch.equal(with_user[k], v) for k, v in sd.weights().items())


@pytest.mark.parametrize("engine,flags,expected", [
    ("StableDiffusion", {"is_sd1": True}, "sd1"),
    ("StableDiffusionXL", {"is_sdxl": True}, "sdxl"),
    ("Flux", {"is_flux": True}, "flux"),
    ("ZImage", {"is_flux": True}, None),          # Neo flags Z-Image, Chroma, Lumina 2 as FLUX
    ("Chroma", {"is_flux": True}, None),
    ("QwenImage", {"is_wan": True}, None),
    ("StableDiffusionXLRefiner", {"is_sdxl": True}, None),  # not the SDXL base's layers
])
def test_neo_engines_are_told_apart_by_class_not_flags(folder, tmp_path, engine, flags, expected):
    """Stand-ins of Neo's engine classes (``backend/diffusion_engine``): only architectures that
    lib_nplora.arch knows are named; the others are unknown, never taken for FLUX or SDXL."""
    from lib_nplora.arch import ARCH_NAMES

    adapter, _ = neo(folder, tmp_path)
    model = type(engine, (), {})()
    for k, v in flags.items():
        setattr(model, k, v)
    got = adapter.model_arch(model)
    mapped = neo_host.NEO_ENGINES[engine]
    assert got == (mapped if mapped in ARCH_NAMES else None)
    if expected is not None:
        assert got == expected
    else:  # unknown today; later its own architecture, never FLUX's or SDXL's
        assert got not in ("flux", "sdxl")


@pytest.mark.parametrize("dim,expected", [(5120, "wan14b"), (1536, "wan1b"), (3072, None), (None, None)])
def test_neos_wan_engine_is_read_by_its_width(folder, tmp_path, dim, expected):
    """Neo's one ``Wan`` engine holds the 14B and the 1.3B (its guess's ``unet_config["dim"]``);
    a width NP-LoRA has no Neo table for is unknown (the pair is then read by its keys)."""
    adapter, _ = neo(folder, tmp_path)
    model = type("Wan", (), {})()
    model.model_config = type("WAN21_T2V", (), {"unet_config": {} if dim is None else {"dim": dim}})()
    assert adapter.model_arch(model) == expected


def test_classic_hires_pass_without_the_tag_runs_without_the_fusion(folder):
    """Classic without other LoRAs: NP-LoRA writes into the live forge_objects; a hires pass whose
    prompt has no tag must get the base patchers back (not the patched ones)."""
    adapter, shared, sd = classic(folder)
    fc.standin_classic_batch(shared, sd, lambda: adapter.deactivate(P(sd)))
    before = sd.weights()
    fused = fuse(adapter)
    fc.standin_classic_batch(shared, sd, lambda: adapter.activate(P(sd), fused),
                             hires_hook=lambda: adapter.deactivate(P(sd)))
    assert sd.forge_objects.unet is sd.forge_objects_original.unet
    assert all(torch.equal(before[k], v) for k, v in sd.weights().items())


def test_classic_repeated_job_reuses_the_patched_unet(folder):
    """§5b on Classic: the next job with the same tag gets the same patcher object (no reload)."""
    adapter, shared, sd = classic(folder)
    fused = fuse(adapter)
    fc.standin_classic_batch(shared, sd, lambda: adapter.activate(P(sd), fused))
    first = sd.forge_objects.unet
    adapter.end_job(P(sd))
    fc.standin_classic_batch(shared, sd, lambda: adapter.activate(P(sd), fused))
    assert sd.forge_objects.unet is first
