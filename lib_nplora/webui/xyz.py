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
"""

from __future__ import annotations

from collections.abc import Callable

from ..params import BOOL_WORDS, FuseParams, Param, axis_params, changes, parse_k
from ..app.index import check_name

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


def _confirm_names(check: Callable[[str, str], object], what: str):
    def confirm(p, xs):
        for x in xs:
            check(check_name(x, f"{what} LoRA name"), what)
    return confirm


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
    return [axis_spec(p, names, check) for p in axis_params()]


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
