"""The nodes' inputs, built from the one parameter table (``lib_nplora.params.PARAMS``), and the
inverse: a node's keyword arguments -> ``FusionRequest``.

ComfyUI input types by the field's kind (never by its name): "lora" -> the LoRA list (a COMBO),
"number" -> FLOAT over the widget's range, "flag" -> BOOLEAN, "choice" -> COMBO, "rank" -> INT with
0 = the style's full rank, "blocks" (per-block mu, ``"IN:0.2,OUT:hard"``) -> STRING. Fields without a widget (``energy``) are left out, as in the tab.
"""

from __future__ import annotations

from ..app.request import FusionRequest
from ..params import MAX_K, UI_PARAMS, FuseParams, Param, parse_k

SOURCE = "comfyui"


def input_type(p: Param, loras: list[str], defaults: FuseParams | None = None) -> tuple:
    """One entry of ``INPUT_TYPES()["required"]`` for the table row ``p``."""
    value = None if p.kind == "lora" else getattr(defaults or FuseParams(), p.name)
    tip = {"tooltip": p.doc}
    if p.kind == "lora":
        return (list(loras), tip)
    if p.kind == "number":
        lo, hi = p.ui_range
        return ("FLOAT", dict(tip, default=float(value), min=min(lo, float(value)), max=max(hi, float(value)),
                              step=p.step))
    if p.kind == "flag":
        return ("BOOLEAN", dict(tip, default=bool(value)))
    if p.kind == "choice":
        return (list(p.choices), dict(tip, default=value))
    if p.kind == "blocks":
        return ("STRING", dict(tip, default=value or "", multiline=False))
    return ("INT", dict(tip, default=0 if value is None else int(value), min=0, max=MAX_K,
                        tooltip=p.doc + "; 0 = full"))


#: The rows the nodes had when they were first released: required inputs. Every later row of the
#: table (per-block mu, chain, ...) is an *optional* input with the table's default, so a workflow
#: saved before that row existed still validates and fuses as it did.
FIRST_ROWS = ("content", "style", "content_weight", "style_weight", "mu", "hard", "k", "scope", "method")


def params_inputs(loras: list[str], which=None, *, later: bool = False) -> dict[str, tuple]:
    """``{name: input type}`` for the table's widget rows in table order (``which``: a filter):
    the ``FIRST_ROWS`` (``later`` False) or every other row (``later`` True)."""
    return {p.name: input_type(p, loras) for p in UI_PARAMS
            if (which is None or which(p)) and (p.name not in FIRST_ROWS) == later}


def request_of(values: dict) -> FusionRequest:
    """The request a node's keyword arguments ask for (extra keys are the node's own).

    Raises:
        ParameterError: a value out of range (names the parameter).
    """
    loose = {}
    for p in UI_PARAMS:
        if p.is_param and p.name in values:
            v = values[p.name]
            loose[p.name] = (parse_k(v) or "full") if p.kind == "rank" else v
    return FusionRequest(values["content"], values["style"], FuseParams.from_values(**loose), source=SOURCE)
