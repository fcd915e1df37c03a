"""NP-LoRA's WebUI callbacks (``modules.script_callbacks``): the extra network and the X/Y/Z axes
before the UI is built, the settings section, model loads, the NP-LoRA tab and the REST routes.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

from . import api_args, host_auth, settings as settings_mod, xyz
from .report import LOG_PREFIX
from .runtime import TITLE, Runtime, runtime


def register_callbacks(script_callbacks, get_runtime: Callable[[], Runtime] = runtime,
                       get_api_args: Callable[[], api_args.ApiScriptArgs] = api_args.instance) -> None:
    """Hook NP-LoRA into the WebUI's callbacks (called at import of ``scripts/nplora.py``)."""

    def before_ui():
        rt = get_runtime()
        try:
            from modules import extra_networks, scripts

            from . import extra_network

            extra_network.register(extra_networks)
            added = xyz.register(scripts.scripts_data, rt.lora_names, rt.check_lora)
            if added:
                rt.print(f"{LOG_PREFIX} added {added} X/Y/Z plot axes")
        except Exception:
            traceback.print_exc()

    def ui_settings():
        from modules import shared

        import gradio as gr

        settings_mod.register(shared, gr)

    def model_loaded(sd_model):
        get_runtime().forget_model(sd_model)

    script_callbacks.on_before_ui(before_ui)
    script_callbacks.on_ui_settings(ui_settings)
    script_callbacks.on_model_loaded(model_loaded)

    from ..app import rest, tab

    def ui_tabs():
        return [(tab.build_tab(get_runtime().context()), TITLE, "nplora_tab")]

    def app_started(demo, app):
        get_api_args().app_started(app)  # the host's API has its default script arguments by now
        if not host_auth.current().serves_api:  # the host's own rule: no API without --api/--nowebui
            get_runtime().print(f"{LOG_PREFIX} REST API not added: the WebUI runs without --api")
            return
        rest.register(app, get_runtime().context())

    script_callbacks.on_ui_tabs(ui_tabs)
    script_callbacks.on_app_started(app_started)

