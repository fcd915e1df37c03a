"""The nodes' inputs, built from the one parameter table (``lib_nplora.params.PARAMS``), and the
inverse: a node's keyword arguments -> ``FusionRequest``.

ComfyUI input types by the field's kind (never by its name): "lora" -> the LoRA list (a COMBO),
"number" -> FLOAT over the widget's range, "flag" -> BOOLEAN, "choice" -> COMBO, "rank" -> INT with
0 = the style's full rank, "blocks" (per-block mu, ``"IN:0.2,OUT:hard"``) -> STRING. Fields without a widget (``energy``) are left out, as in the tab.
"""

from __future__ import annotations

from ..app.request import MAX_SET, FusionRequest
from ..errors import ParameterError
from ..params import MAX_K, UI_PARAMS, FuseParams, Param, parse_k

SOURCE = "comfyui"

#: ComfyUI type of an NP-LoRA Set node's output: a tuple of (LoRA list name, own weight), in chain order
SET_TYPE = "NPLORA_SET"
#: the optional inputs of the Loader / Save / Analyze that take a set, and the picker each replaces
SET_INPUTS = {"contents": "content", "styles": "style"}


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


def set_inputs() -> dict[str, tuple]:
    """The optional ``contents`` / ``styles`` inputs (an NP-LoRA Set chain each)."""
    return {name: (SET_TYPE, {"tooltip": f"NP-LoRA Set chain: several {side} LoRAs, each with its own weight "
                                         f"(times {side}_weight). When connected, it replaces the {side} picker."})
            for name, side in SET_INPUTS.items()}


def set_refs(value, what: str) -> tuple[tuple[str, float], ...]:
    """An NP-LoRA Set value (as a link passes it, or as a prompt's JSON gives it: a list of
    [name, weight]) -> ((name, weight), ...): its shape only, bounded by ``MAX_SET`` before any
    entry is looked at; the names' and weights' checks are ``FusionRequest.of_sets``'s.

    Raises:
        ParameterError: not a list of (name, weight), empty, or more than ``MAX_SET`` entries.
    """
    if not isinstance(value, (list, tuple)) or not value:
        raise ParameterError(f"the {what} set must be a non-empty list of (LoRA name, weight)",
                             hint="Connect an NP-LoRA Set node")
    if len(value) > MAX_SET:
        raise ParameterError(f"at most {MAX_SET} LoRAs a side, got {len(value)} {what} LoRAs")
    out = []
    for item in value:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str) \
                or isinstance(item[1], bool) or not isinstance(item[1], (int, float)):
            raise ParameterError(f"each entry of the {what} set must be (LoRA name, weight), got {str(item)[:60]}",
                                 hint="Connect an NP-LoRA Set node")
        out.append((item[0], float(item[1])))
    return tuple(out)


def request_of(values: dict) -> FusionRequest:
    """The request a node's keyword arguments ask for (extra keys are the node's own).

    A connected ``contents`` / ``styles`` set replaces that side's picker (``content`` /
    ``style``); without either, the request is the pickers' pair, as before sets existed.

    Raises:
        ParameterError: a value out of range (names the parameter), a bad set.
        LoraNameError: a set's name that is empty or has control characters.
    """
    loose = {}
    for p in UI_PARAMS:
        if p.is_param and p.name in values:
            v = values[p.name]
            loose[p.name] = (parse_k(v) or "full") if p.kind == "rank" else v
    params = FuseParams.from_values(**loose)
    sets = {side: values.get(name) for name, side in SET_INPUTS.items()}
    if all(v is None for v in sets.values()):
        return FusionRequest(values["content"], values["style"], params, source=SOURCE)
    sides = [set_refs(sets[side], side) if sets[side] is not None else ((values[side], 1.0),)
             for side in ("content", "style")]
    return FusionRequest.of_sets(sides[0], sides[1], params, SOURCE, folders=True)
