"""Host detection, the host's LoRA list as an index, the model's architecture."""

from __future__ import annotations

import os

import pytest

from lib_nplora.webui import hosts
from lib_nplora.webui.hosts import HostError, HostLoraIndex, detect, model_arch
from lib_nplora.app.index import LoraNameError
from webui.standins.a1111_lora import StandInNetworkOnDisk, StandInNetworks


def fake_find_spec(present):
    def find_spec(name):
        if name in present:
            return object()
        if any(p.startswith(name + ".") for p in present):
            return object()
        return None
    return find_spec


@pytest.mark.parametrize("present,expected", [
    ({"modules"}, "a1111"),
    ({"modules", "modules_forge", "backend.patcher.lora", "ldm_patched.modules.lora"}, "forge"),
    ({"modules", "modules_forge", "ldm_patched.modules.lora"}, "forge_ldm"),
    ({"modules", "modules_forge"}, None),
    (set(), None),
])
def test_detect_by_capability(present, expected):
    assert detect(fake_find_spec(present)) == expected


def test_detect_survives_broken_parent_packages():
    def find_spec(name):
        raise ModuleNotFoundError(name)
    assert detect(find_spec) is None


def test_create_refuses_unknown_hosts_clearly():
    with pytest.raises(HostError, match="not one NP-LoRA knows"):
        hosts.create("comfyui")


class Flags:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class Flux:
    pass


@pytest.mark.parametrize("model,arch", [
    (Flags(is_sdxl=True, is_sd1=False, is_sd2=False), "sdxl"),
    (Flags(is_sdxl=False, is_sd1=True, is_sd2=False), "sd1"),
    (Flags(is_sdxl=False, is_sd1=False, is_sd2=True), "sd2"),
    (Flags(is_sd3=True, is_sdxl=False, is_sd1=True), None),
    (Flux(), "flux"),
    (Flags(), None),
    (None, None),
])
def test_model_arch(model, arch):
    assert model_arch(model) == arch


def test_host_index_lists_the_hosts_names_with_architectures(lora_dir):
    folder, made = lora_dir
    networks = StandInNetworks(folder)
    networks.list_available_networks()
    index = HostLoraIndex(networks, folder)
    entries = index.entries()
    assert set(entries) == {"content", "style", "te_content", "te_style", "xl_style"}
    assert entries["style"].path == os.fspath(made["style"].path)
    assert entries["content"].fits("sd1") and not entries["xl_style"].fits("sd1")
    assert index.names("sd1") == ["content", "style", "te_content", "te_style"]
    assert index.names("sdxl") == ["xl_style"]
    assert "xl_style" in index.names(None)


def test_host_index_resolves_aliases_refuses_paths_and_rescans_once(lora_dir):
    folder, made = lora_dir
    networks = StandInNetworks(folder)
    networks.list_available_networks()
    networks.available_networks["style"].alias = "watercolor"
    index = HostLoraIndex(networks, folder)
    assert index.resolve("watercolor").name == "style"
    for bad in ("../content", str(made["content"].path), "styles/style"):
        with pytest.raises(LoraNameError, match="looks like a path"):
            index.resolve(bad)
    calls = networks.list_calls
    with pytest.raises(LoraNameError, match="no LoRA named 'missing'"):
        index.resolve("missing")
    assert networks.list_calls == calls + 1  # one rescan, as the WebUI does for <lora:…>


def test_host_index_follows_the_hosts_list_and_keeps_unreadable_files(lora_dir):
    folder, _ = lora_dir
    networks = StandInNetworks(folder)
    networks.list_available_networks()
    index = HostLoraIndex(networks, folder)
    assert "legacy" not in index.entries()
    pickle = folder / "legacy.pt"
    pickle.write_bytes(b"\x80\x02}q\x00.")
    networks.available_networks["legacy"] = StandInNetworkOnDisk("legacy", str(pickle))
    entry = index.entries()["legacy"]  # listed by the host: resolvable, so the reader can explain
    assert entry.arch is None and "legacy" not in index.names("sd1")
