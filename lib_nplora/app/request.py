"""What the user asks for — a content LoRA, a style LoRA and the fusion parameters — from each
place they can ask: the prompt tag, the accordion, X/Y/Z axes, pasted infotext, the REST API.

Prompt syntax (the WebUIs split a tag's text on ':' into items)::

    <nplora:CONTENT:STYLE>
    <nplora:CONTENT:STYLE:mu=0.8:k=16:wc=1.0:ws=0.8:scope=all>
    <nplora:CONTENT:STYLE:hard>            # hard projection (c = 1)
    <nplora:CONTENT:STYLE:method=direct>   # plain merge, for comparison

Several LoRAs per side, each with its own weight, and mu per block group::

    <nplora:dog + hat*0.5:ink + oil*0.3>   # contents dog (1) and hat (0.5); styles ink, oil
    <nplora:dog:ink:mu=0.5:mub=IN:0.2,OUT:1.0>   # mu 0.2 in the input blocks, 1.0 in the output
    <nplora:dog:ink:mub=MID:hard,OUT05:0>  # hard in the middle block, none in output block 5
    <nplora:dog + hat:ink:chain>           # hat is also projected off dog's directions

A *LoRA set* is names separated by a ``+`` with a space on at least one side; ``*W`` after a
name is its weight (default 1), on top of ``wc`` / ``ws``. A ``+`` inside a name, as in this
extension's own output names (``dog+ink_nplora_mu0.5``), stays part of the name, so the old
two-name tag keeps its meaning. ``mub`` takes ``GROUP:MU`` (or ``GROUP:hard``) entries separated
by commas; the WebUI splits the tag on every ``:``, so the items that follow ``mub=GROUP`` are
read back as its values (a group always takes exactly the next item). Groups per architecture:
``arch.blocks``.

Named arguments: ``mu``, ``k`` (a number, or ``full`` for the style's full rank: the default),
``energy`` (beyond the paper), ``wc`` (content weight), ``ws``
(style weight), ``scope`` (unet|all), ``method`` (nplora|direct), ``hard`` (flag, or hard=true),
``mub`` (per-block mu), ``chain`` (flag, beyond the paper).
Anything else — a third name, an unknown or repeated argument, a number that is not finite or
out of range, a name that looks like a path, more than ``MAX_SET`` LoRAs a side — is refused
with a message naming the tag. Parsing is one pass over at most ``MAX_ITEMS`` items of at most
``MAX_ITEM_LEN`` characters: no regex, no recursion.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..errors import NpLoraError, ParameterError
from ..params import BOOL_WORDS, FUSE_PARAMS, K_FULL, MAX_BLOCK_MU, MAX_WEIGHT, PARAMS, REQUEST_PARAMS, FuseParams
from .index import check_name

TAG = "nplora"

#: infotext labels (the image's "parameters" text) written and read back by the extension: the
#: table's (``params.PARAMS``) and the ones only written (on/off, the inputs' hashes, warnings)
INFOTEXT = {"enabled": "NP-LoRA", **{p.name: p.infotext for p in PARAMS},
            "hashes": "NP-LoRA hashes", "warning": "NP-LoRA warning"}


class PromptTagError(NpLoraError, ValueError):
    """A malformed ``<nplora:…>`` tag."""


#: most LoRAs on one side of a request
MAX_SET = 8
WEIGHT_MARK = "*"
SET_JOIN = " + "


def _split_set(text: str) -> list[str]:
    """Split on each '+' with whitespace on at least one side (one pass, no regex)."""
    parts, start = [], 0
    for i, ch in enumerate(text):
        if ch == "+" and ((i > 0 and text[i - 1].isspace()) or (i + 1 < len(text) and text[i + 1].isspace())):
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_set(text, what: str = "content LoRA name", *, plain: bool = True) -> tuple[tuple[str, float], ...]:
    """A LoRA set's text (``"dog + hat*0.5"``) -> ((name, weight), ...), each weight finite and
    within ``MAX_WEIGHT``.

    ``plain``: each name must be a plain name (``index.check_name``: no path), as in a prompt tag, a
    REST body or an X/Y/Z cell. False: only non-empty text without control characters
    (``check_name(folders=True)``), for a request whose names the index that resolves it checks (ComfyUI's list
    names hold folders: ``styles/ink.safetensors``).

    Raises:
        LoraNameError: a name that is empty or looks like a path; ParameterError: a bad weight,
        a name given twice, more than ``MAX_SET`` names.
    """
    if not isinstance(text, str):
        raise ParameterError(f"the {what} must be text, got {type(text).__name__}")
    parts = _split_set(text)
    if len(parts) > MAX_SET:
        raise ParameterError(f"at most {MAX_SET} LoRAs a side, got {len(parts)} in {text[:60]!r}")
    out: list[tuple[str, float]] = []
    for part in parts:
        name, mark, weight = part.rpartition(WEIGHT_MARK)
        if not mark:
            name, w = part, 1.0
        else:
            try:
                w = float(weight)
            except ValueError:
                raise ParameterError(f"the weight of {name.strip()[:40]!r} in {what} must be a number, "
                                     f"got {weight.strip()[:20]!r}", hint="Write NAME*0.8") from None
            if not math.isfinite(w) or abs(w) > MAX_WEIGHT:
                raise ParameterError(f"the weight of {name.strip()[:40]!r} in {what} must be a number between "
                                     f"-{MAX_WEIGHT:g} and {MAX_WEIGHT:g}, got {weight.strip()[:20]!r}")
        name = check_name(name, what, folders=not plain)
        if any(n == name for n, _ in out):
            raise ParameterError(f"{name!r} is given twice in the {what}s", hint="Give each LoRA once, with one weight")
        out.append((name, w))
    return tuple(out)


def _weight_text(w: float) -> str:
    short = f"{w:g}"
    return short if float(short) == w else repr(w)


def set_text(refs) -> str:
    """The canonical text of a LoRA set (``parse_set`` reads it back): one name with weight 1 is
    just the name."""
    return SET_JOIN.join(n if w == 1.0 else f"{n}{WEIGHT_MARK}{_weight_text(float(w))}" for n, w in refs)


def _set_safe(name: str) -> bool:
    """Does ``name`` parse back as itself inside a LoRA set's text?"""
    return WEIGHT_MARK not in name and len(_split_set(name)) == 1 and not name.startswith("+") \
        and not name.endswith("+")


def _writable(name: str) -> bool:
    """Can ``name`` go into a tag's LoRA set and parse back as itself?"""
    return _set_safe(name) and not any(ch in name for ch in ":>=") and name.strip().lower() not in _FLAGS


@dataclass(frozen=True)
class FusionRequest:
    """Content and style LoRAs and how to fuse them.

    Attributes:
        content, style: LoRA sets (``parse_set``): one name (a file stem or alias, resolved by a
            ``LoraIndex``) or several, ``"dog + hat*0.5"``, each with its own weight.
        params: the fusion parameters.
        source: where it came from: "prompt", "ui", "api", "xyz".
    """

    content: str
    style: str
    params: FuseParams = field(default_factory=FuseParams)
    source: str = "ui"

    @property
    def contents(self) -> tuple[tuple[str, float], ...]:
        """The content LoRAs as (name, own weight), in order."""
        return parse_set(self.content, "content LoRA name", plain=False)

    @property
    def styles(self) -> tuple[tuple[str, float], ...]:
        """The style LoRAs as (name, own weight), in order."""
        return parse_set(self.style, "style LoRA name", plain=False)

    @classmethod
    def of_sets(cls, contents, styles, params: FuseParams | None = None, source: str = "ui", *,
                folders: bool = False) -> "FusionRequest":
        """From (name, weight) lists (or plain names), as the REST API, the CLI and ComfyUI's
        NP-LoRA Set node give them. ``folders``: names may hold folders (ComfyUI's list names,
        ``styles/ink.safetensors``), checked by ``check_name(folders=True)`` and the index."""
        def text(refs, what):
            refs = [(r, 1.0) if isinstance(r, str) else tuple(r) for r in refs]
            if not refs:
                raise ParameterError(f"give at least one {what}")
            for name, w in refs:
                if not isinstance(name, str):
                    raise ParameterError(f"each {what} must be text, got {type(name).__name__}")
                if not _set_safe(check_name(name, what, folders=folders)):
                    raise ParameterError(f"the LoRA name {name.strip()!r} cannot be listed in a LoRA set "
                                         "(it has a '*' or a '+' next to a space)", hint="Rename the file")
                if isinstance(w, bool) or not isinstance(w, (int, float)):
                    raise ParameterError(f"the weight of {name.strip()!r} must be a number, got {w!r}")
            return set_text(parse_set(set_text((n.strip(), float(w)) for n, w in refs), what, plain=not folders))
        return cls(text(contents, "content LoRA name"), text(styles, "style LoRA name"),
                   params or FuseParams(), source)

    def tag(self) -> str:
        """The ``<nplora:…>`` tag that asks for exactly this (defaults left out).

        Raises:
            PromptTagError: a name that a tag cannot carry (``:`` or ``>`` in it, an ``=``, or
            the word ``hard``): it would parse back as something else.
        """
        sets = []
        for text, what in ((self.content, "content LoRA name"), (self.style, "style LoRA name")):
            try:
                sets.append(parse_set(text, what))
            except NpLoraError:
                raise PromptTagError(f"the LoRA name {str(text)[:60]!r} cannot be written in a <{TAG}:…> tag",
                                     hint="Rename the file (no ':', '>', '=', '*' or ' + '), "
                                          "or use the NP-LoRA accordion") from None
        for refs in sets:
            for name, _ in refs:
                if not _writable(name):
                    raise PromptTagError(f"the LoRA name {name!r} cannot be written in a <{TAG}:…> tag",
                                         hint="Rename the file (no ':', '>', '=', '*' or ' + '), "
                                              "or use the NP-LoRA accordion")
        items = [set_text(sets[0]), set_text(sets[1])]
        for p in FUSE_PARAMS:
            value = getattr(self.params, p.name)
            if value == p.default:
                continue
            items.append(p.tag if p.kind == "flag" and value else f"{p.tag}={p.text(value)}")
        return f"<{TAG}:{':'.join(items)}>"

    def infotext(self) -> dict[str, str]:
        """The image-parameter entries for this request (label -> value)."""
        out = {INFOTEXT["enabled"]: "True"}
        for p in REQUEST_PARAMS:
            value = getattr(self, p.name) if not p.is_param else getattr(self.params, p.name)
            if value is None or (p.kind == "flag" and not value):
                continue  # k / energy off, a flag off: nothing to write
            out[p.infotext] = p.text(value)
        return out


#: tag key -> parameter
_KEYS = {p.tag: p for p in FUSE_PARAMS if p.tag}
_FLAGS = {key for key, p in _KEYS.items() if p.kind == "flag"}
MAX_ITEMS = 16
MAX_ITEM_LEN = 300
#: the values of a ``mub=`` come as items of their own (the WebUI splits on ':'): this many more
MAX_BLOCK_ITEMS = MAX_BLOCK_MU
BLOCKS_KEY = next(p.tag for p in FUSE_PARAMS if p.kind == "blocks")


def _number(tag: str, key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PromptTagError(f"{tag}: {key}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise PromptTagError(f"{tag}: {key}={text!r} is not a finite number")
    return value


def _integer(tag: str, key: str, text: str) -> int:
    text = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise PromptTagError(f"{tag}: {key}={text!r} is not a whole number")
    if len(text.lstrip("+-")) > 9:
        raise PromptTagError(f"{tag}: {key}={text[:20]}{'...' if len(text) > 20 else ''} is out of range")
    return int(text)


def _rank(tag: str, key: str, text: str):
    # k=full: the style's full rank (the paper's), whatever the default is
    return K_FULL if text.lower() == K_FULL else _integer(tag, key, text)


def _flag(tag: str, key: str, text: str) -> bool:
    if text.lower() not in BOOL_WORDS:
        raise PromptTagError(f"{tag}: {key}={text!r} must be true or false")
    return BOOL_WORDS[text.lower()]


#: kind -> how a tag's text becomes a value (a PromptTagError naming the tag, else)
_TAG_VALUE = {"number": _number, "rank": _rank, "flag": _flag, "choice": lambda tag, key, text: text.lower(),
              "blocks": lambda tag, key, text: text}


def parse_items(items: list[str], tag: str | None = None, defaults: FuseParams | None = None) -> FusionRequest:
    """Parse the ':'-separated items of one ``<nplora:…>`` tag.

    Args:
        items: the tag's items (the WebUI's ``ExtraNetworkParams.items``).
        tag: how to name the tag in messages (default: rebuilt from the items).
        defaults: values for the arguments the tag leaves out (the settings' mu, k, scope);
            None = the library's defaults.

    Raises:
        PromptTagError: malformed tag; ParameterError: a value out of range; LoraNameError: a
        name that looks like a path.
    """
    tag = tag or f"<{TAG}:{':'.join(str(i) for i in items)[:80]}>"
    with_blocks = any(str(i).strip().lower().startswith(BLOCKS_KEY) for i in items[:MAX_ITEMS + MAX_BLOCK_ITEMS])
    if len(items) > MAX_ITEMS + (MAX_BLOCK_ITEMS if with_blocks else 0) or any(len(str(i)) > MAX_ITEM_LEN
                                                                            for i in items):
        raise PromptTagError(f"{tag}: too long")
    names: list[str] = []
    named: dict[str, str] = {}
    pending: list[str] | None = None  # the per-block entries read so far, while one lacks its value
    for raw in items:
        item = str(raw).strip()
        if pending is not None:  # the WebUI split "mub=IN:0.2,OUT:1" on ':': this item is a value
            pending.append(item)
            if ":" in (":".join(pending)).rpartition(",")[2]:
                named[BLOCKS_KEY] = ":".join(pending)
                pending = None
            continue
        if "=" in item:
            key, _, value = item.partition("=")
            key = key.strip().lower()
            if key not in _KEYS:
                raise PromptTagError(f"{tag}: unknown argument {key!r}",
                                     hint="Use " + ", ".join(_KEYS))
            if key in named:
                raise PromptTagError(f"{tag}: {key} is given twice")
            named[key] = value.strip()
            if key == BLOCKS_KEY and value.strip() and ":" not in value.rpartition(",")[2]:
                pending = [value.strip()]
        elif item.lower() in _FLAGS:  # a bare flag: on
            if item.lower() in named:
                raise PromptTagError(f"{tag}: {item.lower()} is given twice")
            named[item.lower()] = "true"
        elif ">" in item:  # the WebUIs' tag regex ends a tag at the first '>': no prompt tag has one
            raise PromptTagError(f"{tag}: the LoRA name {item!r} has a '>', which ends a prompt tag",
                                 hint="Rename the file, or use the NP-LoRA accordion")
        elif ":" in item:  # the WebUIs split a tag on ':': such an item came from elsewhere
            raise PromptTagError(f"{tag}: the LoRA name {item!r} has a ':', which a prompt tag cannot carry",
                                 hint="Rename the file, or use the NP-LoRA accordion")
        else:
            names.append(item)
    if pending is not None:
        raise PromptTagError(f"{tag}: {BLOCKS_KEY}={':'.join(pending)[:40]} ends without a value for its last group",
                             hint=f"Write {BLOCKS_KEY}=IN:0.2,OUT:1.0")
    if len(names) != 2:
        raise PromptTagError(f"{tag}: needs exactly two LoRA names (content, then style), got {len(names)}",
                             hint=f"Write <{TAG}:CONTENT:STYLE>")
    try:
        content = set_text(parse_set(names[0], "content LoRA name"))
        style = set_text(parse_set(names[1], "style LoRA name"))
    except NpLoraError as e:
        if type(e) is not ParameterError:
            raise
        raise ParameterError(f"{tag}: {e.problem}", hint=e.hint) from None
    kw = {_KEYS[key].name: _TAG_VALUE[_KEYS[key].kind](tag, key, value) for key, value in named.items()}
    try:
        params = FuseParams.from_values(defaults, **kw)
    except ParameterError as e:
        raise ParameterError(f"{tag}: {e.problem}", hint=e.hint) from None
    return FusionRequest(content, style, params, source="prompt")
