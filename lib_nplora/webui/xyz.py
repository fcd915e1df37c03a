"""NP-LoRA axes for the stock X/Y/Z plot script (the same ``scripts/xyz_grid.py`` on every host).

Each axis value is stored on the cell's processing object (``p.nplora_mu`` ...); the generation
hook reads those over the accordion's and the prompt tag's values, and an NP-LoRA axis turns
NP-LoRA on for the plot even with the accordion closed (content and style then come from the
accordion or from the axes). Every cell is its own job: a mu sweep fuses once per cell from the
cached inputs and style bases (only the cheap projection runs again).

The xyz module is loaded by the WebUI as a script file (module name ``xyz_grid.py``), not an
importable module: it is found in ``scripts.scripts_data``. Its ``ui()`` copies ``axis_options``,
so the axes are added in ``on_before_ui``; "Reload UI" re-runs that, and axes already present
(by label) are not added twice. They are appended, never inserted: the axis dropdowns store
indices.
"""

from __future__ import annotations

from collections.abc import Callable

from ..params import FuseParams
from .accordion import K_CHOICES, parse_k
from ..app.index import check_name

LABEL_PREFIX = "[NP-LoRA] "
XYZ_MODULE_NAMES = ("xyz_grid.py", "scripts.xyz_grid", "xyz_grid")

#: processing attribute set by each axis -> FuseParams field (None: a LoRA name)
OVERRIDES = {
    "nplora_mu": "mu", "nplora_k": "k", "nplora_method": "method",
    "nplora_content_weight": "content_weight", "nplora_style_weight": "style_weight",
    "nplora_content": None, "nplora_style": None,
}


def find_xyz_module(scripts_data):
    """The loaded X/Y/Z plot script's module, or None (disabled, or renamed by a fork)."""
    for data in scripts_data or ():
        cls = getattr(data, "script_class", None)
        if getattr(cls, "__module__", None) in XYZ_MODULE_NAMES:
            return getattr(data, "module", None)
    return None


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


def _confirm_params(field: str, convert: Callable):
    def confirm(p, xs):
        for x in xs:
            FuseParams(**{field: convert(x)})
    return confirm


def _confirm_names(check: Callable[[str, str], object], what: str):
    def confirm(p, xs):
        for x in xs:
            check(check_name(x, f"{what} LoRA name"), what)
    return confirm


def axis_specs(names: Callable[[], list[str]], check: Callable[[str, str], object]) -> list[dict]:
    """The axes as keyword arguments of ``AxisOption`` (label, type, apply, confirm, choices).

    Args:
        names: LoRA names for the content/style axes' lists (those fitting the loaded model).
        check: ``check(name, "content"|"style")`` raises a clear error for a LoRA that is not
            there or does not fit the loaded model; run for every value when the plot starts.
    """
    return [
        dict(label=LABEL_PREFIX + "mu", type=float, apply=_setter("nplora_mu", float),
             confirm=_confirm_params("mu", float)),
        dict(label=LABEL_PREFIX + "rank k", type=str, apply=_setter("nplora_k", _k_value),
             confirm=_confirm_params("k", parse_k), choices=lambda: list(K_CHOICES)),
        dict(label=LABEL_PREFIX + "content LoRA", type=str, apply=_setter("nplora_content", str),
             confirm=_confirm_names(check, "content"), choices=names),
        dict(label=LABEL_PREFIX + "style LoRA", type=str, apply=_setter("nplora_style", str),
             confirm=_confirm_names(check, "style"), choices=names),
        dict(label=LABEL_PREFIX + "method", type=str, apply=_setter("nplora_method", str),
             confirm=_confirm_params("method", str), choices=lambda: ["nplora", "direct"]),
        dict(label=LABEL_PREFIX + "content weight", type=float, apply=_setter("nplora_content_weight", float),
             confirm=_confirm_params("content_weight", float)),
        dict(label=LABEL_PREFIX + "style weight", type=float, apply=_setter("nplora_style_weight", float),
             confirm=_confirm_params("style_weight", float)),
    ]


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
    """Axis values -> ``FuseParams.with_`` keyword arguments (a k axis also clears ``energy``)."""
    changes = {OVERRIDES[a]: v for a, v in overrides_.items() if OVERRIDES[a] is not None}
    if "k" in changes:
        changes["k"] = None if changes["k"] == FULL_RANK else changes["k"]
        changes["energy"] = None
    return changes
