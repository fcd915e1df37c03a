"""The NP-LoRA accordion on the txt2img and img2img tabs.

One code path for gradio 3.41 (A1111, reForge) and gradio 4.40 (Forge): keyword arguments only,
``gr.update(...)`` for updates, no ``_js``/``js``, no ``.style()``, defaults inside every
slider's range. The enable toggle is the WebUI's ``InputAccordion`` (a checkbox in the header).

The components' values reach the Script hooks positionally, in ``ARG_NAMES`` order; the REST API
of the WebUI passes them the same way (``"alwayson_scripts": {"np-lora": {"args": [...]}}``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from ..errors import ParameterError
from ..params import K_CHOICES, K_FULL, MU_MAX, WEIGHT_RANGE, FuseParams, parse_k  # noqa: F401
from ..app.request import INFOTEXT

#: the order of the Script's arguments (ui() return order)
ARG_NAMES = ("enabled", "content", "style", "content_weight", "style_weight", "mu", "hard", "k",
             "scope", "method")

REFRESH_SYMBOL = "\U0001f504"  # 🔄, as the WebUIs' own refresh buttons


@dataclass(frozen=True)
class UiValues:
    """The accordion's values for one job, in ``ARG_NAMES`` order."""

    enabled: bool = False
    content: str | None = None
    style: str | None = None
    content_weight: float = 1.0
    style_weight: float = 1.0
    mu: float = 0.5
    hard: bool = False
    k: object = K_FULL
    scope: str = "unet"
    method: str = "nplora"

    @classmethod
    def from_args(cls, args) -> "UiValues":
        """From the Script's positional arguments (missing trailing ones keep their defaults)."""
        kw = {}
        for f, value in zip(fields(cls), args):
            if value is not None:
                kw[f.name] = value
        return cls(**kw)

    def to_args(self) -> list:
        return [getattr(self, name) for name in ARG_NAMES]


@dataclass
class Accordion:
    """The built components; ``inputs`` is what ``Script.ui`` returns."""

    enabled: object
    content: object
    style: object
    content_weight: object
    style_weight: object
    mu: object
    hard: object
    k: object
    scope: object
    method: object
    refresh: object
    on_refresh: Callable[[], tuple] | None = None  # the refresh button's handler

    @property
    def inputs(self) -> list:
        return [getattr(self, name) for name in ARG_NAMES]

    def infotext_fields(self, gr) -> list[tuple]:
        """(component, label or callable(params)) pairs: PNG Info -> Send to txt2img restores the
        accordion; an image without NP-LoRA turns it off.

        The dropdowns get ``gr.update(value=...)`` (the WebUI converts a plain value with the type
        of the component's current value, which is None for an empty dropdown)."""
        it = INFOTEXT

        def has(d) -> bool:
            return d.get(it["enabled"]) == "True" and it["content"] in d

        def text(label, default=None):
            def get(d):
                if not has(d):
                    return None
                value = d.get(label, default)
                return None if value is None else gr.update(value=value)
            return get

        return [
            (self.enabled, has),
            (self.content, text(it["content"])),
            (self.style, text(it["style"])),
            (self.content_weight, it["content_weight"]),
            (self.style_weight, it["style_weight"]),
            (self.mu, it["mu"]),
            (self.hard, lambda d: d.get(it["hard"]) == "True" if has(d) else None),
            (self.k, text(it["k"], K_FULL)),
            (self.scope, it["scope"]),
            (self.method, it["method"]),
        ]

    @staticmethod
    def paste_field_names() -> list[str]:
        it = INFOTEXT
        return [it[k] for k in ("enabled", "content", "style", "content_weight", "style_weight", "mu",
                                "hard", "k", "scope", "method")]


def build(gr, ui_components, elem_id: Callable[[str], str], choices: Callable[[], list[str]],
          refresh: Callable[[], None], defaults: FuseParams) -> Accordion:
    """Create the accordion inside the current gradio layout.

    Args:
        gr: the gradio module.
        ui_components: the WebUI's ``modules.ui_components`` (``InputAccordion``, ``FormRow``,
            ``ToolButton``).
        elem_id: the Script's ``elem_id`` (unique per tab).
        choices: LoRA names for the dropdowns (those fitting the loaded model).
        refresh: rescan the host's LoRA list.
        defaults: starting values for mu and k (settings).
    """
    mu_max = max(MU_MAX, float(defaults.mu))
    k_value = str(defaults.k) if defaults.k is not None else K_FULL
    k_choices = list(K_CHOICES) + ([k_value] if k_value not in K_CHOICES else [])
    names = choices()
    with ui_components.InputAccordion(False, label="NP-LoRA", elem_id=elem_id("enabled")) as enabled:
        with ui_components.FormRow():
            content = gr.Dropdown(label="Content LoRA (subject)", choices=names, value=None,
                                  allow_custom_value=True, elem_id=elem_id("content"))
            style = gr.Dropdown(label="Style LoRA", choices=names, value=None,
                                allow_custom_value=True, elem_id=elem_id("style"))
            refresh_button = ui_components.ToolButton(value=REFRESH_SYMBOL, elem_id=elem_id("refresh"))
        with ui_components.FormRow():
            content_weight = gr.Slider(label="Content weight", minimum=WEIGHT_RANGE[0], maximum=WEIGHT_RANGE[1],
                                       step=0.05, value=1.0, elem_id=elem_id("content_weight"))
            style_weight = gr.Slider(label="Style weight", minimum=WEIGHT_RANGE[0], maximum=WEIGHT_RANGE[1],
                                     step=0.05, value=1.0, elem_id=elem_id("style_weight"))
        with ui_components.FormRow():
            mu = gr.Slider(label="mu: soft projection (0 = plain merge, 0.5 = paper)", minimum=0.0,
                           maximum=mu_max, step=0.05, value=float(defaults.mu), elem_id=elem_id("mu"))
            hard = gr.Checkbox(label="Hard projection (NP-LoRA-H)", value=False, elem_id=elem_id("hard"))
        with ui_components.FormRow():
            k = gr.Dropdown(label="Style directions k (full = the style's rank)", choices=k_choices,
                            value=k_value, allow_custom_value=True, elem_id=elem_id("k"))
            scope = gr.Radio(label="Project (text encoders are merged directly with 'unet')",
                             choices=["unet", "all"], value=defaults.scope, elem_id=elem_id("scope"))
            method = gr.Radio(label="Method", choices=["nplora", "direct"], value="nplora",
                              elem_id=elem_id("method"))

    def on_refresh():
        refresh()
        new = choices()
        return gr.update(choices=new), gr.update(choices=new)

    refresh_button.click(fn=on_refresh, inputs=[], outputs=[content, style])
    return Accordion(enabled, content, style, content_weight, style_weight, mu, hard, k, scope, method,
                     refresh_button, on_refresh)
