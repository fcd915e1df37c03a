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
from ..params import FuseParams
from .index import check_name

TAG = "nplora"

#: infotext labels (the image's "parameters" text) written and read back by the extension
INFOTEXT = {
    "enabled": "NP-LoRA", "content": "NP-LoRA content", "style": "NP-LoRA style",
    "mu": "NP-LoRA mu", "hard": "NP-LoRA hard", "k": "NP-LoRA k", "energy": "NP-LoRA energy",
    "content_weight": "NP-LoRA content weight", "style_weight": "NP-LoRA style weight",
    "scope": "NP-LoRA scope", "method": "NP-LoRA method", "hashes": "NP-LoRA hashes",
    "warning": "NP-LoRA warning",
}


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
        p, d = self.params, FuseParams()
        for name in (self.content, self.style):
            if any(ch in name for ch in ":>=") or name.strip().lower() == "hard":
                raise PromptTagError(f"the LoRA name {name!r} cannot be written in a <{TAG}:…> tag",
                                     hint="Rename the file (no ':', '>' or '='), or use the NP-LoRA accordion")
        items = [self.content, self.style]
        if p.method == "direct":
            items.append("method=direct")
        elif p.hard:
            items.append("hard")
        elif p.mu != d.mu:
            items.append(f"mu={p.mu:g}")
        if p.k is not None:
            items.append(f"k={p.k}")
        if p.energy is not None:
            items.append(f"energy={p.energy:g}")
        if p.content_weight != d.content_weight:
            items.append(f"wc={p.content_weight:g}")
        if p.style_weight != d.style_weight:
            items.append(f"ws={p.style_weight:g}")
        if p.scope != d.scope:
            items.append(f"scope={p.scope}")
        return f"<{TAG}:{':'.join(items)}>"

    def infotext(self) -> dict[str, str]:
        """The image-parameter entries for this request (label -> value)."""
        p = self.params
        out = {INFOTEXT["enabled"]: "True", INFOTEXT["content"]: self.content,
               INFOTEXT["style"]: self.style, INFOTEXT["method"]: p.method}
        if p.method == "nplora":
            if p.hard:
                out[INFOTEXT["hard"]] = "True"
            else:
                out[INFOTEXT["mu"]] = f"{p.mu:g}"
        if p.k is not None:
            out[INFOTEXT["k"]] = str(p.k)
        if p.energy is not None:
            out[INFOTEXT["energy"]] = f"{p.energy:g}"
        out[INFOTEXT["content_weight"]] = f"{p.content_weight:g}"
        out[INFOTEXT["style_weight"]] = f"{p.style_weight:g}"
        out[INFOTEXT["scope"]] = p.scope
        return out


_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_KEYS = {"mu": "mu", "k": "k", "energy": "energy", "wc": "content_weight", "ws": "style_weight",
         "scope": "scope", "method": "method", "hard": "hard"}
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
                                     hint="Use mu, k, energy, wc, ws, scope, method or hard")
            if key in named:
                raise PromptTagError(f"{tag}: {key} is given twice")
            named[key] = value.strip()
        elif item.lower() == "hard":
            if "hard" in named:
                raise PromptTagError(f"{tag}: hard is given twice")
            named["hard"] = "true"
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
    kw: dict = {}
    for key, value in named.items():
        field_ = _KEYS[key]
        if key in ("mu", "energy", "wc", "ws"):
            kw[field_] = _number(tag, key, value)
        elif key == "k":
            # k=full: the style's full rank (the paper's), whatever the default is
            kw[field_] = None if value.lower() == "full" else _integer(tag, key, value)
        elif key == "hard":
            if value.lower() not in _BOOL:
                raise PromptTagError(f"{tag}: hard={value!r} must be true or false")
            kw[field_] = _BOOL[value.lower()]
        else:
            kw[field_] = value.lower()
    if "energy" in kw and "k" not in kw:
        kw["k"] = None  # an energy cap replaces a default k, and the other way round
    if "k" in kw and "energy" not in kw:
        kw["energy"] = None
    try:
        params = defaults.with_(**kw) if defaults is not None else FuseParams(**kw)
    except ParameterError as e:
        raise ParameterError(f"{tag}: {e.problem}", hint=e.hint) from None
    return FusionRequest(content, style, params, source="prompt")
