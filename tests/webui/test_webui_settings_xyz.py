"""Settings section, X/Y/Z axes and the <nplora:…> extra network, against stand-ins of the WebUI's
modules."""

from __future__ import annotations

import pytest
import torch

from lib_nplora.errors import ParameterError
from lib_nplora.params import FuseParams
from lib_nplora.webui import extra_network, settings, xyz
from lib_nplora.app.index import LoraNameError
from webui.standins.webui_modules import (StandInOptions, standin_extra_networks_module, standin_shared_module,
                                          standin_xyz_module, standin_xyz_scripts_data)


class FakeGradio:
    Radio, Slider, Number, Checkbox = "Radio", "Slider", "Number", "Checkbox"


def test_settings_section_and_keys():
    shared = standin_shared_module()
    settings.register(shared, FakeGradio)
    labels = shared.opts.data_labels
    assert set(labels) == set(settings.OPTIONS)
    assert all(info.section == ("nplora", "NP-LoRA") for info in labels.values())
    assert labels["nplora_device"].component_args == {"choices": ["auto", "GPU", "CPU"]}
    assert settings.read(shared.opts) == settings.DEFAULTS  # registered defaults


def test_settings_cache_size_takes_effect_on_change():
    shared = standin_shared_module()
    settings.register(shared, FakeGradio)
    caches = settings.shared_caches
    old = caches.max_bytes
    try:
        shared.opts.set("nplora_cache_mb", 64)
        assert caches.max_bytes == 64 << 20
    finally:
        caches.set_max_bytes(old)


@pytest.mark.parametrize("data,expected", [
    ({}, settings.DEFAULTS),  # API-only mode: nothing registered, nothing saved
    ({"nplora_device": "CPU", "nplora_cache_mb": 512, "nplora_default_mu": 1.0, "nplora_default_k": 8,
      "nplora_project_te": True}, settings.Settings("CPU", 512, 1.0, 8, True)),
    ({"nplora_device": "TPU", "nplora_cache_mb": "lots", "nplora_default_mu": "x", "nplora_default_k": -3},
     settings.Settings("TPU", settings.DEFAULTS.cache_mb, settings.DEFAULTS.default_mu, 0, False)),
    ({"nplora_device": " cpu "}, settings.Settings("CPU")),
    ({"nplora_cache_mb": 10 ** 12}, settings.Settings(cache_mb=settings.MAX_CACHE_MB)),
])
def test_settings_read_is_safe(data, expected):
    assert settings.read(StandInOptions(data)) == expected


def test_settings_defaults_become_fuse_params():
    assert settings.Settings(default_mu=1.0, default_k=8, project_te=True).defaults() == FuseParams(
        mu=1.0, k=8, scope="all")
    assert settings.Settings(default_mu=-5.0).defaults() == FuseParams()  # out of range: the paper's


def test_fusion_device_and_dtype():
    s = settings.Settings
    assert settings.fusion_device(s(device="CPU"), "cuda:0") == torch.device("cpu")
    assert settings.fusion_device(s(device="auto"), "cuda:0") == torch.device("cuda:0")
    assert settings.fusion_device(s(device="GPU"), None) == torch.device("cpu")
    assert settings.fusion_device(s(device="auto"), "privateuseone:0") == torch.device("cpu")
    assert settings.fusion_device(s(device="cpu"), "cuda:0") == torch.device("cpu")
    with pytest.raises(ParameterError, match="device 'TPU' cannot be used"):  # kept by read(), refused here
        settings.fusion_device(s(device="TPU"), "cuda:0")
    assert settings.fusion_dtype(torch.device("cpu")) == torch.float32
    assert settings.fusion_dtype(torch.device("cuda:0")) == torch.float16


# ---------------------------------------------------------------------------- X/Y/Z


def checker(known=("content", "style")):
    def check(name, role):
        if name not in known:
            raise LoraNameError(f"no LoRA named {name!r} was found")
    return check


def test_xyz_axes_are_appended_once():
    module = standin_xyz_module()
    data = standin_xyz_scripts_data(module)
    first = [o.label for o in module.axis_options]
    assert xyz.register(data, lambda: ["content", "style"], checker()) == 8  # the table's 7 and the LoRA-set axis
    assert [o.label for o in module.axis_options][:len(first)] == first  # appended, indices kept
    assert xyz.register(data, lambda: ["content", "style"], checker()) == 0  # Reload UI
    labels = [o.label for o in module.axis_options if o.label.startswith(xyz.LABEL_PREFIX)]
    assert labels == ["[NP-LoRA] mu", "[NP-LoRA] rank k", "[NP-LoRA] content LoRA", "[NP-LoRA] style LoRA",
                      "[NP-LoRA] method", "[NP-LoRA] content weight", "[NP-LoRA] style weight",
                      "[NP-LoRA] LoRA set (contents | styles)"]  # appended after the shipped ones (issue 14)


def test_xyz_without_the_plot_script():
    assert xyz.register([], lambda: [], checker()) == 0


def axes():
    module = standin_xyz_module()
    xyz.register(standin_xyz_scripts_data(module), lambda: ["content", "style"], checker())
    return {o.label[len(xyz.LABEL_PREFIX):]: o for o in module.axis_options if o.label.startswith(xyz.LABEL_PREFIX)}


class P:
    pass


def test_xyz_axes_set_the_cells_overrides():
    a, p = axes(), P()
    a["mu"].apply(p, 0.25, [0.25])
    a["rank k"].apply(p, "full", ["full"])
    a["content LoRA"].apply(p, "content", ["content"])
    a["method"].apply(p, "direct", ["direct"])
    a["style weight"].apply(p, 0.5, [0.5])
    assert xyz.overrides(p) == {"nplora_mu": 0.25, "nplora_k": xyz.FULL_RANK, "nplora_content": "content",
                                "nplora_method": "direct", "nplora_style_weight": 0.5}
    assert xyz.param_changes(xyz.overrides(p))["k"] is None  # "full" overrides a tag's k with full rank
    a["rank k"].apply(p, "8", ["8"])
    assert xyz.overrides(p)["nplora_k"] == 8
    assert a["content LoRA"].choices() == ["content", "style"]
    assert a["method"].choices() == ["nplora", "direct"]


@pytest.mark.parametrize("axis,values,error", [
    ("mu", [0.5, -1.0], ParameterError),
    ("mu", [float("nan")], ParameterError),
    ("rank k", ["4", "x"], ParameterError),
    ("rank k", ["0"], None),
    ("method", ["nplora", "ties"], ParameterError),
    ("content weight", [1e9], ParameterError),
    ("style LoRA", ["style", "missing"], LoraNameError),
    ("style LoRA", ["../style"], LoraNameError),
    ("style LoRA", ["style"], None),
])
def test_xyz_values_are_checked_before_the_plot_runs(axis, values, error):
    confirm = axes()[axis].confirm
    if error is None:
        confirm(P(), values)
    else:
        with pytest.raises(error):
            confirm(P(), values)


# ---------------------------------------------------------------------------- extra network


def test_extra_network_records_the_tags_items_and_replaces_on_reregister():
    en = standin_extra_networks_module()
    extra_network.register(en)
    first = en.extra_network_registry["nplora"]
    extra_network.register(en)  # Reload UI
    assert en.extra_network_registry["nplora"] is not first and len(en.extra_network_registry) == 1
    p = P()
    en.extra_network_registry["nplora"].activate(p, [en.ExtraNetworkParams(items=["a", "b", "mu=1"])])
    assert p.nplora_prompt_items == [["a", "b", "mu=1"]]
    en.extra_network_registry["nplora"].activate(p, [])
    assert p.nplora_prompt_items == []
    en.extra_network_registry["nplora"].deactivate(p)  # must not raise (the base class does)

