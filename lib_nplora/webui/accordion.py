"""The NP-LoRA accordion on the txt2img and img2img tabs.

One code path for gradio 3.41 (A1111, reForge) and gradio 4.40 (Forge): keyword arguments only,
``gr.update(...)`` for updates, no ``_js``/``js``, no ``.style()``, defaults inside every
slider's range. The enable toggle is the WebUI's ``InputAccordion`` (a checkbox in the header).

The components' values reach the Script hooks positionally, in ``ARG_NAMES`` order; the REST API
of the WebUI passes them the same way (``"alwayson_scripts": {"np-lora": {"args": [...]}}``).

Each LoRA dropdown has a hidden text box (``TEXT_OF``) that carries the same name or set as text,
for the HTTP API's ``infotext`` paste (A1111 1.10 / Forge ``Api.apply_infotext``): it skips a
script field whose component's value is None, and converts the rest with the type of that value,
so a dropdown that starts empty (as gradio 4's browser UI needs) is never pasted, while a text
box that starts at "" is. In the browser each text follows its dropdown (a ``change`` event), and
the job takes the dropdown's value when it has one, else the text (``UiValues.lora``): a choice
made after a paste wins, and a request's own arguments win over its pasted infotext.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field, make_dataclass

from ..params import K_CHOICES, K_FULL, MU_MAX, WEIGHT_RANGE, FuseParams, parse_k, ui_rows, UI_PARAMS  # noqa: F401
from ..app import block_sliders
from ..app.request import INFOTEXT

#: the hidden text box of each LoRA dropdown (argument name of the dropdown -> of its text)
TEXT_OF = {p.name: p.name + "_text" for p in UI_PARAMS if p.kind == "lora"}
#: the texts were appended after this row of the table; table rows added later follow them
_TEXTS_AFTER = "chain"
_TABLE_ARGS = tuple(p.name for p in UI_PARAMS)
_CUT = _TABLE_ARGS.index(_TEXTS_AFTER) + 1
#: the order of the Script's arguments (ui() return order): the on/off toggle, then the table's
#: fields that have a widget (``params.UI_PARAMS``, append-only), the LoRA texts after ``chain``
ARG_NAMES = ("enabled",) + _TABLE_ARGS[:_CUT] + tuple(TEXT_OF.values()) + _TABLE_ARGS[_CUT:]

REFRESH_SYMBOL = "\U0001f504"  # 🔄, as the WebUIs' own refresh buttons


def _from_args(cls, args):
    """From the Script's positional arguments (missing trailing ones keep their defaults)."""
    return cls(**{name: value for name, value in zip(ARG_NAMES, args) if value is not None})


def _to_args(self) -> list:
    return [getattr(self, name) for name in ARG_NAMES]


def _lora(self, name: str):
    """A LoRA field's value: the dropdown's when it has one, else its hidden text's (the API's
    infotext paste fills only the text); None when neither has one."""
    return getattr(self, name) or getattr(self, TEXT_OF[name]) or None


def _params(self) -> dict:
    """The ``FuseParams`` fields among the values (for ``FuseParams.from_values``)."""
    return {p.name: getattr(self, p.name) for p in UI_PARAMS if p.is_param}


#: The accordion's values for one job, in ``ARG_NAMES`` order (a frozen dataclass: ``enabled``,
#: then one field per widget, defaulting to the widget's value for the library defaults).
UiValues = make_dataclass(
    "UiValues",
    [("enabled", bool, field(default=False))]
    + [(p.name, object, field(default=None if not p.is_param else p.ui_value(p.default))) for p in UI_PARAMS]
    + [(text, object, field(default="")) for text in TEXT_OF.values()],
    frozen=True,
    namespace={"from_args": classmethod(_from_args), "to_args": _to_args, "params": _params, "lora": _lora,
               "__doc__": "The accordion's values for one job, in ``ARG_NAMES`` order."},
)
UiValues.__module__ = __name__


class Accordion:
    """The built components (by argument name, also as attributes); ``inputs`` is what
    ``Script.ui`` returns."""

    def __init__(self, components: dict, refresh, on_refresh: Callable[[], tuple] | None = None):
        self.components = components
        self.refresh = refresh
        self.on_refresh = on_refresh  # the refresh button's handler

    def __getattr__(self, name):
        components = self.__dict__.get("components") or {}
        if name in components:
            return components[name]
        raise AttributeError(name)

    @property
    def inputs(self) -> list:
        return [self.components[name] for name in ARG_NAMES]

    def infotext_fields(self, gr) -> list[tuple]:
        """(component, label or callable(params)) pairs: PNG Info -> Send to txt2img restores the
        accordion; an image without NP-LoRA turns it off.

        For an image with NP-LoRA, a field its text leaves out gets its default (k: full rank; a
        flag: off). The LoRA dropdowns get ``gr.update(value=...)`` (the browser's paste converts a
        plain value with the type of the component's value, None for them) and their hidden texts
        the plain text (what the HTTP API's paste takes: it skips the None-valued dropdowns and
        cannot read gradio 4's ``gr.update``); every other field gets plain values."""

        def has(d) -> bool:
            return d.get(INFOTEXT["enabled"]) == "True" and INFOTEXT["content"] in d

        def getter(p, dropdown: bool):
            absent = None if not p.is_param else p.text(p.default)

            def get(d):
                if not has(d):
                    return None
                text = d.get(p.infotext, absent)
                if text is None:
                    return None
                if p.kind == "flag":
                    return text == "True"
                return gr.update(value=text) if dropdown else text
            return get

        getters = {"enabled": has}
        for p in UI_PARAMS:
            getters[p.name] = getter(p, p.kind == "lora")
            if p.name in TEXT_OF:
                getters[TEXT_OF[p.name]] = getter(p, False)
        return [(self.components[name], getters[name]) for name in ARG_NAMES]

    @staticmethod
    def paste_field_names() -> list[str]:
        return [INFOTEXT["enabled"]] + [p.infotext for p in UI_PARAMS]


def follow(value) -> str:
    """A LoRA dropdown's value as its hidden text holds it (the dropdown's ``change`` event)."""
    return "" if value is None else str(value)


def build(gr, ui_components, elem_id: Callable[[str], str], choices: Callable[[], list[str]],
          refresh: Callable[[], None], defaults: FuseParams, archs=None) -> Accordion:
    """Create the accordion inside the current gradio layout: one form row per table row
    (``params.ui_rows``), the refresh button after the LoRA dropdowns.

    Args:
        gr: the gradio module.
        ui_components: the WebUI's ``modules.ui_components`` (``InputAccordion``, ``FormRow``,
            ``ToolButton``).
        elem_id: the Script's ``elem_id`` (unique per tab).
        choices: LoRA names for the dropdowns (those fitting the loaded model).
        refresh: rescan the host's LoRA list.
        defaults: starting values (settings: mu, k, scope).
        archs: the architectures the host runs: the per-block sliders are their groups (None: all).
    """
    names = choices()
    components: dict = {}
    refresh_button = None
    with ui_components.InputAccordion(False, label="NP-LoRA", elem_id=elem_id("enabled")) as enabled:
        components["enabled"] = enabled
        for row in ui_rows():
            with ui_components.FormRow():
                for p in row:
                    kind, kw = p.widget(defaults)
                    if p.kind == "lora":
                        kw["choices"] = list(names)
                    components[p.name] = getattr(gr, kind)(elem_id=elem_id(p.name), **kw)
                if refresh_button is None and any(p.kind == "lora" for p in row):
                    refresh_button = ui_components.ToolButton(value=REFRESH_SYMBOL, elem_id=elem_id("refresh"))
            for p in row:
                if p.kind == "blocks":  # a row of sliders that edit the per-block mu text (not arguments)
                    block_sliders.build(gr, components[p.name], elem_id, archs)
        for name, text_name in TEXT_OF.items():  # hidden (see the module's docstring)
            text = components[text_name] = gr.Textbox(value="", visible=False, elem_id=elem_id(text_name))
            text.do_not_save_to_config = True  # not in the WebUI's ui-config.json: it follows the dropdown
            components[name].change(fn=follow, inputs=[components[name]], outputs=[text], show_progress="hidden",
                                    queue=False, api_name=False)
    lora_dropdowns = [components[p.name] for p in UI_PARAMS if p.kind == "lora"]

    def on_refresh():
        refresh()
        new = choices()
        return tuple(gr.update(choices=new) for _ in lora_dropdowns)

    refresh_button.click(fn=on_refresh, inputs=[], outputs=lora_dropdowns)
    return Accordion(components, refresh_button, on_refresh)
