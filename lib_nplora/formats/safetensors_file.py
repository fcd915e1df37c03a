"""Reading and writing .safetensors files, safely.

* Pickle-based checkpoints (.pt/.ckpt/.bin/.pth, or a zip/pickle payload under any name) are
  refused: unpickling a downloaded file can run arbitrary code.
* The header is validated before anything is allocated, so a truncated or hostile file gets a
  clear FormatError naming it: size limit (``MAX_HEADER_BYTES``), JSON nesting checked before
  parsing (``MAX_HEADER_DEPTH``, no recursion depth chosen by the file), duplicate keys refused
  (as the safetensors library does), dtypes, shapes and offsets only as non-negative JSON
  integers (no floats, Infinity, NaN, booleans), at most ``MAX_NDIM`` dimensions and
  ``MAX_ELEMENTS`` elements (zero dimensions counted as 1), offsets inside the file, no
  overlaps. Messages never quote the file's bytes (the header length field is not shown;
  tensor keys are escaped and cut by ``untrusted.show``). Parsing holds the header's JSON as
  Python objects: about 10-20 times the header's size, which ``MAX_HEADER_BYTES`` bounds.
* The data section is read with one call into one buffer; tensors are views of it, and the
  SHA-256 of that section (the LoRA hash A1111 and kohya show) is computed from the same bytes.
* Writing streams each tensor's bytes to a temporary file in the target folder, checks the
  result with the safetensors library, then renames it into place (``atomic.atomic_write``); an
  existing file is never replaced unless asked, an input never. A failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import FormatError, MissingFileError, NpLoraError, OutputError, UnsafeFileError
from .atomic import atomic_write, check_output
from .untrusted import UntrustedJSONError, loads_json, show

#: safetensors' own limit on the JSON header.
MAX_HEADER_BYTES = 100_000_000
#: Deepest JSON nesting accepted in a header (a valid one has 3: header, entry, shape list).
MAX_HEADER_DEPTH = 8
#: Most dimensions of one tensor (LoRA tensors have at most 4).
MAX_NDIM = 8
#: Largest element count of a shape with its zero dimensions counted as 1 (a zero-element
#: tensor of shape [0, 10**30] would pass the byte-count check and break torch).
MAX_ELEMENTS = 2 ** 40

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_ITEMSIZE = {d: torch.empty((), dtype=d).element_size() for d in DTYPES.values()}

CONVERT_HINT = ("Convert it to .safetensors with a tool you trust (for example kohya's "
                "sd-scripts or the WebUI's checkpoint merger), then use the .safetensors file")


@dataclass(frozen=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # offset inside the data section
    end: int


@dataclass(frozen=True)
class Header:
    """A validated safetensors header.

    Attributes:
        metadata: the ``__metadata__`` strings.
        tensors: key -> TensorInfo.
        data_offset: where the data section starts in the file (8 + header length).
        file_size: size of the file in bytes.
    """

    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]
    data_offset: int
    file_size: int


def refuse_pickle(path: str | os.PathLike) -> None:
    """Raise UnsafeFileError for a pickle-based checkpoint name."""
    name = os.fspath(path)
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise UnsafeFileError(
            "is a pickle-based checkpoint; loading it would unpickle it, which can run any code "
            "the file contains, so NP-LoRA only reads .safetensors", path=name, hint=CONVERT_HINT)


#: what each kind of file that is not a regular file is called in messages
_NOT_REGULAR = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                (stat.S_ISDIR, "a folder"))

_READ_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


def not_regular(mode: int) -> str | None:
    """What a file of this mode is when it is not a regular file (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _NOT_REGULAR if test(mode)), "not a regular file")


def _refuse_type(path: str, mode: int) -> None:
    what = not_regular(mode)
    if what is not None:
        raise FormatError(f"is {what}, not a regular file; NP-LoRA reads only regular .safetensors files",
                          path=path, hint="Give the path of the LoRA file itself")


def open_error(e: OSError, path: str) -> FormatError:
    """The FormatError for an OSError met opening or reading ``path`` (named, with what to do)."""
    code = e.errno
    if code == errno.ENOENT:
        if os.path.islink(path):
            return FormatError("is a symbolic link to a file that does not exist", path=path,
                               hint="Fix or remove the link")
        return MissingFileError(path)  # its hint says what to check; the app swaps in the list's
    if code == errno.ELOOP:
        return FormatError("is a symbolic link loop (or a chain of too many links)", path=path,
                           hint="Fix or remove the link")
    if code == errno.ENOTDIR:
        return FormatError("cannot be opened: a part of its path is a file, not a folder", path=path,
                           hint="Check the path")
    if code == errno.ENAMETOOLONG:
        return FormatError("has a name or path longer than the system allows (255 bytes per name)",
                           path=path, hint="Use a shorter name")
    if code in (errno.EACCES, errno.EPERM):
        return FormatError("cannot be read (permission denied)", path=path,
                           hint="Check the file's permissions")
    if code == errno.EISDIR:
        return FormatError("is a folder, not a file", path=path, hint="Give the path of the LoRA file itself")
    if code == errno.ENXIO:  # a socket (or a device without its driver)
        return FormatError("is a socket or a device, not a regular file", path=path,
                           hint="Give the path of the LoRA file itself")
    return FormatError(f"cannot be read ({e.strerror or type(e).__name__})", path=path,
                       hint="Check the file and the disk, then try again")


def _checked_path(path: str | bytes | os.PathLike) -> str:
    """The path as text, refused when its file name is not valid UTF-8 or holds a NUL."""
    name = os.fsdecode(path)
    try:
        os.path.basename(name).encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError("has a file name that is not valid UTF-8 text", path=name,
                          hint="Rename the file (LoRA names must be text the WebUI can show)") from None
    if "\0" in name:
        raise FormatError("has a NUL character in its path", path=name, hint="Check the path")
    return name


def open_for_reading(path: str | bytes | os.PathLike):
    """The only way a LoRA file is opened for reading: a binary file object, or a FormatError.

    Never blocks and never follows anything but a regular file: the type is checked with
    ``stat`` first (symbolic links to regular files are fine), the file is opened with
    ``O_NONBLOCK | O_NOCTTY`` (a FIFO swapped in after the check opens at once instead of waiting
    for a writer), checked again with ``fstat`` on the open descriptor, and only then put back in
    blocking mode. Every OSError (missing file, dangling link, link loop, a path through a file,
    a name over NAME_MAX, permission, ...) becomes a FormatError naming the file.
    """
    name = _checked_path(path)
    refuse_pickle(name)
    try:
        mode = os.stat(name).st_mode
    except OSError as e:
        raise open_error(e, name) from None
    _refuse_type(name, mode)
    try:
        fd = os.open(name, _READ_FLAGS)
    except OSError as e:
        raise open_error(e, name) from None
    try:
        _refuse_type(name, os.fstat(fd).st_mode)
        if _READ_FLAGS & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except OSError as e:
        os.close(fd)
        raise open_error(e, name) from None
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def _opened(path):
    """The file opened for reading (``open_for_reading``); an OSError while it is read is a
    FormatError naming it too."""
    f = open_for_reading(path)
    with f:
        try:
            yield f
        except OSError as e:
            if isinstance(e, NpLoraError):
                raise
            raise open_error(e, os.fsdecode(path)) from None


def read_header(path: str | os.PathLike) -> Header:
    """Read and validate the header of a .safetensors file."""
    with _opened(path) as f:
        return _parse_header(f, path, os.fstat(f.fileno()).st_size)


def _parse_header(f, path, size: int) -> Header:
    if size == 0:
        raise FormatError("is empty (0 bytes)", path=path,
                          hint="The download or copy was probably interrupted; get the file again")
    head = f.read(8)
    # A zip (torch.save) or pickle payload under a .safetensors name: its first 8 bytes do not
    # read as a plausible header length, or what follows is not the JSON header.
    looks_pickled = head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03",
                                                                                         b"\x04", b"\x05"))
    n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
    plausible = n is not None and n <= MAX_HEADER_BYTES and 8 + n <= size
    raw = f.read(n) if plausible else b""
    if looks_pickled and not raw.startswith(b"{"):
        raise UnsafeFileError("is a zip/pickle checkpoint renamed to .safetensors; loading it "
                              "would unpickle it, which can run any code", path=path, hint=CONVERT_HINT)
    if n is None:
        raise FormatError(f"is too short to be a safetensors file ({size} bytes)", path=path)
    # The length field is the file's first 8 bytes: never shown (a non-LoRA file's bytes would
    # be echoed as a number).
    if n > MAX_HEADER_BYTES:
        raise FormatError("is not a safetensors file (header length field out of range: over the "
                          f"{MAX_HEADER_BYTES}-byte limit)", path=path)
    if 8 + n > size:
        raise FormatError("is truncated or not a safetensors file (header length field out of range: "
                          "past the end of the file)", path=path, hint="If it is a LoRA, get the file again")
    if len(raw) != n:
        raise FormatError("changed while it was being read", path=path, hint="Try again")
    try:
        header = loads_json(raw, max_depth=MAX_HEADER_DEPTH)
    except UntrustedJSONError as e:
        raise FormatError(f"has a damaged header: {e}", path=path,
                          hint="It is not a safetensors file, or it is corrupt") from None
    if not isinstance(header, dict):
        raise FormatError("has a header that is not a JSON object", path=path)
    meta = header.pop("__metadata__", None)
    meta = {} if meta is None else meta  # the safetensors library accepts a null metadata
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FormatError("has metadata that is not a map of strings", path=path)
    data_size = size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    spans = []
    for key, info in header.items():
        dtype, shape, begin, end = _tensor_entry(info)
        if dtype is None:
            raise FormatError(f"tensor {show(key)} has a malformed header entry (it needs a known dtype, "
                              f"a shape of at most {MAX_NDIM} non-negative integers and two integer "
                              "data_offsets)", path=path)
        if not 0 <= begin <= end <= data_size:
            raise FormatError(f"tensor {show(key)} points outside the file", path=path,
                              hint="The file is truncated or corrupt; get it again")
        numel = 1
        for s in shape:
            numel *= s
        big = 1
        for s in shape:
            big *= max(s, 1)
        if big > MAX_ELEMENTS:
            raise FormatError(f"tensor {show(key)} has a shape with over {MAX_ELEMENTS} elements "
                              "(counting its empty dimensions as 1)", path=path,
                              hint="It is not a valid LoRA file")
        itemsize = _ITEMSIZE[dtype]
        if (end - begin) != numel * itemsize:
            raise FormatError(f"tensor {show(key)} has {end - begin} bytes but its shape {list(shape)} "
                              f"needs {numel * itemsize}", path=path)
        tensors[key] = TensorInfo(dtype, shape, begin, end)
        spans.append((begin, end, key))
    spans.sort(key=lambda s: (s[0], s[1]))
    for (b0, e0, k0), (b1, e1, k1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise FormatError(f"tensors {show(k0)} and {show(k1)} overlap", path=path)
    return Header(dict(meta), tensors, 8 + n, size)


def _is_int(x) -> bool:
    return type(x) is int  # not bool, not float (2.0, 1e3, Infinity, NaN)


def _tensor_entry(info) -> tuple:
    """(dtype, shape, begin, end) of one header entry, or (None, ...) if it is malformed.

    The JSON must hold exactly a dtype name, a list of at most MAX_NDIM non-negative ints and
    two non-negative ints; floats (2.0, 1e3), Infinity/NaN, booleans and strings are refused.
    """
    bad = (None, (), 0, 0)
    if not isinstance(info, dict):
        return bad
    dtype = DTYPES.get(info.get("dtype")) if isinstance(info.get("dtype"), str) else None
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if dtype is None or not isinstance(shape, list) or not isinstance(offsets, list):
        return bad
    if len(shape) > MAX_NDIM or not all(_is_int(s) and s >= 0 for s in shape):
        return bad
    if len(offsets) != 2 or not all(_is_int(o) and o >= 0 for o in offsets):
        return bad
    return dtype, tuple(shape), offsets[0], offsets[1]


def read_file(path: str | os.PathLike) -> tuple[Header, dict[str, torch.Tensor], str]:
    """Read a whole .safetensors file.

    Returns:
        (header, tensors, sha256 of the data section). Tensors are CPU views of one buffer.
    """
    with _opened(path) as f:
        size = os.fstat(f.fileno()).st_size
        header = _parse_header(f, path, size)
        buf = bytearray(size - header.data_offset)
        got = f.readinto(buf)
    if got != len(buf):
        raise FormatError("changed while it was being read", path=path, hint="Try again")
    digest = hashlib.sha256(buf).hexdigest()
    tensors = {}
    for key, info in header.tensors.items():
        tensors[key] = _view(buf, info)
    return header, tensors, digest


def _view(buf: bytearray, info: TensorInfo) -> torch.Tensor:
    numel = 1
    for s in info.shape:
        numel *= s
    if numel == 0:
        return torch.empty(info.shape, dtype=info.dtype)
    itemsize = info.end - info.begin
    itemsize //= numel
    if info.begin % itemsize:
        # misaligned: copy out (rare; safetensors writers align tensors)
        t = torch.frombuffer(bytearray(buf[info.begin:info.end]), dtype=info.dtype)
    else:
        t = torch.frombuffer(buf, dtype=info.dtype, count=numel, offset=info.begin)
    return t.reshape(info.shape)


def data_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of the bytes after the header (A1111's and kohya's LoRA hash)."""
    h = hashlib.sha256()
    with _opened(path) as f:
        header = _parse_header(f, path, os.fstat(f.fileno()).st_size)
        f.seek(header.data_offset)
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- writing


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(t.view(torch.uint8).numpy())


def write_file(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
               metadata: dict[str, str] | None = None, *, overwrite: bool = False,
               inputs=()) -> str:
    """Write ``tensors`` (in this order) and ``metadata`` to ``path`` atomically
    (``formats.atomic.atomic_write``: random temporary name created exclusively, umask mode,
    checked with the safetensors library, then committed).

    Args:
        path: destination; its folder must exist.
        tensors: key -> tensor (any device; copied to CPU one at a time).
        metadata: string -> string header metadata.
        overwrite: replace an existing file (never one of ``inputs``).
        inputs: the files read to make this one (paths or (label, path) pairs); the output is
            never one of them.

    Returns:
        SHA-256 of the data section written.

    Raises:
        OutputIsInputError: ``path`` is one of ``inputs`` (whatever ``overwrite`` says).
        OutputExistsError: the file exists and ``overwrite`` is False.
        OutputError: it could not be written; no partial file is left.
    """
    path = check_output(path, inputs=inputs, overwrite=overwrite)
    entries = {}
    offset = 0
    for key, t in tensors.items():
        if t.dtype not in DTYPE_NAMES:
            raise OutputError(f"tensor {key!r} has unsupported dtype {t.dtype}", path=path)
        nbytes = t.numel() * t.element_size()
        entries[key] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    head = {"__metadata__": dict(metadata or {})} if metadata else {}
    head.update(entries)
    raw = json.dumps(head, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    digest = hashlib.sha256()

    def chunks():
        yield struct.pack("<Q", len(raw))
        yield raw
        for t in tensors.values():
            mv = _tensor_bytes(t)
            digest.update(mv)
            yield mv

    atomic_write(path, chunks(), overwrite=overwrite, inputs=inputs,
                 verify=lambda tmp: _check_written(tmp, path))
    return digest.hexdigest()


def _check_written(tmp_name: str, path: Path) -> None:
    """Open the finished temporary file with the safetensors library itself."""
    from safetensors import safe_open

    try:
        with safe_open(tmp_name, framework="pt") as f:
            f.keys()
    except Exception as e:  # the library's own error type differs between versions
        raise OutputError(f"was written but does not read back ({e})", path=path) from None
