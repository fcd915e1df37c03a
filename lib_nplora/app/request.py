"""What the user asks for — a content LoRA, a style LoRA and the fusion parameters — from each
place they can ask: the prompt tag, the accordion, X/Y/Z axes, pasted infotext, the REST API.

Prompt syntax (the WebUIs split a tag's text on ':' into items)::

    <nplora:CONTENT:STYLE>
    <nplora:CONTENT:STYLE:mu=0.8:k=16:wc=1.0:ws=0.8:scope=all>
    <nplora:CONTENT:STYLE:hard>            # hard projection (c = 1)
    <nplora:CONTENT:STYLE:method=direct>   # plain merge, for comparison

Named arguments: ``mu``, ``k`` (a number, or ``full`` for the style's full rank: the default),
``energy`` (beyond the paper), ``wc`` (content weight), ``ws``
(style weight), ``scope`` (unet|all), ``method`` (nplora|direct), ``hard`` (flag, or hard=true).
Anything else — a third name, an unknown or repeated argument, a number that is not finite or
out of range, a name that looks like a path — is refused with a message naming the tag.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..errors import NpLoraError, ParameterError
from ..params import BOOL_WORDS, FUSE_PARAMS, K_FULL, PARAMS, REQUEST_PARAMS, FuseParams
from .index import check_name

TAG = "nplora"

#: infotext labels (the image's "parameters" text) written and read back by the extension: the
#: table's (``params.PARAMS``) and the ones only written (on/off, the inputs' hashes, warnings)
INFOTEXT = {"enabled": "NP-LoRA", **{p.name: p.infotext for p in PARAMS},
            "hashes": "NP-LoRA hashes", "warning": "NP-LoRA warning"}


class PromptTagError(NpLoraError, ValueError):
    """A malformed ``<nplora:…>`` tag."""


@dataclass(frozen=True)
class FusionRequest:
    """A content + style pair and how to fuse them.

    Attributes:
        content, style: LoRA names (file stems or aliases), resolved by a ``LoraIndex``.
        params: the fusion parameters.
        source: where it came from: "prompt", "ui", "api", "xyz".
    """

    content: str
    style: str
    params: FuseParams = field(default_factory=FuseParams)
    source: str = "ui"

    def tag(self) -> str:
        """The ``<nplora:…>`` tag that asks for exactly this (defaults left out).

        Raises:
            PromptTagError: a name that a tag cannot carry (``:`` or ``>`` in it, an ``=``, or
            the word ``hard``): it would parse back as something else.
        """
        for name in (self.content, self.style):
            if any(ch in name for ch in ":>=") or name.strip().lower() in _FLAGS:
                raise PromptTagError(f"the LoRA name {name!r} cannot be written in a <{TAG}:…> tag",
                                     hint="Rename the file (no ':', '>' or '='), or use the NP-LoRA accordion")
        items = [self.content, self.style]
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
_TAG_VALUE = {"number": _number, "rank": _rank, "flag": _flag, "choice": lambda tag, key, text: text.lower()}


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
    if len(items) > MAX_ITEMS or any(len(str(i)) > MAX_ITEM_LEN for i in items):
        raise PromptTagError(f"{tag}: too long")
    names: list[str] = []
    named: dict[str, str] = {}
    for raw in items:
        item = str(raw).strip()
        if "=" in item:
            key, _, value = item.partition("=")
            key = key.strip().lower()
            if key not in _KEYS:
                raise PromptTagError(f"{tag}: unknown argument {key!r}",
                                     hint="Use " + ", ".join(_KEYS))
            if key in named:
                raise PromptTagError(f"{tag}: {key} is given twice")
            named[key] = value.strip()
        elif item.lower() in _FLAGS:  # a bare flag: on
            if item.lower() in named:
                raise PromptTagError(f"{tag}: {item.lower()} is given twice")
            named[item.lower()] = "true"
        elif ">" in item:  # the WebUIs' tag regex ends a tag at the first '>': no prompt tag has one
            raise PromptTagError(f"{tag}: the LoRA name {item!r} has a '>', which ends a prompt tag",
                                 hint="Rename the file, or use the NP-LoRA accordion")
        else:
            names.append(item)
    if len(names) != 2:
        raise PromptTagError(f"{tag}: needs exactly two LoRA names (content, then style), got {len(names)}",
                             hint=f"Write <{TAG}:CONTENT:STYLE>")
    content = check_name(names[0], "content LoRA name")
    style = check_name(names[1], "style LoRA name")
    kw = {_KEYS[key].name: _TAG_VALUE[_KEYS[key].kind](tag, key, value) for key, value in named.items()}
    try:
        params = FuseParams.from_values(defaults, **kw)
    except ParameterError as e:
        raise ParameterError(f"{tag}: {e.problem}", hint=e.hint) from None
    return FusionRequest(content, style, params, source="prompt")
