"""What a long-running WebUI puts NP-LoRA through (issue #6), on the generation hook over the
A1111 adapter and the Forge adapters with stand-ins of the hosts' modules: checkpoint switches,
long enable/disable runs, a 20 μ × 3 k X/Y/Z sweep, and generations while the tab and the REST
API fuse and analyze."""

from __future__ import annotations

import gc
import os
import threading
import weakref

import pytest
import torch

import lora_factory as lf
from webui_loras import make_lora, sd1_te_rows, sd1_unet_rows, sdxl_only_rows
from lib_nplora.cache import Caches
from lib_nplora.params import FuseParams
from lib_nplora.webui import xyz
from lib_nplora.webui.accordion import UiValues
from lib_nplora.webui.hosts import forge as forge_host
from lib_nplora.webui.hosts.a1111 import Adapter
from lib_nplora.app.request import INFOTEXT, FusionRequest
from lib_nplora.webui import hooks
from lib_nplora.webui.runtime import Runtime
from lib_nplora.app.service import FusionService
from webui.standins import forge_backend as fb
from webui.standins.a1111_lora import StandInNetworks, StandInSdModel, network, snapshot
from webui.standins.webui_modules import (StandInDevices, StandInOptions, StandInProcessing, StandInShared,
                                          standin_parse_prompt)


def _sd1_model(networks):
    model = StandInSdModel("sd1", sd1_unet_rows(), sd1_te_rows())
    networks.assign_network_names_to_compvis_modules(model)
    return model


@pytest.fixture
def host(lora_dir):
    """A Runtime over the A1111 adapter with an SD1 model loaded, plus SDXL content for switches."""
    folder, _ = lora_dir
    make_lora(folder / "xl_content.safetensors", "sdxl", sdxl_only_rows(), rank=4, seed=6)
    networks = StandInNetworks(folder)
    networks.list_available_networks()
    shared = StandInShared(_sd1_model(networks))
    adapter = Adapter(networks, network_module=network, shared=shared, devices=StandInDevices(), lora_dir=folder)
    printed: list[str] = []
    rt = Runtime(adapter=adapter, service=FusionService(Caches(max_bytes=32 << 20)), opts=lambda: StandInOptions(),
                 host_device=lambda: torch.device("cpu"), printer=printed.append)
    return rt, networks, shared, printed


def run_job(rt, networks, sd_model, prompt="", ui=UiValues(), **xyz):
    """One job as A1111 runs it: process(), per pass the builtin Lora's activation (it clears
    ``loaded_networks``) then after_extra_networks_activate, the layers' forwards, postprocess()."""
    p = StandInProcessing(sd_model, prompt)
    for k, v in xyz.items():
        setattr(p, f"nplora_{k}", v)
    hooks.begin_job(rt, p, ui)
    networks.loaded_networks.clear()
    applied = hooks.on_pass(rt, p, standin_parse_prompt(prompt))
    networks.forward_all(sd_model)
    hooks.end_job(rt, p)
    return p, applied


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


UI_ON = UiValues(enabled=True, content="content", style="style")
UI_OFF = UiValues(enabled=False, content="content", style="style")


def test_checkpoint_switch_drops_the_old_model_and_warns_for_a_pair_that_no_longer_fits(host):
    rt, networks, shared, printed = host
    p, applied = run_job(rt, networks, shared.sd_model, "<nplora:content:style>")
    assert applied is not None
    old_layer = weakref.ref(next(iter(shared.sd_model.network_layer_mapping.values())))

    # SD1.5 -> SDXL, as A1111 does it: a new model object, names assigned, on_model_loaded
    xl = StandInSdModel("sdxl", sdxl_only_rows(), [])
    networks.assign_network_names_to_compvis_modules(xl)
    shared.sd_model = xl
    rt.forget_model(xl)
    del p, applied
    gc.collect()
    assert old_layer() is None  # nothing of NP-LoRA (caches, networks, jobs) keeps the old model alive

    before = snapshot(xl)
    p, applied = run_job(rt, networks, xl, "<nplora:content:style>")
    assert applied is None
    warning = p.extra_generation_params[INFOTEXT["warning"]]
    assert "is for SD1, but the loaded model is SDXL" in warning and "without NP-LoRA" in warning
    assert any("is for SD1" in line for line in printed)
    assert all(torch.equal(before[k], v) for k, v in snapshot(xl).items())
    assert networks.loaded_networks == []

    # a pair made for SDXL works on the new model, and SD1 works again after switching back
    p, applied = run_job(rt, networks, xl, "<nplora:xl_content:xl_style>")
    assert applied is not None and INFOTEXT["warning"] not in p.extra_generation_params
    sd1 = _sd1_model(networks)
    shared.sd_model = sd1
    rt.forget_model(sd1)
    p, applied = run_job(rt, networks, sd1, "<nplora:content:style>")
    assert applied is not None and INFOTEXT["warning"] not in p.extra_generation_params


def test_hundred_enable_disable_cycles_leave_the_weights_bit_exact(host):
    rt, networks, shared, _ = host
    model = shared.sd_model
    before = snapshot(model)
    for i in range(100):
        ui = UiValues(enabled=True, content="content", style="style", mu=0.25 * (i % 4))
        _, applied = run_job(rt, networks, model, "", ui)
        assert applied is not None
        _, off = run_job(rt, networks, model, "", UI_OFF)
        assert off is None
        if i in (0, 49, 99):
            after = snapshot(model)
            assert all(torch.equal(before[k], after[k]) for k in before), f"cycle {i}"


def test_xyz_sweep_of_20_mu_by_3_k_completes_and_memory_returns(host):
    """60 cells as the X/Y/Z plot runs them (a shallow copy of p per cell, axis values set on it);
    process memory after the sweep is within 5 % of before, the cache's bounded bytes excluded."""
    rt, networks, shared, _ = host
    model = shared.sd_model
    caches = rt.service.caches
    for k in (None, 1, 2):  # warm-up: imports, allocator pools, LAPACK workspaces
        run_job(rt, networks, model, "", UI_ON, k=k)
    gc.collect()
    before = _rss() - caches.stats().bytes
    seen = set()
    for k in (xyz.FULL_RANK, 2, 4):
        for i in range(20):
            p, applied = run_job(rt, networks, model, "", UI_ON, mu=round(0.2 * i, 2), k=k)
            assert applied is not None, p.extra_generation_params.get(INFOTEXT["warning"])
            assert p.extra_generation_params[INFOTEXT["mu"]] == f"{round(0.2 * i, 2):g}"
            seen.add(applied.ident)
    gc.collect()
    stats = caches.stats()
    after = _rss() - stats.bytes
    assert len(seen) == 60  # one fusion per cell
    assert stats.bytes <= stats.max_bytes
    assert networks.loaded_networks == []
    assert after <= before * 1.05, (before, after)


def test_generations_while_the_api_fuses_and_analyzes(host, lora_dir):
    """A generation job, two REST-style saves and an analysis at once, on one FusionService:
    the generation's weights are the ones a quiet run gives, files are whole, the cache bounded."""
    rt, networks, shared, _ = host
    folder, _ = lora_dir
    model = shared.sd_model
    quiet = {}
    for mu in (0.5, 2.0):
        run_job(rt, networks, model, "", UiValues(enabled=True, content="content", style="style", mu=mu))
    # the weights one job leaves during sampling, measured alone
    for mu in (0.5, 2.0):
        p = StandInProcessing(model, "")
        hooks.begin_job(rt, p, UiValues(enabled=True, content="content", style="style", mu=mu))
        networks.loaded_networks.clear()
        hooks.on_pass(rt, p, {})
        networks.forward_all(model)
        quiet[mu] = snapshot(model)
        hooks.end_job(rt, p)
    rt.service.caches.clear()

    errors, sampled = [], {}
    barrier = threading.Barrier(4)
    ctx = rt.context()

    def guarded(fn):
        def run():
            try:
                barrier.wait()
                fn()
            except Exception as e:  # pragma: no cover - asserted below
                errors.append(e)
        return run

    def generate():
        for mu in (0.5, 2.0, 0.5):
            p = StandInProcessing(model, "")
            hooks.begin_job(rt, p, UiValues(enabled=True, content="content", style="style", mu=mu))
            networks.loaded_networks.clear()
            hooks.on_pass(rt, p, {})
            networks.forward_all(model)
            sampled.setdefault(mu, []).append(snapshot(model))
            hooks.end_job(rt, p)

    def save(name, mu):
        ctx.service.save(ctx.index(), FusionRequest("content", "style", FuseParams(mu=mu)), name)

    def analyze():
        assert ctx.service.analyze(ctx.index(), FusionRequest("te_content", "te_style")).modules

    threads = [threading.Thread(target=guarded(f)) for f in
               (generate, lambda: save("api_a", 1.0), lambda: save("api_b", 4.0), analyze)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for mu, snaps in sampled.items():
        for snap in snaps:
            assert all(torch.equal(quiet[mu][k], snap[k]) for k in snap), mu
    assert {"api_a.safetensors", "api_b.safetensors"} <= set(os.listdir(folder))
    assert not [n for n in os.listdir(folder) if n.startswith(".") or n.endswith(".tmp")]
    stats = rt.service.caches.stats()
    assert stats.bytes <= stats.max_bytes


def test_fp8_with_the_fp16_weight_cache_tells_the_user_that_other_loras_are_dropped(host):
    """A1111's FP8 weight with 'Cache FP16 weight for LoRA' keeps only the last network of
    ``loaded_networks``: the job still gets NP-LoRA, and the infotext and the console say so."""
    from webui.standins.a1111_lora import StandInNetwork

    rt, networks, shared, printed = host
    adapter = rt.require_adapter()
    adapter._devices.fp8 = True
    shared.opts.cache_fp16_weight = True
    p = StandInProcessing(shared.sd_model, "<lora:mine:1> <nplora:content:style>")
    hooks.begin_job(rt, p, UiValues())
    networks.loaded_networks[:] = [StandInNetwork("mine", None)]  # the user's <lora:mine:1>
    applied = hooks.on_pass(rt, p, standin_parse_prompt(p.prompt))
    assert applied is not None and p.extra_generation_params[INFOTEXT["enabled"]] == "True"
    warning = p.extra_generation_params[INFOTEXT["warning"]]
    assert "only the last network" in warning and "mine" in warning
    assert any("only the last network" in line for line in printed)
    hooks.end_job(rt, p)


# ---------------------------------------------------------------------------- Forge

FLUX_ROWS = lf.select("flux", "attn", components=("unet",), blocks=("double_blocks.0.img_attn.",))
XL_UNET = lf.select("sdxl", "attn", components=("unet",), blocks=("input_blocks.4.1.transformer_blocks.0.",))


class StandInFluxModel(fb.StandInForgeModel):
    """Forge's ``Flux`` engine object (recognised by its class name, as Forge names it)."""

    def __init__(self, rows):
        super().__init__(rows, [])
        self.is_sdxl = False


StandInFluxModel.__name__ = "Flux"


class P:
    def __init__(self, sd_model):
        self.sd_model = sd_model


def forge_setup(folder, flux=False):
    """The Forge adapter over SDXL content/style LoRAs (and FLUX ones) in ``folder``, and a service."""
    make_lora(folder / "content.safetensors", "sdxl", XL_UNET, rank=4, seed=1)
    make_lora(folder / "style.safetensors", "sdxl", XL_UNET, rank=4, seed=2)
    if flux:
        make_lora(folder / "flux_content.safetensors", "flux", FLUX_ROWS, rank=4, seed=3)
        make_lora(folder / "flux_style.safetensors", "flux", FLUX_ROWS, rank=4, seed=4)
    networks = StandInNetworks(folder)
    networks.list_available_networks()
    adapter = forge_host.Adapter(networks, lora_backend=fb, dynamic_args={"online_lora": False}, lora_dir=folder)
    return adapter, FusionService(Caches())


def test_forge_checkpoint_switch_to_flux_drops_patches_of_the_old_model(tmp_path):
    adapter, service = forge_setup(tmp_path, flux=True)

    def fuse(content, style, arch):
        return service.fuse(adapter.index(), FusionRequest(content, style), device="cpu", dtype=torch.float32,
                            arch=arch)

    xl = fb.StandInForgeModel(XL_UNET, [])
    fused = fuse("content", "style", "sdxl")
    fb.standin_batch(xl, lambda: adapter.activate(P(xl), fused))
    assert adapter._patches
    old_patcher = weakref.ref(xl.forge_objects_original.unet)
    adapter.end_job(P(xl))

    flux = StandInFluxModel(FLUX_ROWS)
    assert adapter.model_arch(flux) == "flux"
    adapter.forget_model()
    del xl
    gc.collect()
    assert old_patcher() is None and not adapter._patches

    before = flux.weights()
    fused_flux = fuse("flux_content", "flux_style", "flux")
    fb.standin_batch(flux, lambda: adapter.activate(P(flux), fused_flux))
    changed = {k for k, v in flux.weights().items() if not torch.equal(before[k], v)}
    assert changed and all(k.startswith("unet.diffusion_model.double_blocks.0.") for k in changed)
    adapter.end_job(P(flux))
    fb.standin_batch(flux, lambda: adapter.deactivate(P(flux)))
    assert all(torch.equal(before[k], v) for k, v in flux.weights().items())


def test_forge_hundred_enable_disable_cycles_leave_the_weights_bit_exact(tmp_path):
    adapter, service = forge_setup(tmp_path)
    sd = fb.StandInForgeModel(XL_UNET, [])
    before = sd.weights()
    for i in range(100):
        fused = service.fuse(adapter.index(), FusionRequest("content", "style", FuseParams(mu=0.25 * (i % 4))),
                             device="cpu", dtype=torch.float32, arch="sdxl")
        fb.standin_batch(sd, lambda: adapter.activate(P(sd), fused))
        adapter.end_job(P(sd))
        fb.standin_batch(sd, lambda: adapter.deactivate(P(sd)))
        if i in (0, 99):
            assert all(torch.equal(before[k], v) for k, v in sd.weights().items()), f"cycle {i}"
