"""Fusion parameters: one typed, validated object shared by the CLI, the WebUI tab, the prompt
tag, X/Y/Z axes, the REST API and the saved file's metadata.

Formula (per module, right multiplication on the input space)::

    dW = ws * dW_s + wc * dW_c (I - c * V_k V_k^T),   c = mu / (1 + mu)

``method="direct"`` is the paper's baseline (c = 0); ``hard=True`` is NP-LoRA-H (c = 1).

``PARAMS`` (below ``FuseParams``) is the one table of a request's fields: the two LoRA names and
every ``FuseParams`` field, each with its prompt-tag key, infotext label, widget, X/Y/Z axis, REST
and CLI description. Every surface is derived from it by the field's *kind*, never by its name:
``app/request.py`` (tag, infotext), ``webui/accordion.py`` and ``app/tab.py`` (widgets, paste-back),
``webui/xyz.py`` (axes), ``app/rest.py`` (the pydantic body), ``cli.py`` (argparse options), and
``FuseParams.from_values`` (loose values -> parameters). A new parameter is a ``FuseParams``
field (its default and validation), its math, and one ``Param`` row; ``tests/webui/
test_webui_param_table.py`` checks every surface carries every row.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields, replace
from typing import Literal

from .errors import ParameterError

Method = Literal["nplora", "direct"]
Scope = Literal["unet", "all"]

DEFAULT_MU = 0.5  # the paper's default (c = 1/3)
MAX_MU = 1e6
MAX_WEIGHT = 100.0
MAX_K = 4096

K_FULL = "full"
K_CHOICES = (K_FULL, "1", "2", "4", "8", "16", "32", "64", "128")
MU_MAX = 10.0
WEIGHT_RANGE = (-2.0, 2.0)
#: how many per-block mu entries one request may hold (every fine group of SD1 is 25)
MAX_BLOCK_MU = 64
HARD_WORD = "hard"


def parse_k(value) -> int | None:
    """The k selector's value: "full" / "" / 0 / None -> None (full rank), else a whole number.

    Raises:
        ParameterError: anything else (names the value).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ParameterError(f"k must be 'full' or a whole number, got {value!r}")
    if isinstance(value, (int, float)):
        if value != value or (isinstance(value, float) and not value.is_integer()):
            raise ParameterError(f"k must be 'full' or a whole number, got {value!r}")
        return int(value) or None
    text = str(value).strip().lower()
    if text in ("", K_FULL, "0"):
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise ParameterError(f"k must be 'full' or a whole number, got {str(value)[:40]!r}")
    return int(text)


def _finite(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number, got {value!r}")
    return value


@dataclass(frozen=True, order=True)
class BlockMu:
    """mu (or hard projection) for one block group (``arch.blocks``), on top of the global mu.

    Attributes:
        group: a group name of ``arch.blocks`` (``IN``, ``OUT05``, ``SINGLE``), upper case.
        mu: soft projection strength there (ignored when ``hard``).
        hard: hard projection (c = 1) there.
    """

    group: str
    mu: float = 0.0
    hard: bool = False

    @property
    def c(self) -> float:
        return 1.0 if self.hard else self.mu / (1.0 + self.mu)

    def text(self) -> str:
        if self.hard:
            return f"{self.group}:{HARD_WORD}"
        short = f"{self.mu:g}"
        return f"{self.group}:{short if float(short) == self.mu else repr(self.mu)}"


def _group_name(text: str) -> str:
    name = text.strip().upper()
    if not name or len(name) > 12 or not name.isascii() or not name.isalnum():
        raise ParameterError(f"block mu: {text[:20]!r} is not a block group name",
                             hint="Use a group such as IN, MID, OUT, IN04, DOUBLE or SINGLE (see the README)")
    return name


def parse_block_mu(value) -> tuple[BlockMu, ...]:
    """Per-block mu from its text (``"IN:0.2,OUT:hard"``), from (group, mu-or-"hard") pairs, from a
    {group: mu-or-"hard"} mapping or from ``BlockMu`` values; sorted by group, each group once.

    Raises:
        ParameterError: a malformed entry, a mu out of range, a group given twice, too many.
    """
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        if len(value) > 16 * MAX_BLOCK_MU:
            raise ParameterError("block mu: too long")
        pairs = []
        for entry in value.split(","):
            if not entry.strip():
                continue
            group, sep, mu = entry.partition(":")
            if not sep:
                raise ParameterError(f"block mu: {entry.strip()[:30]!r} needs GROUP:MU",
                                     hint="Write e.g. IN:0.2,OUT:1.0 or MID:hard")
            pairs.append((group, mu))
    elif isinstance(value, dict):
        pairs = list(value.items())
    else:
        pairs = list(value)
    if len(pairs) > MAX_BLOCK_MU:
        raise ParameterError(f"block mu: at most {MAX_BLOCK_MU} groups, got {len(pairs)}")
    out: dict[str, BlockMu] = {}
    for item in pairs:
        if isinstance(item, BlockMu):
            group, mu, hard = _group_name(item.group), item.mu, item.hard
        else:
            group, mu = item
            group = _group_name(str(group))
            hard = isinstance(mu, str) and mu.strip().lower() == HARD_WORD
        if not hard:
            if isinstance(mu, bool):
                raise ParameterError(f"block mu: {group} must be a number or 'hard', got {mu!r}")
            mu = _finite(f"block mu {group}", mu.strip() if isinstance(mu, str) else mu)
            if mu < 0 or mu > MAX_MU:
                raise ParameterError(f"block mu: {group} must be between 0 and {MAX_MU:g}, got {mu:g}",
                                     hint=f"Write {group}:hard for hard projection")
        if group in out:
            raise ParameterError(f"block mu: {group} is given twice")
        out[group] = BlockMu(group, 0.0 if hard else float(mu), hard)
    return tuple(sorted(out.values()))


def block_mu_text(blocks: tuple[BlockMu, ...]) -> str:
    """The text ``parse_block_mu`` reads back: ``"IN:0.2,OUT:hard"`` ("" for none)."""
    return ",".join(b.text() for b in blocks)


@dataclass(frozen=True)
class FuseParams:
    """How to fuse a content and a style LoRA.

    Attributes:
        mu: soft-projection strength, mu >= 0; c = mu / (1 + mu). 0 = direct merge.
        hard: hard projection (c = 1, NP-LoRA-H); overrides mu.
        method: "nplora" (project) or "direct" (plain weighted sum, c = 0).
        k: number of style directions removed per module; None = the style update's full
            numerical rank (the paper's setting). Capped per module at that rank.
        energy: beyond the paper: keep the smallest k whose singular values hold this
            fraction of the style update's energy (sum of sigma^2); None = off.
        content_weight, style_weight: user multipliers (wc, ws), applied on top of alpha/rank.
        scope: "unet" projects only the denoiser's modules (text encoders added without
            projection); "all" projects text-encoder modules too.
        block_mu: mu or hard per block group (``arch.blocks``), on top of the global mu: a fine
            group's value wins over its coarse group's, which wins over ``mu`` / ``hard``.
            ``method="direct"`` ignores it. Held as canonical text (``"IN:0.2,OUT:hard"``, see
            ``parse_block_mu``, which also takes pairs or a mapping); ``blocks`` has the entries.
        chain: beyond the paper, with several content LoRAs: each content is also projected off
            the principal input directions of the contents before it (in the given order), so a
            later content cannot overwrite an earlier one's (see ``fusion.merge``).
    """

    mu: float = DEFAULT_MU
    hard: bool = False
    method: Method = "nplora"
    k: int | None = None
    energy: float | None = None
    content_weight: float = 1.0
    style_weight: float = 1.0
    scope: Scope = "unet"
    block_mu: str = ""
    chain: bool = False

    def __post_init__(self):
        mu = _finite("mu", self.mu)
        if mu < 0 or mu > MAX_MU:
            raise ParameterError(f"mu must be between 0 and {MAX_MU:g}, got {mu:g}",
                                 hint="Use hard projection for the limit mu = infinity")
        object.__setattr__(self, "mu", mu)
        if self.method not in ("nplora", "direct"):
            raise ParameterError(f"method must be 'nplora' or 'direct', got {self.method!r}")
        if self.scope not in ("unet", "all"):
            raise ParameterError(f"scope must be 'unet' or 'all', got {self.scope!r}")
        if not isinstance(self.hard, bool):
            raise ParameterError(f"hard must be true or false, got {self.hard!r}")
        if self.k is not None:
            if isinstance(self.k, bool) or not isinstance(self.k, int) and not (
                    isinstance(self.k, float) and self.k.is_integer()):
                raise ParameterError(f"k must be a whole number, got {self.k!r}")
            k = int(self.k)
            if k < 1 or k > MAX_K:
                raise ParameterError(f"k must be between 1 and {MAX_K}, got {k}",
                                     hint="Leave k empty for the style LoRA's full rank")
            object.__setattr__(self, "k", k)
        if self.energy is not None:
            energy = _finite("energy", self.energy)
            if not 0.0 < energy <= 1.0:
                raise ParameterError(f"energy must be in (0, 1], got {energy:g}")
            object.__setattr__(self, "energy", energy)
        if self.k is not None and self.energy is not None:
            raise ParameterError("give either k or energy, not both")
        blocks = parse_block_mu(self.block_mu)
        object.__setattr__(self, "block_mu", block_mu_text(blocks))  # canonical text: sorted, each group once
        object.__setattr__(self, "_blocks", {b.group: b for b in blocks})
        if not isinstance(self.chain, bool):
            raise ParameterError(f"chain must be true or false, got {self.chain!r}")
        for name in ("content_weight", "style_weight"):
            w = _finite(name, getattr(self, name))
            if abs(w) > MAX_WEIGHT:
                raise ParameterError(f"{name} must be between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}, got {w:g}")
            object.__setattr__(self, name, w)

    @property
    def c(self) -> float:
        """Suppression strength c in [0, 1] applied to the content inside the style subspace."""
        if self.method == "direct":
            return 0.0
        if self.hard:
            return 1.0
        return self.mu / (1.0 + self.mu)

    @property
    def blocks(self) -> tuple[BlockMu, ...]:
        """The ``block_mu`` entries, sorted by group."""
        return tuple(self._blocks.values())

    def c_of(self, coarse: str, fine: str | None = None) -> float:
        """Suppression strength in a block group (``arch.blocks.group_of``): the fine group's
        ``block_mu``, else the coarse group's, else ``c``."""
        if self.method == "direct" or not self.block_mu:
            return self.c
        by = self._blocks
        hit = by.get(fine) if fine is not None else None
        hit = hit or by.get(coarse)
        return hit.c if hit is not None else self.c

    @property
    def k_policy(self) -> str:
        if self.energy is not None:
            return f"energy {self.energy:g} (beyond the paper)"
        if self.k is not None:
            return f"explicit k={self.k} (beyond the paper)"
        return "full numerical rank (paper)"

    @classmethod
    def from_values(cls, defaults: "FuseParams | None" = None, **loose) -> "FuseParams":
        """Parameters from loose values (a widget's, an axis', a CLI option's, a JSON field's), the
        rest from ``defaults`` (the host's settings; None = the library's).

        A value of None means "not given". ``k`` as text is the selector's ("full", "", "0" = full
        rank; see ``parse_k``), as a number it is taken literally; flags also take "true"/"false"
        and 0/1; choices are read case-insensitively. Giving ``k`` or ``energy`` clears the other
        (``Param.clears``) unless both are given (then they clash: an error).

        Raises:
            ParameterError: an unknown name or a value out of range (names the parameter).
        """
        base = defaults if defaults is not None else cls()
        return base.with_(**changes(**loose))

    def label(self, compact: bool = False) -> str:
        """How the content is treated, for people: "direct merge", "hard projection" or "mu=0.5";
        ``compact`` (file names, no '=' so that a tag can name the file): "direct", "hard", "mu0.5"."""
        if self.method == "direct":
            return "direct" if compact else "direct merge"
        if self.hard:
            return "hard" if compact else "hard projection"
        return f"mu{self.mu:g}" if compact else f"mu={self.mu:g}"

    def with_(self, **changes) -> "FuseParams":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["c"] = self.c
        return d


# ---------------------------------------------------------------------------- the parameter table

#: what a field holds; every surface handles a kind, never a field by name
KINDS = ("lora", "number", "flag", "choice", "rank", "blocks")
BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


@dataclass(frozen=True)
class Param:
    """One field of a fusion request, and how every surface shows it.

    Attributes:
        name: the ``FuseParams`` field ("content"/"style": the two LoRA names). Also the REST body
            field, the accordion's argument, the CLI option's dest and the X/Y/Z attribute
            ``p.nplora_<name>``.
        kind: "lora" (a LoRA name), "number" (a float), "flag" (true/false), "choice" (one of
            ``choices``), "rank" (k: a whole number, or "full" for the style's full rank),
            "blocks" (per-block mu: ``"IN:0.2,OUT:hard"``, see ``parse_block_mu``).
        doc: one line: the REST field's description and the CLI option's help.
        infotext: the image-parameter label (written, and read back by PNG Info -> txt2img).
        label: the widget's label in the accordion and the tab; None: not in the UI.
        row: widgets with the same row share a form row (rows in table order).
        tag: the ``<nplora:…>`` key; None: a positional name (content, then style).
        ui_range, step: a slider's range and step (what is accepted is ``FuseParams``' range).
        choices: a "choice" field's values; a "rank" field's offered values.
        axis: the X/Y/Z plot axis label (after ``[NP-LoRA] ``); None: no axis.
        from_settings: when omitted, the host's settings give the value (the tag, REST).
        cli: the CLI option ("" = ``--name-with-dashes``; None = no option).
        cli_const: the option is a switch setting this value (``--direct``); cli_help: its help
            (default ``doc``); metavar: its metavar.
        group: options of one group exclude each other on the command line.
        clears: giving this field resets that one to its default unless both are given.
        analysis: the field shapes ``analyze``'s numbers (the CLI's analyze offers it).
        example: a valid value other than the default (documentation, the table's tests).
    """

    name: str
    kind: str
    doc: str
    infotext: str
    label: str | None = None
    row: str | None = None
    tag: str | None = None
    ui_range: tuple[float, float] | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    axis: str | None = None
    from_settings: bool = False
    cli: str | None = ""
    cli_const: object = None
    cli_help: str | None = None
    metavar: str | None = None
    group: str | None = None
    clears: str | None = None
    analysis: bool = False
    example: object = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")

    @property
    def is_param(self) -> bool:
        """A ``FuseParams`` field (not one of the two LoRA names)."""
        return self.kind != "lora"

    @property
    def default(self):
        """The library default (``FuseParams``'); None for a LoRA name (required)."""
        f = _FUSE_FIELDS.get(self.name)
        return None if f is None or f.default is MISSING else f.default

    @property
    def cli_flag(self) -> str | None:
        return None if self.cli is None else (self.cli or "--" + self.name.replace("_", "-"))

    def text(self, value) -> str:
        """A value as the tag and the infotext write it (numbers exact, as short as possible)."""
        if self.kind == "number":
            short = f"{float(value):g}"
            return short if float(short) == float(value) else repr(float(value))
        if self.kind == "rank":
            return K_FULL if value is None else str(int(value))
        if self.kind == "flag":
            return "True" if value else "False"
        if self.kind == "blocks":
            return block_mu_text(parse_block_mu(value))
        return str(value)

    def read(self, text: str):
        """The value of ``text`` as ``text()`` wrote it (infotext).

        Raises:
            ValueError, ParameterError: not such a value.
        """
        if self.kind == "number":
            return float(text)
        if self.kind == "rank":
            return parse_k(text) if text.strip().lower() == K_FULL else int(text)
        if self.kind == "flag":
            return text.strip().lower() == "true"
        if self.kind == "blocks":
            return block_mu_text(parse_block_mu(text))
        return text

    def ui_value(self, value):
        """A parameter value as its widget holds it (k: "full" or the number as text)."""
        return self.text(value) if self.kind in ("rank", "blocks") else value

    def widget(self, defaults: FuseParams | None = None) -> tuple[str, dict]:
        """The gradio component's class name and keyword arguments (no ``elem_id``; a LoRA
        dropdown's ``choices`` are the host's list: filled in by the caller).

        The value is ``defaults``' (the settings'); a slider's range and a rank's choices grow
        to hold it.
        """
        if self.label is None:
            raise ValueError(f"{self.name} has no widget")
        kw: dict = {"label": self.label}
        value = None if self.kind == "lora" else self.ui_value(getattr(defaults or FuseParams(), self.name))
        if self.kind == "lora":
            return "Dropdown", dict(kw, choices=[], value=None, allow_custom_value=True)
        if self.kind == "number":
            lo, hi = self.ui_range
            return "Slider", dict(kw, minimum=min(lo, float(value)), maximum=max(hi, float(value)),
                                  step=self.step, value=float(value))
        if self.kind == "flag":
            return "Checkbox", dict(kw, value=bool(value))
        if self.kind == "choice":
            return "Radio", dict(kw, choices=list(self.choices), value=value)
        if self.kind == "blocks":
            return "Textbox", dict(kw, value=value, placeholder=self.example, max_lines=1)
        choices = list(self.choices) + ([value] if value not in self.choices else [])
        return "Dropdown", dict(kw, choices=choices, value=value, allow_custom_value=True)

    def loose(self, value):
        """A loose value as ``FuseParams`` takes it; ``_UNSET`` for "not given"."""
        if value is None:
            return _UNSET
        if self.kind == "rank":
            return parse_k(value) if isinstance(value, str) else value
        if self.kind == "flag":
            if isinstance(value, str):
                text = value.strip().lower()
                if text not in BOOL_WORDS:
                    raise ParameterError(f"{self.name} must be true or false, got {value[:40]!r}")
                return BOOL_WORDS[text]
            if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
                return bool(value)
            return value
        if self.kind == "choice":
            return str(value).strip().lower()
        if self.kind == "blocks":
            return block_mu_text(parse_block_mu(value))
        return value


_UNSET = object()
_FUSE_FIELDS = {f.name: f for f in fields(FuseParams)}
_WEIGHT_HELP = "multiplier of the {} LoRA's update ({}), on top of its alpha/rank"

#: the table, in the accordion's argument order (``webui/accordion.py`` prepends "enabled"). The
#: WebUI API passes the accordion's values by position: append new rows, never insert.
PARAMS: tuple[Param, ...] = (
    Param("content", "lora", "content LoRA name (file stem or alias)", "NP-LoRA content",
          label="Content LoRA (subject)", row="names", axis="content LoRA", example="dog"),
    Param("style", "lora", "style LoRA name (file stem or alias)", "NP-LoRA style",
          label="Style LoRA", row="names", axis="style LoRA", example="ink"),
    Param("content_weight", "number", _WEIGHT_HELP.format("content", "wc"), "NP-LoRA content weight",
          label="Content weight", row="weights", tag="wc", ui_range=WEIGHT_RANGE, step=0.05,
          axis="content weight", metavar="W", example=0.6),
    Param("style_weight", "number", _WEIGHT_HELP.format("style", "ws"), "NP-LoRA style weight",
          label="Style weight", row="weights", tag="ws", ui_range=WEIGHT_RANGE, step=0.05,
          axis="style weight", metavar="W", example=1.3),
    Param("mu", "number", f"soft projection strength mu >= 0, c = mu/(1+mu) (default {DEFAULT_MU}, the paper's)",
          "NP-LoRA mu", label="mu: soft projection (0 = plain merge, 0.5 = paper)", row="projection", tag="mu",
          ui_range=(0.0, MU_MAX), step=0.05, axis="mu", from_settings=True, group="mode", example=0.8),
    Param("hard", "flag", "hard projection (c = 1, NP-LoRA-H)", "NP-LoRA hard",
          label="Hard projection (NP-LoRA-H)", row="projection", tag="hard", group="mode", example=True),
    Param("k", "rank", "style directions removed per module (default: the style's full numerical rank)",
          "NP-LoRA k", label="Style directions k (full = the style's rank)", row="subspace", tag="k",
          choices=K_CHOICES, axis="rank k", from_settings=True, group="rank", clears="energy", analysis=True,
          example=8),
    Param("scope", "choice", "project only the denoiser (default) or the text encoders too", "NP-LoRA scope",
          label="Project (text encoders are merged directly with 'unet')", row="subspace", tag="scope",
          choices=("unet", "all"), from_settings=True, analysis=True, example="all"),
    Param("method", "choice", "'nplora' (project) or 'direct' (plain weighted merge, no projection)",
          "NP-LoRA method", label="Method", row="subspace", tag="method", choices=("nplora", "direct"),
          axis="method", cli="--direct", cli_const="direct", cli_help="plain weighted merge, no projection (c = 0)",
          group="mode", example="direct"),
    Param("energy", "number", "beyond the paper: smallest k keeping this share of style energy, e.g. 0.9",
          "NP-LoRA energy", tag="energy", group="rank", clears="k", analysis=True, example=0.9),
    Param("block_mu", "blocks", "mu per block group on top of mu: GROUP:MU or GROUP:hard, comma-separated "
          "(groups per architecture: README, 'Several LoRAs and per-block mu')", "NP-LoRA block mu",
          label="Per-block mu (e.g. IN:0.2,OUT:1 or MID:hard; empty = mu everywhere)", row="blocks", tag="mub",
          metavar="GROUP:MU,...", example="IN:0.2,OUT:hard"),
    Param("chain", "flag", "beyond the paper: with several content LoRAs, project each off the earlier ones' "
          "directions too (order matters)", "NP-LoRA chain",
          label="Several contents: protect earlier ones from later ones (beyond the paper)", row="blocks",
          tag="chain", example=True),
)

BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}
#: the ``FuseParams`` fields, in FuseParams' order (the tag's and the infotext's order)
FUSE_PARAMS: tuple[Param, ...] = tuple(BY_NAME[f.name] for f in fields(FuseParams))
#: the two names (content, then style: their order in the tag) followed by the parameters
REQUEST_PARAMS: tuple[Param, ...] = tuple(p for p in PARAMS if not p.is_param) + FUSE_PARAMS
#: the fields with a widget, in the accordion's order
UI_PARAMS: tuple[Param, ...] = tuple(p for p in PARAMS if p.label is not None)
#: the X/Y/Z axes that shipped, in their order (the plot stores axes by index); others follow
SHIPPED_AXES = ("mu", "k", "content", "style", "method", "content_weight", "style_weight")


def ui_rows() -> list[list[Param]]:
    """The widgets' rows, in table order."""
    rows: dict[str, list[Param]] = {}
    for p in UI_PARAMS:
        rows.setdefault(p.row or p.name, []).append(p)
    return list(rows.values())


def axis_params() -> list[Param]:
    """The fields with an X/Y/Z axis: the shipped ones in their order, then the rest in table order."""
    with_axis = [p for p in PARAMS if p.axis]
    return sorted(with_axis, key=lambda p: (SHIPPED_AXES.index(p.name) if p.name in SHIPPED_AXES
                                            else len(SHIPPED_AXES), PARAMS.index(p)))


def changes(**loose) -> dict:
    """Loose values -> ``FuseParams.with_`` keyword arguments (see ``FuseParams.from_values``):
    None = not given; giving a field with ``clears`` resets that one unless it is given too."""
    out: dict = {}
    for name, value in loose.items():
        p = BY_NAME.get(name)
        if p is None or not p.is_param:
            raise ParameterError(f"unknown parameter {name!r}",
                                 hint="Use " + ", ".join(q.name for q in FUSE_PARAMS))
        v = p.loose(value)
        if v is not _UNSET:
            out[name] = v
    for name in list(out):
        other = BY_NAME[name].clears
        if other and other not in out:
            out[other] = BY_NAME[other].default
    return out
