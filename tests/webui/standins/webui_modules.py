"""Stand-ins for the WebUI's ``modules.*`` that NP-LoRA's Script, accordion, settings, X/Y/Z and
extra-network code use.

Mirrored (A1111 v1.10.1; Forge ``dfdcbab6`` has the same interfaces):

* ``modules.scripts``: ``Script`` (``title()``, ``show()``, ``ui()``, ``elem_id(item_id)`` ->
  ``script_{txt2img|img2img}_{title, lowercased, non-word characters -> _}_{item_id}``,
  ``infotext_fields``, ``paste_field_names``), ``AlwaysVisible``, ``scripts_data`` of
  ``ScriptClassData(script_class, path, basedir, module)``.
* ``modules.ui_components``: ``InputAccordion(value, **kwargs)`` (a hidden checkbox that is the
  input, and a context manager opening an accordion), ``FormRow``, ``ToolButton``.
* ``modules.extra_networks``: ``ExtraNetwork(name)``, ``ExtraNetworkParams(items)`` (one '=' ->
  ``named``, else ``positional``), ``register_extra_network``, ``extra_network_registry``.
* ``modules.shared``: ``OptionInfo(default, label, component, component_args, onchange, section,
  ...)`` with ``.info()``, ``opts.add_option(key, info)``, ``opts.<key>`` (saved value, else the
  registered default, else AttributeError), ``opts.data``.
* ``modules.shared.cmd_opts``: the command line as ``modules/cmd_args.py`` parses it, for the
  flags NP-LoRA reads (same names, types and defaults): ``--api``, ``--api-auth``, ``--nowebui``,
  ``--gradio-auth``, ``--gradio-auth-path``, ``--cors-allow-origins``, ``--cors-allow-origins-regex``,
  ``--listen``, ``--server-name``.
* ``modules.script_callbacks``: ``on_before_ui``, ``on_ui_settings``, ``on_model_loaded``,
  ``on_ui_tabs``, ``on_app_started``.
* ``scripts/xyz_grid.py``: ``AxisOption(label, type, apply, format_value=..., confirm=None,
  cost=0.0, choices=None, prepare=None)``, ``axis_options``; module name ``xyz_grid.py``.
* ``modules.processing.StableDiffusionProcessing``: ``extra_generation_params``, ``comment()``,
  class-level ``cached_c``/``cached_uc`` lists shared by every instance (txt2img adds
  ``cached_hr_c``/``cached_hr_uc``), ``sd_model``.
"""

from __future__ import annotations

import argparse
import re
from collections import namedtuple
from types import SimpleNamespace

# ---------------------------------------------------------------------------- modules.scripts

StandInAlwaysVisible = object()
StandInScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])


class StandInScript:
    is_txt2img = False
    is_img2img = False
    infotext_fields = None
    paste_field_names = None

    def title(self):
        raise NotImplementedError()

    def elem_id(self, item_id):
        need_tabname = self.show(True) == self.show(False)
        tabkind = "img2img" if self.is_img2img else "txt2img"
        tabname = f"{tabkind}_" if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tabname}{title}_{item_id}"


def standin_scripts_module(scripts_data=None):
    return SimpleNamespace(Script=StandInScript, AlwaysVisible=StandInAlwaysVisible,
                           scripts_data=scripts_data if scripts_data is not None else [],
                           ScriptClassData=StandInScriptClassData)


# ---------------------------------------------------------------------------- modules.ui_components


def standin_ui_components(gr):
    """The ``modules.ui_components`` of a WebUI running gradio ``gr`` (built per gradio version)."""
    try:
        import gradio.component_meta as meta  # gradio 4
    except ImportError:
        meta = None
    create_pyi = getattr(meta, "create_or_modify_pyi", None)
    if create_pyi is not None:  # gradio 4 writes .pyi files for component subclasses; the WebUIs disable that
        meta.create_or_modify_pyi = lambda *a, **k: None
    try:
        class StandInInputAccordion(gr.Checkbox):
            def __init__(self, value=None, **kwargs):
                self.accordion_id = kwargs.get("elem_id") or "input-accordion"
                super().__init__(value=value, elem_id=f"{self.accordion_id}-checkbox", visible=False)
                self.accordion = gr.Accordion(label=kwargs.get("label", "Accordion"), open=value,
                                              elem_id=self.accordion_id, elem_classes=["input-accordion"])

            def __enter__(self):
                self.accordion.__enter__()
                return self

            def __exit__(self, exc_type, exc_val, exc_tb):
                self.accordion.__exit__(exc_type, exc_val, exc_tb)

            def get_block_name(self):
                return "checkbox"

        class StandInToolButton(gr.Button):
            def __init__(self, value="", *args, elem_classes=None, **kwargs):
                super().__init__(*args, value=value, elem_classes=["tool", *(elem_classes or [])], **kwargs)

            def get_block_name(self):
                return "button"
        class StandInFormRow(gr.Row):
            def get_block_name(self):
                return "row"
    finally:
        if create_pyi is not None:
            meta.create_or_modify_pyi = create_pyi

    return SimpleNamespace(InputAccordion=StandInInputAccordion, ToolButton=StandInToolButton,
                           FormRow=StandInFormRow)


# ---------------------------------------------------------------------------- modules.extra_networks


class StandInExtraNetworkParams:
    def __init__(self, items=None):
        self.items = items or []
        self.positional = []
        self.named = {}
        for item in self.items:
            parts = item.split("=", 2) if isinstance(item, str) else [item]
            if len(parts) == 2:
                self.named[parts[0]] = parts[1]
            else:
                self.positional.append(item)


class StandInExtraNetwork:
    def __init__(self, name):
        self.name = name

    def activate(self, p, params_list):
        raise NotImplementedError

    def deactivate(self, p):
        raise NotImplementedError


def standin_extra_networks_module():
    registry = {}
    return SimpleNamespace(ExtraNetwork=StandInExtraNetwork, ExtraNetworkParams=StandInExtraNetworkParams,
                           extra_network_registry=registry,
                           register_extra_network=lambda en: registry.__setitem__(en.name, en))


_TAG_RE = re.compile(r"<(\w+):([^>]+)>")


def standin_parse_prompt(prompt: str) -> dict:
    """``extra_networks.parse_prompt``: name -> [ExtraNetworkParams] of the prompt's tags."""
    found: dict = {}
    for m in _TAG_RE.finditer(prompt):
        found.setdefault(m.group(1), []).append(StandInExtraNetworkParams(items=m.group(2).split(":")))
    return found


# ---------------------------------------------------------------------------- modules.shared


class StandInOptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None,
                 section=None, refresh=None, comment_before="", comment_after="", infotext=None,
                 restrict_api=False, category_id=None):
        self.default, self.label, self.component, self.component_args = default, label, component, component_args
        self.onchange, self.section = onchange, section
        self.comment_after = comment_after

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self


class StandInOptions:
    def __init__(self, data=None):
        self.__dict__["data"] = dict(data or {})
        self.__dict__["data_labels"] = {}

    def add_option(self, key, info):
        self.data_labels[key] = info
        if key not in self.data:
            self.data[key] = info.default

    def __getattr__(self, item):
        if item in self.data:
            return self.data[item]
        if item in self.data_labels:
            return self.data_labels[item].default
        raise AttributeError(item)

    def set(self, key, value):
        self.data[key] = value
        info = self.data_labels.get(key)
        if info is not None and info.onchange is not None:
            info.onchange()


def standin_cmd_opts(*argv: str):
    """``shared.cmd_opts`` of a WebUI started with ``argv`` (e.g. ``"--api", "--api-auth", "u:p"``)."""
    parser = argparse.ArgumentParser(prog="webui.py", add_help=False)
    parser.add_argument("--listen", action="store_true")
    parser.add_argument("--server-name", type=str, default=None)
    parser.add_argument("--gradio-auth", type=str, default=None)
    parser.add_argument("--gradio-auth-path", type=str, default=None)
    parser.add_argument("--api", action="store_true")
    parser.add_argument("--api-auth", type=str, default=None)
    parser.add_argument("--nowebui", action="store_true")
    parser.add_argument("--cors-allow-origins", type=str, default=None)
    parser.add_argument("--cors-allow-origins-regex", type=str, default=None)
    return parser.parse_args(list(argv))


def standin_shared_module(opts=None, cmd_opts=None):
    return SimpleNamespace(OptionInfo=StandInOptionInfo, opts=opts or StandInOptions(),
                           cmd_opts=cmd_opts if cmd_opts is not None else standin_cmd_opts())


# ---------------------------------------------------------------------------- script_callbacks


class StandInScriptCallbacks:
    def __init__(self):
        self.callbacks: dict[str, list] = {}

    def _add(self, kind, callback):
        self.callbacks.setdefault(kind, []).append(callback)

    def on_before_ui(self, callback, *, name=None):
        self._add("before_ui", callback)

    def on_ui_settings(self, callback, *, name=None):
        self._add("ui_settings", callback)

    def on_model_loaded(self, callback, *, name=None):
        self._add("model_loaded", callback)

    def on_ui_tabs(self, callback, *, name=None):
        self._add("ui_tabs", callback)

    def on_app_started(self, callback, *, name=None):
        self._add("app_started", callback)


# ---------------------------------------------------------------------------- scripts/xyz_grid.py


class StandInAxisOption:
    def __init__(self, label, type, apply, format_value=None, confirm=None, cost=0.0, choices=None, prepare=None):
        self.label, self.type, self.apply = label, type, apply
        self.format_value, self.confirm, self.cost, self.choices, self.prepare = (
            format_value, confirm, cost, choices, prepare)


class StandInXyzScript:
    pass


StandInXyzScript.__module__ = "xyz_grid.py"  # how the WebUI's script loader names script modules


def standin_xyz_module():
    return SimpleNamespace(AxisOption=StandInAxisOption,
                           axis_options=[StandInAxisOption("Nothing", str, lambda p, x, xs: None),
                                         StandInAxisOption("Seed", int, lambda p, x, xs: None)])


def standin_xyz_scripts_data(xyz_module):
    return [StandInScriptClassData(StandInXyzScript, "scripts/xyz_grid.py", ".", xyz_module)]


# ---------------------------------------------------------------------------- processing


class StandInProcessing:
    """``StableDiffusionProcessingTxt2Img`` as far as the hooks see it."""

    cached_c = [None, None]
    cached_uc = [None, None]
    cached_hr_c = [None, None]
    cached_hr_uc = [None, None]

    def __init__(self, sd_model=None, prompt=""):
        self.sd_model = sd_model
        self.prompt = prompt
        self.extra_generation_params = {}
        self.comments = {}
        self.cached_c = StandInProcessing.cached_c
        self.cached_uc = StandInProcessing.cached_uc
        self.cached_hr_c = StandInProcessing.cached_hr_c
        self.cached_hr_uc = StandInProcessing.cached_hr_uc

    def comment(self, text):
        self.comments[text] = 1


# ---------------------------------------------------------------------------- modules.devices / shared


class StandInDevices:
    """``modules.devices`` as the A1111 adapter reads it (``fp8``: FP8 weight storage is on)."""

    fp8 = False


class StandInShared:
    """``modules.shared`` as the A1111 adapter reads it (``sd_model``, ``opts``, ``cmd_opts``)."""

    def __init__(self, sd_model, cmd_opts=None):
        self.sd_model = sd_model
        self.opts = StandInOptions()
        self.cmd_opts = cmd_opts if cmd_opts is not None else standin_cmd_opts()
