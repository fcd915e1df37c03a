"""Writing output files so that no file is ever lost: the one place every writer goes through.

Used by the fused-file writer (``safetensors_file.write_file``), the CLI's ``analyze --json``
report, ``api.fuse_files`` and ``app.service.FusionService.save`` (REST and tab).

* **An output is never one of the inputs**, whatever ``overwrite`` says (``check_output``): the
  same resolved path, or the same file (``(st_dev, st_ino)``) through a hard link or a symlink.
* **An existing file is kept** unless ``overwrite``; a folder is never a target.
* **Temporary file**: ``.nplora-<16 random hex>.tmp`` in the target's folder, created with
  ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a planted symlink at any name is never followed: the create
  fails and another random name is tried). The name does not derive from the output's, so a
  legal 255-byte output name works. It is removed on every failure (disk full, unreadable
  result, the target is a folder).
* **Mode**: what the user's umask gives (``0o666 & ~umask``: 0644 under umask 022), not
  mkstemp's 0600, set with ``fchmod`` before the rename.
* **Commit**: without ``overwrite`` by ``link`` (fails if the name exists: no race with another
  writer), with it by ``rename``; either way the target's folder entry changes atomically, and
  a reader never sees half a file.
* **Left-overs**: a process killed mid-write leaves its temporary file; ``is_temp_name`` lets the
  LoRA list ignore it, and the next write into that folder removes such files (regular files
  only, never symlinks, ours only) once they are older than ``STALE_AFTER_S``.

``file_version`` is the identity of a file's content for caches (see its docstring).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import NpLoraError, OutputError, OutputExistsError, OutputIsInputError

TEMP_PREFIX = ".nplora-"
TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\.nplora-[0-9a-f]{16}\.tmp")
#: a temporary file untouched this long belongs to a process that died (a live writer touches
#: its file at every write, and the last steps after the final write take seconds)
STALE_AFTER_S = 3600.0
_CREATE_TRIES = 16
_COALESCE = 1 << 16
EXISTS_HINT = "Choose another name, or allow overwriting (--force)"
_INPUT_HINT = "Choose another name for the output; an input is never overwritten, even with overwriting allowed"


def is_temp_name(name: str | os.PathLike) -> bool:
    """True for the name (or path) of one of our temporary files: ``.nplora-<16 hex>.tmp``."""
    return _TEMP_NAME.fullmatch(os.path.basename(os.fspath(name))) is not None


def file_version(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What must change whenever a file's content can have changed: (st_dev, st_ino, size,
    mtime_ns, ctime_ns).

    Size and mtime alone are not enough: a file replaced by another of the same size whose mtime
    was set back (``os.utime``, ``cp -p``, ``rsync -t``, an unpacked archive) looks unchanged.
    Replacing it by rename gives a new inode; rewriting it in place, or any ``utime``, sets the
    ctime to now, and no system call lets a user set the ctime back. (Only a rewrite within the
    file system's timestamp granularity of the previous look could go unseen.)
    """
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True if ``a`` and ``b`` name the same file: equal resolved paths, or (both existing) the
    same (st_dev, st_ino), so a hard link or a symlink to the file counts as the file."""
    try:
        a, b = os.fspath(a), os.fspath(b)
    except TypeError:
        return False
    if not a or not b:
        return False
    try:
        if os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b)):
            return True
    except (OSError, ValueError):
        pass
    try:
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return sa.st_ino != 0 and (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


#: paths, or (label, path) pairs such as ("content LoRA", path)
Inputs = Iterable


def _labelled(inputs: Inputs) -> list[tuple[str, str]]:
    out = []
    for item in inputs or ():
        if isinstance(item, tuple):
            label, p = item
        else:
            label, p = "input", item
        if p is not None and os.fspath(p):
            out.append((label, os.fspath(p)))
    return out


def check_output(path: str | os.PathLike, *, inputs: Inputs = (), overwrite: bool = False,
                 exists_hint: str = EXISTS_HINT) -> Path:
    """Refuse an output that cannot be written without losing a file; returns it as a Path.

    Args:
        inputs: the files being read: paths, or (label, path) pairs such as
            ("content LoRA", path) for the message.
        overwrite: allow replacing an existing file that is not an input.
        exists_hint: what to do when the file exists (the caller's word for overwriting).

    Raises:
        OutputIsInputError: the output is one of the inputs (any ``overwrite``).
        OutputError: it is a folder, or its folder does not exist.
        OutputExistsError: it exists and ``overwrite`` is False.
    """
    path = Path(path)
    try:
        _check_output(path, _labelled(inputs), overwrite, exists_hint)
    except NpLoraError:
        raise
    except (OSError, ValueError) as e:  # a name too long, a NUL in it, no permission to look
        raise OutputError(f"cannot be written ({getattr(e, 'strerror', None) or e})", path=path) from None
    return path


def _check_output(path: Path, inputs: list[tuple[str, str]], overwrite: bool, exists_hint: str) -> None:
    for label, p in inputs:
        if same_file(path, p):
            what = f"the {label}" if label != "input" else "an input"
            raise OutputIsInputError(f"is {what} ({os.path.basename(p)}); writing the output there would destroy it",
                                     path=path, hint=_INPUT_HINT)
    if path.is_dir():
        raise OutputError("is a folder", path=path, hint="Give the output a file name")
    if not overwrite and (path.exists() or path.is_symlink()):
        raise OutputExistsError("already exists", path=path, hint=exists_hint)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError("cannot be written: its folder does not exist", path=path)


_FALLBACK_UMASK: int | None = None


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows.

    Linux: the ``Umask:`` line of /proc/self/status (thread-safe, reflects the current value).
    Elsewhere: read once, by setting and restoring it, the first time it is needed.
    """
    global _FALLBACK_UMASK
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    if _FALLBACK_UMASK is None:
        old = os.umask(0o022)
        os.umask(old)
        _FALLBACK_UMASK = old
    return _FALLBACK_UMASK


def sweep_stale_temps(folder: str | os.PathLike, *, older_than_s: float = STALE_AFTER_S) -> int:
    """Remove our temporary files in ``folder`` left by killed processes; returns how many.

    Only names matching ``is_temp_name``, only regular files (a symlink is never followed nor
    removed), only ours (same owner), only those not modified for ``older_than_s`` seconds.
    """
    removed = 0
    now = time.time()
    uid = os.getuid() if hasattr(os, "getuid") else None
    try:
        it = os.scandir(folder)
    except OSError:
        return 0
    with it:
        for entry in it:
            if not is_temp_name(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or (uid is not None and st.st_uid != uid):
                    continue
                if now - st.st_mtime < older_than_s:
                    continue
                os.unlink(entry.path)
                removed += 1
            except OSError:
                continue
    return removed


def _create_temp(folder: Path) -> tuple[int, str]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(_CREATE_TRIES):
        name = os.path.join(folder, f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}")
        try:
            return os.open(name, flags, 0o600), name
        except FileExistsError:
            continue  # taken, or something planted there: never touch it, draw another name
    raise OutputError(f"no free temporary file name after {_CREATE_TRIES} tries", path=folder)


def _write_all(fd: int, data) -> None:
    """``os.write`` until all of ``data`` is written (a write may be partial)."""
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _commit(tmp_name: str, path: Path, overwrite: bool, exists_hint: str) -> None:
    if overwrite:
        os.replace(tmp_name, path)
        return
    try:
        os.link(tmp_name, path)  # atomic, fails if the name exists
    except FileExistsError:
        raise OutputExistsError("already exists", path=path, hint=exists_hint) from None
    except OSError:
        # file systems without hard links: check, then rename
        if path.exists() or path.is_symlink():
            raise OutputExistsError("already exists", path=path, hint=exists_hint) from None
        os.replace(tmp_name, path)
        return
    os.unlink(tmp_name)


def _sync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, chunks: Iterable, *, overwrite: bool = False,
                 inputs: Inputs = (), verify: Callable[[str], None] | None = None,
                 exists_hint: str = EXISTS_HINT) -> Path:
    """Write ``chunks`` (bytes-like, in order) to ``path`` so that nothing is lost or half-written.

    Args:
        chunks: the content; a generator is consumed while writing (nothing is held whole).
        overwrite: replace an existing file (never an input, never a folder).
        inputs: files that must not be the output (see ``check_output``).
        verify: called with the finished temporary file's path before the commit; raise to refuse.

    Raises:
        OutputIsInputError, OutputExistsError, OutputError: as ``check_output``; OutputError when
        writing fails (disk full, permission...). No temporary file is left behind.
    """
    inputs = _labelled(inputs)
    path = check_output(path, inputs=inputs, overwrite=overwrite, exists_hint=exists_hint)
    folder = path.parent if str(path.parent) else Path(".")
    sweep_stale_temps(folder)
    tmp_name = None
    try:
        fd, tmp_name = _create_temp(folder)
        try:
            small = bytearray()  # many tiny chunks (alphas, biases) go out in one write
            for chunk in chunks:
                view = memoryview(chunk).cast("B")
                if len(view) < _COALESCE:
                    small += view
                    if len(small) < _COALESCE:
                        continue
                    view, small = memoryview(small), bytearray()
                elif small:
                    _write_all(fd, small)
                    small = bytearray()
                _write_all(fd, view)
            if small:
                _write_all(fd, small)
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o666 & ~current_umask())
            os.fsync(fd)
        finally:
            os.close(fd)
        if verify is not None:
            verify(tmp_name)
        # the inputs may have moved since the first check: look again just before the commit
        check_output(path, inputs=inputs, overwrite=overwrite, exists_hint=exists_hint)
        _commit(tmp_name, path, overwrite, exists_hint)
        tmp_name = None
        _sync_folder(folder)
    except OSError as e:
        if isinstance(e, NpLoraError):  # OutputError, OutputExistsError, OutputIsInputError
            raise
        if e.errno == errno.EISDIR or os.path.isdir(path):
            raise OutputError("is a folder", path=path, hint="Give the output a file name") from None
        raise OutputError(f"cannot be written ({e.strerror or e})", path=path) from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    return path


def labelled_inputs(content: str | os.PathLike | None, style: str | os.PathLike | None
                    ) -> list[tuple[str, str | os.PathLike]]:
    """The (label, path) pairs of a content/style pair, for ``check_output``."""
    return [(label, p) for label, p in (("content LoRA", content), ("style LoRA", style)) if p]


__all__ = ["atomic_write", "check_output", "current_umask", "file_version", "is_temp_name",
           "labelled_inputs", "same_file", "sweep_stale_temps"]
