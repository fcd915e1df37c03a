"""The WebUI ``Script``: the NP-LoRA accordion on the txt2img and img2img tabs, and the job hooks
the WebUI calls on it (``process``, ``after_extra_networks_activate``, ``postprocess``).

The class is made over the host's ``modules.scripts`` (``scripts/nplora.py`` does that); its
instances hold no state (one per tab, recreated on "Reload UI"): everything goes to the
process-wide ``runtime.Runtime`` and the job's processing object (``hooks``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..app.request import TAG
from . import accordion, api_args, hooks
from .accordion import UiValues
from .runtime import TITLE, Runtime, runtime


def make_script_class(scripts_module, get_runtime: Callable[[], Runtime] = runtime, gr=None, ui_components=None,
                      get_api_args: Callable[[], api_args.ApiScriptArgs] = api_args.instance):
    """The WebUI ``Script`` class (a subclass of the host's ``scripts.Script``).

    Args:
        scripts_module: the WebUI's ``modules.scripts``.
        get_runtime: the Runtime to use (tests pass their own).
        gr, ui_components: gradio and ``modules.ui_components`` (default: imported on ``ui()``).
        get_api_args: what repairs an API job that the host handed no script arguments (``api_args``).
    """

    class Script(scripts_module.Script):
        sorting_priority = 15  # Forge: where the accordion sits among the others

        def title(self):
            return TITLE

        def show(self, is_img2img):
            return scripts_module.AlwaysVisible

        def ui(self, is_img2img):
            rt = get_runtime()
            gradio = gr or importlib.import_module("gradio")
            components = ui_components or importlib.import_module("modules.ui_components")
            built = accordion.build(gradio, components, self.elem_id, rt.lora_names, rt.refresh,
                                    rt.defaults(), rt.archs())
            self.infotext_fields = built.infotext_fields(gradio)
            self.paste_field_names = built.paste_field_names()
            return built.inputs

        def before_process(self, p, *args):
            # an API request served before the host's API set its defaults: see api_args
            get_api_args().repair(p, self.is_img2img)

        def process(self, p, *args):
            hooks.begin_job(get_runtime(), p, UiValues.from_args(args))

        def after_extra_networks_activate(self, p, *args, **kwargs):
            data = kwargs.get("extra_network_data")
            if data is None:  # a host that does not pass it: what the <nplora:…> extra network recorded
                data = {TAG: getattr(p, "nplora_prompt_items", None) or []}
            hooks.on_pass(get_runtime(), p, data)

        def postprocess(self, p, processed, *args):
            hooks.end_job(get_runtime(), p)

    return Script

