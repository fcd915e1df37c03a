"""Helpers for reading content that came from a file (or a request) and is therefore hostile.

* ``loads_json``: ``json.loads`` with the nesting depth bounded *before* the parser runs (the
  parser recurses once per level: a file must not choose a recursion depth), duplicate object
  keys refused (the safetensors library refuses them in a header; last-one-wins would let two
  readers see two different files), and every failure as ``UntrustedJSONError`` (a ValueError)
  with a message that quotes nothing from the input.
* ``show``: a name taken from a file (tensor key, module stem, pattern key), escaped and cut
  to a length cap, fit for an error message: a file's bytes are never echoed raw (no control
  characters or terminal escapes, no megabyte-long keys in a 422 or a log line).

Cost: ``json_depth`` is linear in the input per level, at most ``max_depth`` passes of two fixed
regular expressions that cannot backtrack (each consumes every byte at most once; no Python
loop over characters).
"""

from __future__ import annotations

import json
import re

#: A JSON string literal, possibly unterminated at the end of the input. The two branches of
#: the body start with disjoint characters, so matching is linear (no backtracking); the
#: optional closing quote means a match never fails once it has started.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_INNERMOST = re.compile(rb"\[\]|\{\}")
_OPENERS = re.compile(rb"[\[{]+")


#: Deepest JSON nesting accepted in a metadata value that is parsed (``lora_adapter_metadata``:
#: 2-3 levels; ``ss_tag_frequency``: 2).
MAX_METADATA_DEPTH = 32


class UntrustedJSONError(ValueError):
    """The text is not JSON we accept; ``str()`` says why without quoting the text."""


def json_depth_ok(raw: bytes | str, max_depth: int) -> bool:
    """Whether parsing ``raw`` as JSON nests (recurses) at most ``max_depth`` levels: every
    bracket outside string literals, matched or not, counted."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    # Each round removes every innermost pair; valid JSON of depth d is gone after d rounds.
    for done in range(max_depth + 1):
        if not brackets:
            return True
        shorter = _INNERMOST.sub(b"", brackets)
        if len(shorter) == len(brackets):
            # Unbalanced (an unclosed "{", a "[}"): the parser fails on it, after recursing at
            # most the pairs removed so far plus the longest run of openers left.
            longest = max((len(run) for run in _OPENERS.findall(brackets)), default=0)
            return done + longest <= max_depth
        brackets = shorter
    return False


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise UntrustedJSONError(f"it has the key {show(key)} twice in one object")
        out[key] = value
    return out


def loads_json(raw: bytes | str, *, max_depth: int) -> object:
    """Parse JSON from a file with bounded nesting and no duplicate keys.

    Raises:
        UntrustedJSONError: too deep, duplicate key, not UTF-8, or not JSON (the message
            names the reason only).
    """
    if not json_depth_ok(raw, max_depth):
        raise UntrustedJSONError(f"it is nested deeper than {max_depth} levels")
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except UntrustedJSONError:
        raise  # a duplicate key
    except UnicodeDecodeError:
        raise UntrustedJSONError("it is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise UntrustedJSONError(f"it is not valid JSON ({e.msg} at character {e.pos})") from None
    except RecursionError:  # not reachable after the depth check; kept as a safety net
        raise UntrustedJSONError("it is nested too deeply") from None
    except ValueError as e:  # e.g. an integer literal over Python's digit limit
        raise UntrustedJSONError(f"it holds a value Python cannot read ({e.__class__.__name__})") from None


#: Longest name from a file shown in an error message.
SHOW_LIMIT = 80


def show(name: object, limit: int = SHOW_LIMIT) -> str:
    """``repr`` of a name from a file, cut to about ``limit`` characters (``...'`` marks a cut)."""
    text = name if isinstance(name, str) else str(type(name).__name__)
    if len(text) > limit:
        return repr(text[:limit])[:-1] + f"...' ({len(text)} characters)"
    return repr(text)


def show_bare(name: str, limit: int = SHOW_LIMIT) -> str:
    """A module stem from a file as messages print module names: as it is when it is short
    printable ASCII, else escaped and cut like ``show``."""
    if isinstance(name, str) and len(name) <= limit and name.isascii() and name.isprintable():
        return name
    return show(name, limit)
