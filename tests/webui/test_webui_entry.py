"""The WebUI entry file (scripts/nplora.py), its callbacks, and install.py, with stand-ins of the
WebUI's modules in sys.modules (as the WebUI provides them)."""

from __future__ import annotations

import importlib.util
import runpy
import sys
import types
from pathlib import Path

import pytest

from lib_nplora.webui import callbacks as callbacks_mod
from lib_nplora.webui import runtime as runtime_mod
from webui.standins.webui_modules import (StandInScript, StandInScriptCallbacks, standin_cmd_opts, standin_extra_networks_module,
                                          standin_scripts_module, standin_shared_module, standin_xyz_module,
                                          standin_xyz_scripts_data)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def webui(monkeypatch):
    """Stand-in ``modules`` package with scripts, script_callbacks, extra_networks, shared."""
    xyz_module = standin_xyz_module()
    scripts = standin_scripts_module(standin_xyz_scripts_data(xyz_module))
    callbacks = StandInScriptCallbacks()
    extra_networks = standin_extra_networks_module()
    shared = standin_shared_module()
    modules = types.ModuleType("modules")
    modules.__path__ = []
    for name, obj in (("scripts", scripts), ("script_callbacks", callbacks), ("extra_networks", extra_networks),
                      ("shared", shared)):
        setattr(modules, name, obj)
        monkeypatch.setitem(sys.modules, f"modules.{name}", obj)
    monkeypatch.setitem(sys.modules, "modules", modules)
    return types.SimpleNamespace(scripts=scripts, callbacks=callbacks, extra_networks=extra_networks, shared=shared,
                                 xyz=xyz_module)


class NoHostRuntime(runtime_mod.Runtime):
    def __init__(self):
        super().__init__(adapter_factory=lambda: None, opts=lambda: None, host_device=lambda: None,
                         printer=lambda s: None)

    def lora_names(self):
        return ["content", "style"]


def test_entry_file_defines_one_script_and_registers_callbacks(webui, monkeypatch):
    monkeypatch.setattr(runtime_mod, "_runtime", NoHostRuntime())
    namespace = runpy.run_path(str(ROOT / "scripts" / "nplora.py"))
    classes = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, StandInScript)]
    assert len(classes) == 1 and classes[0]().title() == "NP-LoRA"  # the WebUI registers every Script subclass
    assert classes[0]().show(False) is webui.scripts.AlwaysVisible
    cbs = webui.callbacks.callbacks
    assert {"before_ui", "ui_settings", "model_loaded"} <= set(cbs)

    for cb in cbs["before_ui"]:
        cb()
    assert "nplora" in webui.extra_networks.extra_network_registry
    assert sum(o.label.startswith("[NP-LoRA]") for o in webui.xyz.axis_options) == 8  # 7 + the LoRA-set axis

    import gradio  # noqa: F401  (the settings use gradio component classes)
    for cb in cbs["ui_settings"]:
        cb()
    assert "nplora_device" in webui.shared.opts.data_labels


def test_tab_and_rest_are_registered(webui):
    """The real tab builds over the runtime's context and the real routes land on the app (the
    WebUI runs with --api)."""
    import gradio as gr
    from fastapi import FastAPI

    webui.shared.cmd_opts = standin_cmd_opts("--api")
    callbacks = StandInScriptCallbacks()
    rt = NoHostRuntime()
    callbacks_mod.register_callbacks(callbacks, get_runtime=lambda: rt)
    (ui_tabs,) = callbacks.callbacks["ui_tabs"]
    ((blocks, title, elem_id),) = ui_tabs()
    assert (title, elem_id) == ("NP-LoRA", "nplora_tab") and isinstance(blocks, gr.Blocks)
    (app_started,) = callbacks.callbacks["app_started"]
    app = FastAPI()
    app_started(None, app)
    paths = {r.path for r in app.routes}
    assert {"/nplora/v1/fuse", "/nplora/v1/analyze", "/nplora/v1/status"} <= paths


def test_model_loaded_callback_forgets_host_objects(webui):
    forgot = []

    class Rt(NoHostRuntime):
        def forget_model(self, sd_model=None):
            forgot.append(sd_model)

    callbacks = StandInScriptCallbacks()
    rt = Rt()
    callbacks_mod.register_callbacks(callbacks, get_runtime=lambda: rt)
    callbacks.callbacks["model_loaded"][0]("new model")
    assert forgot == ["new model"]


class StandInLaunch(types.ModuleType):
    """The WebUI's ``launch`` module: ``is_installed(package)``, ``run_pip(command, desc)``."""

    def __init__(self, missing=()):
        super().__init__("launch")
        self.missing = set(missing)
        self.pip = []

    def is_installed(self, package):
        return package not in self.missing

    def run_pip(self, command, desc=None, live=False):
        self.pip.append(command)


@pytest.mark.parametrize("missing,expected", [((), []), (("numpy",), ["install numpy"]),
                                              (("torch", "numpy"), [])])
def test_install_py_installs_only_what_is_missing(monkeypatch, capsys, missing, expected):
    launch = StandInLaunch(missing)
    monkeypatch.setitem(sys.modules, "launch", launch)
    for _ in range(2):  # every launch runs it: idempotent
        launch.pip.clear()
        runpy.run_path(str(ROOT / "install.py"), run_name="__main__")
        assert launch.pip == expected
    if "torch" in missing:
        assert "torch is not installed" in capsys.readouterr().out
