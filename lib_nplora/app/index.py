"""The list of LoRAs a user can pick, and the only way a name becomes a file.

Names are what the WebUIs show and what ``<lora:…>`` accepts: the file stem, or the alias from
the file's ``ss_output_name``. They are looked up in an index, never opened as paths: a name with a
path separator, ``..``, a drive or a NUL is refused before any lookup.

``LoraIndex`` is the interface; ``DirectoryIndex`` scans a folder (standalone mode, tests); each
WebUI host adapter provides one over the host's own LoRA list (``hosts/*``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import NpLoraError
from ..formats.reader import peek
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


def check_name(name: object, what: str = "LoRA name", *, listed: bool = True) -> str:
    """Refuse anything that is not a plain name (paths, traversal, control characters).

    ``listed``: the name must be one of the LoRA list's (the path message says so); False for
    the name of a file still to be written.
    """
    if not isinstance(name, str):
        raise LoraNameError(f"the {what} must be text, got {type(name).__name__}")
    name = name.strip()
    if not name:
        raise LoraNameError(f"the {what} is empty", hint="Pick a LoRA from the list")
    if len(name) > MAX_NAME:
        raise LoraNameError(f"the {what} is longer than {MAX_NAME} characters")
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


class DirectoryIndex(LoraIndex):
    """All ``*.safetensors`` files under a folder (recursively), as the WebUIs list them.

    Headers are read once per file version (path, size, mtime) to learn the architecture.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder).resolve()
        self._lock = threading.Lock()
        self._peeks: dict[str, tuple[tuple[int, int], LoraEntry]] = {}
        self._entries: dict[str, LoraEntry] | None = None

    def refresh(self) -> None:
        with self._lock:
            self._entries = None

    def entries(self) -> dict[str, LoraEntry]:
        with self._lock:
            if self._entries is None:
                self._entries = self._scan()
            return self._entries

    def _scan(self) -> dict[str, LoraEntry]:
        found: dict[str, LoraEntry] = {}
        if not self.folder.is_dir():
            return found
        for root, dirs, files in os.walk(self.folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if f.startswith(".") or not f.endswith(".safetensors") or is_temp_name(f):
                    continue
                path = os.path.join(root, f)
                entry = self._entry(path)
                if entry.name not in found:  # first one wins, like the WebUIs
                    found[entry.name] = entry
        return found

    def _entry(self, path: str) -> LoraEntry:
        try:
            st = os.stat(path)
        except OSError:
            return LoraEntry(Path(path).stem, path)
        version = (st.st_size, st.st_mtime_ns)
        cached = self._peeks.get(path)
        if cached and cached[0] == version:
            return cached[1]
        try:
            p = peek(path)
            entry = LoraEntry(Path(path).stem, path, p.metadata.get("ss_output_name") or None,
                              p.arch, p.arch_candidates)
        except NpLoraError:
            entry = LoraEntry(Path(path).stem, path)
        self._peeks[path] = (version, entry)
        return entry
