"""The generation hook (Runtime) over the A1111 adapter and stand-ins: precedence of tag,
accordion and X/Y/Z values, warnings instead of failures, infotext, cond caches, cache reuse."""

from __future__ import annotations

import pytest
import torch

from webui_loras import sd1_te_rows, sd1_unet_rows
from lib_nplora.cache import Caches
from lib_nplora.webui import script as script_mod
from lib_nplora.webui.accordion import UiValues
from lib_nplora.webui.hosts.a1111 import Adapter
from lib_nplora.app.request import INFOTEXT, FusionRequest
from lib_nplora.webui import hooks
from lib_nplora.webui import runtime as runtime_mod
from lib_nplora.webui.runtime import Runtime
from lib_nplora.app.context import HostContext
from lib_nplora.app.service import FusionService
from webui.standins.a1111_lora import StandInNetwork, StandInNetworks, StandInSdModel, network, snapshot
from webui.standins.webui_modules import (StandInDevices, StandInOptions, StandInProcessing, StandInShared,
                                          standin_parse_prompt)


@pytest.fixture
def rt(lora_dir):
    folder, _ = lora_dir
    networks = StandInNetworks(folder)
    networks.list_available_networks()
    sd_model = StandInSdModel("sd1", sd1_unet_rows(), sd1_te_rows())
    networks.assign_network_names_to_compvis_modules(sd_model)
    adapter = Adapter(networks, network_module=network, shared=StandInShared(sd_model), devices=StandInDevices(),
                      lora_dir=folder)
    printed = []
    runtime = Runtime(adapter=adapter, service=FusionService(Caches()), opts=lambda: StandInOptions(),
                      host_device=lambda: torch.device("cpu"), printer=printed.append)
    runtime.test = dict(networks=networks, sd_model=sd_model, printed=printed)
    return runtime


def job(rt, prompt="", ui=UiValues(), **xyz):
    """One job's first pass, as the WebUI runs it: process(), builtin lora activation (which clears
    loaded_networks), after_extra_networks_activate."""
    p = StandInProcessing(rt.test["sd_model"], prompt)
    for k, v in xyz.items():
        setattr(p, f"nplora_{k}", v)
    hooks.begin_job(rt, p, ui)
    rt.test["networks"].loaded_networks.clear()
    applied = hooks.on_pass(rt, p, standin_parse_prompt(prompt))
    return p, applied


def ours(rt):
    return [n for n in rt.test["networks"].loaded_networks if getattr(n, "nplora_digest", None)]


UI_ON = UiValues(enabled=True, content="content", style="style", mu=0.5)


def test_tag_applies_and_writes_infotext(rt):
    p, applied = job(rt, "a cat <nplora:content:watercolor:mu=0.8:k=2>")
    assert applied is not None and [n.name for n in ours(rt)] == [applied.ident]
    info = p.extra_generation_params
    assert info[INFOTEXT["enabled"]] == "True"
    assert (info[INFOTEXT["content"]], info[INFOTEXT["style"]]) == ("content", "watercolor")
    assert (info[INFOTEXT["mu"]], info[INFOTEXT["k"]], info[INFOTEXT["scope"]]) == ("0.8", "2", "unet")
    c_hash, s_hash = info[INFOTEXT["hashes"]].split(", ")
    assert c_hash.startswith("content: ") and s_hash.startswith("style: ") and len(s_hash) == len("style: ") + 12
    assert INFOTEXT["warning"] not in info and not p.comments


def test_tag_wins_over_the_accordion_and_xyz_wins_over_both(rt):
    _, from_ui = job(rt, "", UI_ON)
    _, from_tag = job(rt, "<nplora:content:style:mu=2>", UI_ON)
    assert from_tag.ident != from_ui.ident
    p, from_xyz = job(rt, "<nplora:content:style:mu=2>", UI_ON, mu=0.5)
    assert from_xyz.ident == from_ui.ident  # same inputs and parameters as the accordion's
    assert p.extra_generation_params[INFOTEXT["mu"]] == "0.5"


def test_xyz_full_rank_cell_overrides_the_tags_k(rt):
    from lib_nplora.webui import xyz

    p_tag, _ = job(rt, "<nplora:content:style:k=2>")
    p_full, _ = job(rt, "<nplora:content:style:k=2>", k=xyz.FULL_RANK)
    assert p_tag.extra_generation_params[INFOTEXT["k"]] == "2"
    assert INFOTEXT["k"] not in p_full.extra_generation_params  # full rank: no k written


def test_xyz_axis_turns_np_lora_on_with_the_accordion_closed(rt):
    closed = UiValues(enabled=False, content="content", style="style")
    _, applied = job(rt, "", closed, mu=1.0)
    assert applied is not None
    _, none = job(rt, "", closed)
    assert none is None and ours(rt) == []


def test_off_restores_the_model_exactly(rt):
    networks, sd_model = rt.test["networks"], rt.test["sd_model"]
    before = snapshot(sd_model)
    job(rt, "", UI_ON)
    networks.forward_all(sd_model)
    assert any(not torch.equal(before[k], v) for k, v in snapshot(sd_model).items())
    p, applied = job(rt, "", UiValues(enabled=False, content="content", style="style"))
    assert applied is None
    networks.forward_all(sd_model)
    assert all(torch.equal(before[k], v) for k, v in snapshot(sd_model).items())
    assert INFOTEXT["enabled"] not in p.extra_generation_params


@pytest.mark.parametrize("prompt,ui,match", [
    ("<nplora:nonexistent:style>", UiValues(), "no LoRA named 'nonexistent'"),
    ("<nplora:../../etc/passwd:style>", UiValues(), "looks like a path"),
    ("<nplora:content:style:mu=-1>", UiValues(), "mu must be between"),
    ("<nplora:content:xl_style>", UiValues(), "is for SDXL, but the loaded model is SD1"),
    ("", UiValues(enabled=True, content="content", style=None), "not chosen"),
    ("", UiValues(enabled=True, content="content", style="style", k="lots"), "k must be 'full'"),
])
def test_problems_become_warnings_and_the_image_is_made_without_np_lora(rt, prompt, ui, match):
    user = StandInNetwork("users_lora", None)
    p = StandInProcessing(rt.test["sd_model"], prompt)
    hooks.begin_job(rt, p, ui)
    rt.test["networks"].loaded_networks[:] = [user]
    assert hooks.on_pass(rt, p, standin_parse_prompt(prompt)) is None
    assert rt.test["networks"].loaded_networks == [user]  # other LoRAs keep working
    warning = p.extra_generation_params[INFOTEXT["warning"]]
    assert match in warning and "without NP-LoRA" in warning
    assert INFOTEXT["enabled"] not in p.extra_generation_params
    assert any(match in c for c in p.comments)  # shown under the image in the UI
    assert any(match in line for line in rt.test["printed"])


def test_a_second_tag_is_ignored_with_a_note(rt):
    p, applied = job(rt, "<nplora:content:style> <nplora:style:content>")
    assert applied is not None
    assert "only the first is used" in p.extra_generation_params[INFOTEXT["warning"]]
    assert p.extra_generation_params[INFOTEXT["content"]] == "content"


def test_cond_caches_are_fresh_only_when_the_text_encoder_changes(rt):
    shared_c = StandInProcessing.cached_c
    p, _ = job(rt, "<nplora:content:style>")  # UNet only
    assert p.cached_c is shared_c
    p, applied = job(rt, "<nplora:te_content:te_style:scope=all>")
    assert applied.touches_text_encoder
    assert p.cached_c is not shared_c and p.cached_c == [None, None] and p.cached_hr_uc == [None, None]
    assert StandInProcessing.cached_c is shared_c  # the class-level cache is left alone
    p.cached_c[0] = "conds of this fusion"
    hooks.on_pass(rt, p, standin_parse_prompt("<nplora:te_content:te_style:scope=all>"))  # hires pass, same fusion
    assert p.cached_c[0] == "conds of this fusion"


def test_hires_and_batches_reuse_the_network(rt):
    p, first = job(rt, "", UI_ON)
    net = ours(rt)[0]
    for _ in range(3):
        rt.test["networks"].loaded_networks.clear()  # the builtin clears on every activation
        again = hooks.on_pass(rt, p, {})
        assert again.ident == first.ident and ours(rt) == [net]
    hooks.end_job(rt, p)
    assert ours(rt) == []


def test_xyz_cells_do_not_inherit_each_others_infotext(rt):
    p, _ = job(rt, "<nplora:missing:style>")
    shared_params = p.extra_generation_params
    cell = StandInProcessing(rt.test["sd_model"])
    cell.extra_generation_params = shared_params  # copy(p) shares the dict
    hooks.begin_job(rt, cell, UI_ON)
    hooks.on_pass(rt, cell, {})
    assert INFOTEXT["warning"] not in shared_params and shared_params[INFOTEXT["enabled"]] == "True"


def test_mu_sweep_reuses_the_style_basis(rt, monkeypatch):
    from lib_nplora.fusion import linalg

    calls = []
    real = linalg.style_basis

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(linalg, "style_basis", counting)
    first = job(rt, "", UI_ON, mu=0.1)[1].ident
    after_first = len(calls)
    idents = {first} | {job(rt, "", UI_ON, mu=mu)[1].ident for mu in (0.5, 1.0, 4.0)}
    assert len(idents) == 4 and after_first >= 1 and len(calls) == after_first


def test_no_host_gives_a_warning_not_a_crash(lora_dir):
    from lib_nplora.webui.hosts import HostError

    def broken():
        raise HostError("the WebUI's built-in Lora extension is not loaded")

    printed = []
    rt = Runtime(adapter_factory=broken, opts=lambda: None, host_device=lambda: None, printer=printed.append)
    p = StandInProcessing(None, "<nplora:a:b>")
    hooks.begin_job(rt, p, UiValues())
    assert hooks.on_pass(rt, p, standin_parse_prompt("<nplora:a:b>")) is None
    assert "built-in Lora extension" in p.extra_generation_params[INFOTEXT["warning"]]
    assert rt.lora_names() == []


def test_unexpected_errors_are_reported_and_np_lora_stays_off(rt, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(rt.require_adapter(), "activate", boom)
    p, applied = job(rt, "", UI_ON)
    assert applied is None and "fusion failed (RuntimeError: out of memory)" in p.extra_generation_params[
        INFOTEXT["warning"]]


def test_context_for_the_tab_and_rest_api(rt):
    ctx = rt.context()
    assert ctx is rt and isinstance(ctx, HostContext)  # the runtime is the context, not a copy
    assert ctx.host == "a1111" and ctx.model_arch() == "sd1"
    assert ctx.index().names(ctx.model_arch()) == ["content", "style", "te_content", "te_style"]
    assert ctx.device() == torch.device("cpu") and ctx.service is rt.service
    assert ctx.defaults().mu == 0.5


def test_model_load_forgets_host_objects(rt):
    job(rt, "", UI_ON)
    net = ours(rt)[0]
    rt.forget_model(rt.test["sd_model"])
    assert ours(rt) == []
    job(rt, "", UI_ON)
    assert ours(rt)[0] is not net


def test_settings_default_mu_applies_to_tags(lora_dir, rt):
    rt._opts = lambda: StandInOptions({"nplora_default_mu": 2.0})
    p, _ = job(rt, "<nplora:content:style>")
    assert p.extra_generation_params[INFOTEXT["mu"]] == "2"


def test_runtime_singleton():
    assert runtime_mod.runtime() is runtime_mod.runtime()


def test_fusion_inside_inference_mode_gives_normal_tensors(rt):
    """Forge runs the hook under torch.inference_mode(); the cached factors must stay usable."""
    with torch.inference_mode():
        p, applied = job(rt, "", UI_ON)
    fused = rt.service.fuse(rt.index(), FusionRequest("content", "style"), device=torch.device("cpu"),
                            dtype=torch.float32, arch="sd1")
    m = next(iter(fused.modules.values()))
    assert applied is not None and not m.up.is_inference() and not m.down.is_inference()
    m.up.mul_(1.0)  # in-place use outside inference mode works


def test_hook_without_extra_network_data_reads_what_the_extra_network_recorded(rt):
    from webui.standins.webui_modules import standin_scripts_module

    Script = script_mod.make_script_class(standin_scripts_module(), get_runtime=lambda: rt)
    p = StandInProcessing(rt.test["sd_model"])
    Script().process(p, *UiValues().to_args())
    p.nplora_prompt_items = [["content", "style"]]
    Script().after_extra_networks_activate(p, *UiValues().to_args())  # no extra_network_data kwarg
    assert p.extra_generation_params[INFOTEXT["content"]] == "content"
    Script().postprocess(p, None, *UiValues().to_args())
    assert ours(rt) == []
