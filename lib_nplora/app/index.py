"""The list of LoRAs a user can pick, and the only way a name becomes a file.

Names are what the WebUIs show and what ``<lora:…>`` accepts: the file stem, or the alias from
the file's ``ss_output_name``. They are looked up in an index, never opened as paths: a name with a
path separator, ``..``, a drive or a NUL is refused before any lookup.

``LoraIndex`` is the interface; ``DirectoryIndex`` scans a folder (standalone mode, tests); each
WebUI host adapter provides one over the host's own LoRA list (``hosts/*``).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import NpLoraError, display_name
from ..formats.reader import peek
from ..formats.atomic import file_version
from ..formats.safetensors_file import not_regular, open_error
from ..formats.writer import is_temp_name

MAX_NAME = 255


class LoraNameError(NpLoraError, ValueError):
    """A LoRA name that is not in the index, or that looks like a path."""


class LoraNotFoundError(LoraNameError):
    """A well-formed LoRA name that no file in the index has (the REST API answers 404)."""


@dataclass(frozen=True)
class LoraEntry:
    """One LoRA file known to the index.

    Attributes:
        name: file stem.
        path: absolute path of the .safetensors file.
        alias: ``ss_output_name`` from its metadata, if any.
        arch: base architecture from its header ("sd1", "sdxl", ...), None if unreadable.
        arch_candidates: every architecture it fits.
    """

    name: str
    path: str
    alias: str | None = None
    arch: str | None = None
    arch_candidates: tuple[str, ...] = ()

    def fits(self, arch: str | None) -> bool:
        return arch is None or arch in self.arch_candidates


def check_name(name: object, what: str = "LoRA name", *, listed: bool = True, folders: bool = False) -> str:
    """Refuse anything that is not a plain name (paths, traversal, control characters).

    ``listed``: the name must be one of the LoRA list's (the path message says so); False for
    the name of a file still to be written. ``folders``: only text, length and control characters
    are checked here; whether the name is a listed one is the check of the index that resolves it
    (ComfyUI's list names hold folders: ``styles/ink.safetensors``).
    """
    if not isinstance(name, str):
        raise LoraNameError(f"the {what} must be text, got {type(name).__name__}")
    name = name.strip()
    if not name:
        raise LoraNameError(f"the {what} is empty", hint="Pick a LoRA from the list")
    if len(name) > MAX_NAME:
        raise LoraNameError(f"the {what} is longer than {MAX_NAME} characters")
    if folders:
        if any(ord(ch) < 32 for ch in name):
            raise LoraNameError(f"the {what} {name[:40]!r} has control characters",
                                hint="Use the LoRA's name as the LoRA list shows it")
        return name
    if any(ch in name for ch in "/\\\0") or name in (".", "..") or ".." in name.split(os.sep) \
            or (len(name) > 1 and name[1] == ":") or any(ord(ch) < 32 for ch in name):
        if not listed:
            raise LoraNameError(f"the {what} {name!r} looks like a path", hint="Type a plain name, without folders")
        raise LoraNameError(f"the {what} {name!r} looks like a path; only names from the LoRA list are accepted",
                            hint="Use the LoRA's name as the Lora tab shows it, without folders")
    return name


class LoraIndex:
    """Interface: the LoRAs a host knows, by name."""

    #: where fused files are saved (the host's LoRA folder)
    folder: Path

    def entries(self) -> dict[str, LoraEntry]:
        raise NotImplementedError

    def refresh(self) -> None:
        """Rescan (after files were added or removed)."""

    def resolve(self, name: str, what: str = "LoRA") -> LoraEntry:
        """The entry for a file stem or alias.

        Raises:
            LoraNameError: the name looks like a path; LoraNotFoundError (a LoraNameError): no
                LoRA has that name (after one rescan).
        """
        name = check_name(name, f"{what} name")
        for attempt in range(2):
            entries = self.entries()
            hit = entries.get(name)
            if hit is None:
                hit = next((e for e in entries.values() if e.alias == name), None)
            if hit is not None:
                return hit
            if attempt == 0:
                self.refresh()
        raise LoraNotFoundError(f"no LoRA named {name!r} was found", module=None,
                            hint=f"Check the {what} name in the Lora tab, or refresh the list")

    def names(self, arch: str | None = None) -> list[str]:
        """Sorted names, only those fitting ``arch`` when given."""
        return sorted((e.name for e in self.entries().values() if e.fits(arch)), key=str.lower)


def _skip_reason(path: str, rel: str) -> tuple[str | None, os.stat_result | None]:
    """(why ``path`` cannot be listed, or None; its ``stat``), without opening it.

    A file is listed when its name under the folder (``rel``) is UTF-8 text and ``stat``
    (following symbolic links) finds a regular file; a FIFO, socket, device, link loop, dangling
    link, path through a file or name over NAME_MAX gets a reason instead.
    """
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8 text; rename it", None
    try:
        st = os.stat(path)
    except OSError as e:
        return open_error(e, path).problem, None
    what = not_regular(st.st_mode)
    if what is not None:
        return f"is {what}, not a regular file", None
    return None, st


def _walk(folder: str, notes: list[tuple[str, str]]):
    """The path of every ``*.safetensors`` name under ``folder``: sorted, top-down like ``os.walk``,
    hidden entries and symlinked folders skipped, iterative (no recursion depth set by the tree).
    A folder that cannot be listed gets a note."""
    stack = [folder]
    while stack:
        root = stack.pop()
        try:
            with os.scandir(root) as it:
                items = sorted(it, key=lambda d: d.name)
        except OSError as e:
            notes.append((_shown(os.path.relpath(root, folder)), f"folder cannot be listed ({e.strerror or e})"))
            continue
        subdirs = []
        for d in items:
            if d.name.startswith("."):
                continue
            try:
                is_dir = d.is_dir()  # follows links; d_type from scandir, no open
            except OSError:
                is_dir = False
            if is_dir:
                if not d.is_symlink():
                    subdirs.append(d.path)
                continue
            if not d.name.endswith(".safetensors") or is_temp_name(d.name):
                continue
            yield d.path
        stack.extend(reversed(subdirs))


def _shown(rel: str) -> str:
    """A relative path as notes show it: each part escaped where it is not printable UTF-8."""
    return os.sep.join(display_name(part) for part in rel.split(os.sep))


class DirectoryIndex(LoraIndex):
    """All ``*.safetensors`` files under a folder (recursively), as the WebUIs list them.

    Headers are read once per file version to learn the architecture. The lock only guards the
    swap of finished results: listing, ``stat`` and header reads happen outside it, so a slow or
    hostile file never holds up another request. A file that cannot be a LoRA (a FIFO, socket,
    device, link loop, dangling link, path through a file, name over NAME_MAX, name that is not
    UTF-8) is skipped with a note (``notes()``, printed once); it never affects the other files.
    """

    def __init__(self, folder: str | os.PathLike, printer: Callable[[str], None] | None = None):
        self.folder = Path(folder).resolve()
        self._lock = threading.Lock()
        self._peeks: dict[str, tuple[tuple[int, ...], LoraEntry]] = {}
        self._entries: dict[str, LoraEntry] | None = None
        self._generation = 0
        self._notes: list[tuple[str, str]] = []
        self._printed: set[tuple[str, str]] = set()
        self._print = printer or (lambda text: print(text, file=sys.stderr, flush=True))

    def refresh(self) -> None:
        with self._lock:
            self._entries = None
            self._generation += 1

    def entries(self) -> dict[str, LoraEntry]:
        with self._lock:
            if self._entries is not None:
                return self._entries
            generation = self._generation
        found, notes = self._scan()  # outside the lock
        with self._lock:
            if generation == self._generation:  # no refresh meanwhile
                self._entries = found
        self._set_notes(notes)
        return found

    def notes(self) -> list[tuple[str, str]]:
        """(file, why it is not listed) for each file the last scan skipped."""
        with self._lock:
            return list(self._notes)

    def _set_notes(self, notes: list[tuple[str, str]]) -> None:
        with self._lock:
            self._notes = notes
            fresh = [n for n in notes if n not in self._printed]
            self._printed.update(fresh)
        for name, reason in fresh:
            self._print(f"NP-LoRA: skipped {name} in the LoRA list: {reason}")

    def _scan(self) -> tuple[dict[str, LoraEntry], list[tuple[str, str]]]:
        found: dict[str, LoraEntry] = {}
        notes: list[tuple[str, str]] = []
        folder = str(self.folder)
        if not self.folder.is_dir():
            return found, notes
        for path in _walk(folder, notes):
            entry = self._entry(path, os.path.relpath(path, folder), notes)
            if entry is not None and entry.name not in found:  # first one wins, like the WebUIs
                found[entry.name] = entry
        return found, notes

    def _entry(self, path: str, rel: str, notes: list[tuple[str, str]]) -> LoraEntry | None:
        """The entry for one file (its header read once per version), or None with a note
        (``rel``: how the note names it)."""
        reason, st = _skip_reason(path, rel)
        if reason is not None:
            notes.append((_shown(rel), reason))
            return None
        version = file_version(st)
        with self._lock:
            cached = self._peeks.get(path)
        if cached and cached[0] == version:
            return cached[1]
        try:
            p = peek(path)  # opens through formats.safetensors_file.open_for_reading: never blocks
            entry = LoraEntry(Path(path).stem, path, p.metadata.get("ss_output_name") or None,
                              p.arch, p.arch_candidates)
        except NpLoraError:  # listed all the same; using it gives the clear error
            entry = LoraEntry(Path(path).stem, path)
        with self._lock:
            self._peeks[path] = (version, entry)
        return entry
