"""Errors raised by lib_nplora.

Every error names what failed (the file, and the module where it applies) and says what to do.
Callers (CLI, WebUI, REST API) show ``str(error)`` as it is; nothing else should escape the
library for bad input. The classes also derive from the matching builtin so that generic
handlers (``except ValueError``) keep working.
"""

from __future__ import annotations

import os


def display_name(path: str | bytes | os.PathLike) -> str:
    """A file's base name as it may be shown anywhere (console, JSON, HTML, logs).

    A plain name is returned as it is; one holding bytes that are not UTF-8 (they arrive as lone
    surrogates, Python's surrogateescape), control characters or other unprintables is quoted
    with those escaped: ``'bad\\xff.safetensors'``, ``'a\\nb.safetensors'``.
    """
    name = os.path.basename(os.fsdecode(path))
    if name.isprintable():
        try:
            name.encode("utf-8")
            return name
        except UnicodeEncodeError:
            pass
    out = []
    for ch in name:
        if 0xDC80 <= ord(ch) <= 0xDCFF:  # an undecodable byte
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif not ch.isprintable() or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(repr(ch)[1:-1])
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


class NpLoraError(Exception):
    """Base class: a problem the user can act on.

    Args:
        problem: what is wrong, one sentence without a trailing period.
        path: the file concerned, if any.
        module: the canonical (or source) module name concerned, if any.
        hint: what to do about it.
    """

    def __init__(self, problem: str, *, path: str | os.PathLike | None = None,
                 module: str | None = None, hint: str | None = None):
        self.problem = problem
        self.path = os.fsdecode(path) if path is not None else None
        self.module = module
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        parts = []
        if self.path:
            parts.append(display_name(self.path))
        if self.module:
            parts.append(f"module {self.module}")
        text = ": ".join(parts + [self.problem])
        if self.hint:
            text += f". {self.hint}"
        return text


class UnsafeFileError(NpLoraError, ValueError):
    """The file is a pickle-based checkpoint (.pt/.ckpt/.bin/.pth); loading it could run code."""


class FormatError(NpLoraError, ValueError):
    """The file is not a readable LoRA: bad header, wrong shapes, dtypes, NaN, unknown keys."""


class ArchitectureError(NpLoraError, ValueError):
    """The base model cannot be determined, or the two inputs were made for different models."""


class UnsupportedModuleError(NpLoraError, ValueError):
    """A module type that cannot be fused or represented in the output (e.g. DoRA on both sides)."""


class ParameterError(NpLoraError, ValueError):
    """A fusion parameter out of range (mu < 0, k < 1, energy outside (0, 1], ...)."""


class OutputExistsError(NpLoraError, FileExistsError):
    """The output file exists and overwriting was not requested."""


class OutputError(NpLoraError, OSError):
    """The output could not be written (no space, no permission, bad name)."""


class MissingFileError(FormatError):
    """An input file does not exist.

    What to check depends on who named the file: by default a path (the command line, a library
    call), so the hint is about the path and the current folder; the app layer (WebUI, tab, REST
    API), whose names come from a LoRA list, swaps in the list's hint with ``listed()``.
    """

    LISTED_HINT = "Check the name, or refresh the LoRA list"

    def __init__(self, path: str | os.PathLike, *, hint: str | None = None):
        if hint is None:
            hint = self.path_hint(os.fspath(path))
        super().__init__("file not found", path=path, hint=hint)

    @staticmethod
    def path_hint(given: str) -> str:
        """What to check for a path as typed: the path, the folder it is relative to, ``ls``."""
        import shlex

        where = shlex.quote(os.path.dirname(given) or ".")
        if os.path.isabs(given):
            return f"Check the path {given!r}; `ls {where}` shows what is there"
        try:
            cwd = os.getcwd()
        except OSError:
            cwd = "which no longer exists"
        return (f"Check the path {given!r}, which is relative to the current folder ({cwd}); "
                f"`ls {where}` shows what is there")

    def listed(self) -> MissingFileError:
        """The same error with the hint for a name picked from a LoRA list."""
        return MissingFileError(self.path, hint=self.LISTED_HINT)


class MissingPackageError(NpLoraError, ImportError):
    """An optional package a command needs (gradio, fastapi, uvicorn for ``serve``) is not installed."""


class OutputIsInputError(OutputError):
    """The output would be one of the inputs (the same path, a hard link or a symlink to it);
    refused whatever overwriting allows."""
