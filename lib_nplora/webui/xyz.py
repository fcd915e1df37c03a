"""NP-LoRA axes for the X/Y/Z plot script (stock ``scripts/xyz_grid.py``, or Forge Classic's ``xyz`` extension).

Each axis value is stored on the cell's processing object (``p.nplora_mu`` ...); the generation
hook reads those over the accordion's and the prompt tag's values, and an NP-LoRA axis turns
NP-LoRA on for the plot even with the accordion closed (content and style then come from the
accordion or from the axes). Every cell is its own job: a mu sweep fuses once per cell from the
cached inputs and style bases (only the cheap projection runs again).

The xyz module is loaded by the WebUI as a script file (module name ``xyz_grid.py``), not an
importable module: it is found in ``scripts.scripts_data`` by what it holds (Forge Classic keeps
it in an extension with a ``lib_xyz`` package). Its ``ui()`` copies ``axis_options``,
so the axes are added in ``on_before_ui``; "Reload UI" re-runs that, and axes already present
(by label) are not added twice. They are appended, never inserted: the axis dropdowns store
indices.

The content and style axes take LoRA sets (``dog + hat*0.5``, ``app.request.parse_set``), and the
LoRA-set axis (``[NP-LoRA] LoRA set``) sweeps both at once: each value is ``CONTENTS | STYLES``
(``dog | ink``, ``dog + hat*0.5 | ink + oil``), stored as the content and style axes store theirs.
The mu axis keeps sweeping the global mu (per-block mu stays the accordion's or the tag's).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ParameterError
from ..params import BOOL_WORDS, FuseParams, Param, axis_params, changes, parse_k
from ..app.request import parse_set, set_text

LABEL_PREFIX = "[NP-LoRA] "
XYZ_MODULE_NAMES = ("xyz_grid.py", "scripts.xyz_grid", "xyz_grid")
ATTR_PREFIX = "nplora_"

#: processing attribute set by each axis -> FuseParams field (None: a LoRA name); the axes are
#: the table's (``params.axis_params``)
OVERRIDES = {ATTR_PREFIX + p.name: (p.name if p.is_param else None) for p in axis_params()}


def is_xyz_module(module) -> bool:
    """What the X/Y/Z plot script is, whatever its file: a module with an ``AxisOption`` class and
    an ``axis_options`` list of axes (each with a ``label`` and an ``apply``)."""
    options = getattr(module, "axis_options", None)
    if not callable(getattr(module, "AxisOption", None)) or not isinstance(options, list) or not options:
        return False
    return all(hasattr(o, "label") and callable(getattr(o, "apply", None)) for o in options[:8])


def find_xyz_module(scripts_data):
    """The loaded X/Y/Z plot script's module, or None (disabled, or not there).

    Found by what it is (``is_xyz_module``), not by its file: A1111, Forge and Forge Neo load
    ``scripts/xyz_grid.py``; Forge Classic moved it into ``extensions-builtin/xyz`` with its
    ``lib_xyz`` package (``AxisOption`` from ``lib_xyz.classes``, ``axis_options`` from
    ``lib_xyz.builtins``, both module attributes of its script). Among several candidates the one
    loaded under the stock script's name is taken.
    """
    found = []
    for data in scripts_data or ():
        module = getattr(data, "module", None)
        if module is not None and is_xyz_module(module) and all(module is not m for m in found):
            found.append(module)
    for data in scripts_data or ():
        cls = getattr(data, "script_class", None)
        if getattr(cls, "__module__", None) in XYZ_MODULE_NAMES and getattr(data, "module", None) in found:
            return data.module
    return found[0] if found else None


def _setter(attr: str, convert: Callable):
    def apply(p, x, xs):
        setattr(p, attr, convert(x))
    return apply


#: what the rank-k axis stores for "full" (None would mean "no axis value": the tag's or the
#: accordion's k would stay)
FULL_RANK = "full"


def _k_value(x):
    """Axis value -> k (``FULL_RANK`` for full rank); validated when the plot starts."""
    k = parse_k(x)
    return FULL_RANK if k is None else k


def _confirm_params(name: str):
    def confirm(p, xs):
        for x in xs:
            FuseParams.from_values(None, **{name: x})
    return confirm


def _check_set(check: Callable[[str, str], object], text: str, what: str) -> str:
    """A LoRA set's canonical text, every name checked (``check(name, what)``)."""
    refs = parse_set(str(text), f"{what} LoRA name")
    for name, _ in refs:
        check(name, what)
    return set_text(refs)


def _confirm_names(check: Callable[[str, str], object], what: str):
    def confirm(p, xs):
        for x in xs:
            _check_set(check, x, what)
    return confirm


LORA_SET_LABEL = LABEL_PREFIX + "LoRA set (contents | styles)"
SET_SEPARATOR = "|"


def split_lora_set(x) -> tuple[str, str]:
    """A LoRA-set axis value ``"dog + hat*0.5 | ink"`` -> (content set text, style set text).

    Raises:
        ParameterError: not exactly one '|', or a side that is not a LoRA set.
    """
    parts = str(x).split(SET_SEPARATOR)
    if len(parts) != 2:
        raise ParameterError(f"the LoRA-set axis value {str(x)[:60]!r} needs CONTENTS | STYLES",
                             hint="Write e.g. dog + hat*0.5 | ink")
    return (set_text(parse_set(parts[0], "content LoRA name")), set_text(parse_set(parts[1], "style LoRA name")))


def lora_set_spec(check: Callable[[str, str], object]) -> dict:
    """The LoRA-set axis as ``AxisOption`` keyword arguments: it sets the content and the style
    axes' attributes together."""
    def apply(p, x, xs):
        content, style = split_lora_set(x)
        setattr(p, ATTR_PREFIX + "content", content)
        setattr(p, ATTR_PREFIX + "style", style)

    def confirm(p, xs):
        for x in xs:
            content, style = split_lora_set(x)
            _check_set(check, content, "content")
            _check_set(check, style, "style")
    return dict(label=LORA_SET_LABEL, type=str, apply=apply, confirm=confirm)


def _flag_value(x) -> bool:
    text = str(x).strip().lower()
    return BOOL_WORDS.get(text, bool(x))


def axis_spec(param: Param, names: Callable[[], list[str]], check: Callable[[str, str], object]) -> dict:
    """One table row's axis as keyword arguments of ``AxisOption`` (by the row's kind)."""
    attr = ATTR_PREFIX + param.name
    spec = dict(label=LABEL_PREFIX + param.axis)
    if param.kind == "lora":
        return dict(spec, type=str, apply=_setter(attr, str), confirm=_confirm_names(check, param.name), choices=names)
    if param.kind == "number":
        return dict(spec, type=float, apply=_setter(attr, float), confirm=_confirm_params(param.name))
    choices = list(param.choices) if param.kind != "flag" else ["true", "false"]
    convert = {"rank": _k_value, "choice": str, "flag": _flag_value}[param.kind]
    return dict(spec, type=str, apply=_setter(attr, convert), confirm=_confirm_params(param.name),
                choices=lambda: list(choices))


def axis_specs(names: Callable[[], list[str]], check: Callable[[str, str], object]) -> list[dict]:
    """The axes as keyword arguments of ``AxisOption`` (label, type, apply, confirm, choices).

    Args:
        names: LoRA names for the content/style axes' lists (those fitting the loaded model).
        check: ``check(name, "content"|"style")`` raises a clear error for a LoRA that is not
            there or does not fit the loaded model; run for every value when the plot starts.
    """
    return [axis_spec(p, names, check) for p in axis_params()] + [lora_set_spec(check)]


def register(scripts_data, names: Callable[[], list[str]], check: Callable[[str, str], object]) -> int:
    """Append the NP-LoRA axes to the X/Y/Z plot script; returns how many were added."""
    xyz = find_xyz_module(scripts_data)
    if xyz is None:
        return 0
    present = {getattr(o, "label", None) for o in xyz.axis_options}
    added = 0
    for spec in axis_specs(names, check):
        if spec["label"] in present:
            continue
        xyz.axis_options.append(xyz.AxisOption(**spec))
        added += 1
    return added


def overrides(p) -> dict:
    """The NP-LoRA axis values set on a processing object (attribute -> value; a rank-k axis'
    "full" is ``FULL_RANK``)."""
    return {attr: getattr(p, attr) for attr in OVERRIDES if getattr(p, attr, None) is not None}


def param_changes(overrides_: dict) -> dict:
    """Axis values -> ``FuseParams.with_`` keyword arguments (``params.changes``: a k axis also
    clears ``energy``; its "full" is full rank)."""
    return changes(**{OVERRIDES[a]: v for a, v in overrides_.items() if OVERRIDES[a] is not None})
