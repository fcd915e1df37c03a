"""Fusion for the extension, the tab and the REST API: names in, fused LoRA / analysis / saved
file out, with every step cached.

* The inputs go through ``lib_nplora.cache`` (files by path + device, inode, size, mtime and
  ctime; style bases by file hash and k), so a new mu or weight costs only the projection.
* Fused results are kept by (input versions, parameters, device, dtype) in the same byte-bounded
  cache: generating again with the same settings costs nothing.
* Saving writes into the index's folder under a checked file name, atomically, never over an
  existing file unless asked and never over either input (``formats.atomic.check_output``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..analysis import Analysis, analyze
from ..cache import Caches
from ..cache import shared as shared_caches
from ..errors import MissingFileError, NpLoraError
from ..formats.atomic import check_output, labelled_inputs
from ..formats.writer import SavedFile, save_fused
from ..fused import FusedLora
from ..fusion.merge import Progress, fuse
from ..memory import release_free_memory
from .index import LoraEntry, LoraIndex, LoraNameError, check_name
from .request import FusionRequest


class OutputNameError(NpLoraError, ValueError):
    """A bad file name for a fused LoRA."""


EXISTS_HINT = "Choose another name, or confirm overwriting"

_BAD_CHARS = re.compile(r'[<>:"|?*\x00-\x1f]')


def output_path(index: LoraIndex, name: str) -> Path:
    """Where a fused LoRA called ``name`` goes: ``<LoRA folder>/<name>.safetensors``.

    Raises:
        OutputNameError: empty, a path, reserved characters, or it would leave the folder.
    """
    if not isinstance(name, str) or not name.strip():
        raise OutputNameError("the file name is empty", hint="Type a name for the fused LoRA")
    name = name.strip()
    if name.lower().endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    try:
        check_name(name, "file name", listed=False)
    except LoraNameError as e:
        raise OutputNameError(e.problem, hint="Type a plain file name, without folders") from None
    if _BAD_CHARS.search(name) or name.startswith(".") or name.endswith((" ", ".")):
        raise OutputNameError(f"the file name {name!r} has characters a file name cannot have",
                              hint="Use letters, digits, spaces, '-' and '_'")
    folder = Path(index.folder).resolve()
    path = (folder / f"{name}.safetensors").resolve()
    if path.parent != folder:
        raise OutputNameError(f"the file name {name!r} would leave the LoRA folder")
    return path


def default_output_name(request: FusionRequest) -> str:
    p = request.params
    how = p.label(compact=True)
    k = f"_k{p.k}" if p.k is not None else ""
    return f"{request.content}+{request.style}_nplora_{how}{k}".replace("/", "_")


class FusionService:
    """Resolve names, fuse, analyze and save, through one set of caches."""

    def __init__(self, caches: Caches | None = None):
        self.caches = caches or shared_caches

    def inputs(self, index: LoraIndex, request: FusionRequest) -> tuple[LoraEntry, LoraEntry]:
        return index.resolve(request.content, "content LoRA"), index.resolve(request.style, "style LoRA")

    def load_inputs(self, index: LoraIndex, request: FusionRequest, arch: str | None = None):
        """The two inputs read through the cache, for ``arch`` when given (the loaded model's).

        A file that fits several architectures (a CLIP-L-only LoRA fits SD1, SDXL and FLUX) must
        be read for the model it is applied to, not for the library's preferred one.

        Raises:
            ArchitectureError: a file does not fit ``arch`` (names the file).
        """
        c_entry, s_entry = self.inputs(index, request)
        try:
            return self.caches.load_pair(c_entry.path, s_entry.path, arch)
        except MissingFileError as e:  # the name came from the LoRA list: the list is out of date
            raise e.listed() from None

    def fuse(self, index: LoraIndex, request: FusionRequest, *, device=None,
             dtype: torch.dtype = torch.float16, progress: Progress | None = None,
             arch: str | None = None) -> FusedLora:
        """The fused LoRA for ``request`` (cached).

        Args:
            arch: read both inputs for this architecture (the loaded model's); None = the
                architecture both files fit best.
        """
        content, style = self.load_inputs(index, request, arch)
        key = ("fused", content.sha256, style.sha256, content.arch, request.params, str(device), str(dtype))

        def make():
            fused = fuse(content, style, request.params, device=device, dtype=dtype,
                         out_device=device or "cpu", cache=self.caches, progress=progress)
            release_free_memory()  # the batch buffers just freed
            return fused, fused.nbytes()

        return self.caches.memo(key, make)

    def analyze(self, index: LoraIndex, request: FusionRequest, *, device=None) -> Analysis:
        content, style = self.load_inputs(index, request)
        result = analyze(content, style, request.params, device=device, cache=self.caches)
        release_free_memory()
        return result

    def save(self, index: LoraIndex, request: FusionRequest, name: str, *, overwrite: bool = False,
             dtype: torch.dtype = torch.float16, device=None, progress: Progress | None = None) -> SavedFile:
        """Fuse and write ``<LoRA folder>/<name>.safetensors``; the index is refreshed after.

        Raises:
            OutputIsInputError: the name is one of the two inputs' files (or a link to one),
                whatever ``overwrite`` says.
            OutputExistsError: the file exists and ``overwrite`` is False.
        """
        c_entry, s_entry = self.inputs(index, request)
        path = output_path(index, name)
        # never onto an input (whatever ``overwrite``), never over a file unless asked
        check_output(path, inputs=labelled_inputs(c_entry.path, s_entry.path), overwrite=overwrite,
                     exists_hint=EXISTS_HINT)
        content, style = self.load_inputs(index, request)
        fused = self.fuse(index, request, device=device, dtype=dtype, progress=progress)
        saved = save_fused(fused, path, output_name=path.stem, overwrite=overwrite,
                           content_meta=content.metadata, style_meta=style.metadata)
        index.refresh()
        return saved
