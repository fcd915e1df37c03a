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

from ..analysis import Analysis, analyze_set
from ..cache import Caches
from ..cache import shared as shared_caches
from ..errors import MissingFileError, NpLoraError
from ..formats.atomic import check_output, labelled_inputs
from ..formats.writer import SavedFile, save_fused
from ..fused import FusedLora
from ..fusion.merge import Progress, fuse_set
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
    """``dog+ink_nplora_mu0.5`` (several: ``dog+hat+ink+oil_nplora_mu0.5``; weights left out)."""
    p = request.params
    how = p.label(compact=True)
    k = f"_k{p.k}" if p.k is not None else ""
    blocks = "_blocks" if p.block_mu else ""
    names = "+".join(n for n, _ in request.contents + request.styles)
    return f"{names}_nplora_{how}{k}{blocks}".replace("/", "_")


class FusionService:
    """Resolve names, fuse, analyze and save, through one set of caches."""

    def __init__(self, caches: Caches | None = None):
        self.caches = caches or shared_caches

    def inputs(self, index: LoraIndex, request: FusionRequest) -> tuple[LoraEntry, LoraEntry]:
        """The first content's and the first style's entries (``entries`` lists every input)."""
        contents, styles = self.entries(index, request)
        return contents[0], styles[0]

    def entries(self, index: LoraIndex, request: FusionRequest) -> tuple[list[LoraEntry], list[LoraEntry]]:
        """Every input's entry: the contents', then the styles'. With several, the label names the place."""
        def resolve(refs, what):
            many = len(refs) > 1
            return [index.resolve(n, f"{what} {i + 1}" if many else what) for i, (n, _) in enumerate(refs)]
        return resolve(request.contents, "content LoRA"), resolve(request.styles, "style LoRA")

    def labelled(self, index: LoraIndex, request: FusionRequest) -> list[tuple[str, str]]:
        """(label, path) of every input, for ``check_output``."""
        contents, styles = self.entries(index, request)
        if len(contents) == len(styles) == 1:
            return labelled_inputs(contents[0].path, styles[0].path)
        return [(f"content LoRA {e.name}", e.path) for e in contents] + [(f"style LoRA {e.name}", e.path)
                                                                        for e in styles]

    def load_inputs(self, index: LoraIndex, request: FusionRequest, arch: str | None = None):
        """The first content and the first style (``LoraSet``s) read through the cache (``load_all``
        reads all, with their weights)."""
        contents, styles = self.load_all(index, request, arch)
        return contents[0][0], styles[0][0]

    def load_all(self, index: LoraIndex, request: FusionRequest, arch: str | None = None):
        """Every input read through the cache, for ``arch`` when given (the loaded model's):
        ([(content, own weight)], [(style, own weight)]).

        A file that fits several architectures (a CLIP-L-only LoRA fits SD1, SDXL and FLUX) must
        be read for the model it is applied to, not for the library's preferred one.

        Raises:
            ArchitectureError: a file does not fit ``arch`` (names the file).
        """
        c_entries, s_entries = self.entries(index, request)
        try:
            if len(c_entries) == len(s_entries) == 1:
                loras = list(self.caches.load_pair(c_entries[0].path, s_entries[0].path, arch))
            else:
                loras = self.caches.load_set([e.path for e in c_entries + s_entries], arch)
        except MissingFileError as e:  # the name came from the LoRA list: the list is out of date
            raise e.listed() from None
        weights = [w for _, w in request.contents + request.styles]
        n = len(c_entries)
        return list(zip(loras[:n], weights[:n])), list(zip(loras[n:], weights[n:]))

    def fuse(self, index: LoraIndex, request: FusionRequest, *, device=None,
             dtype: torch.dtype = torch.float16, progress: Progress | None = None,
             arch: str | None = None) -> FusedLora:
        """The fused LoRA for ``request`` (cached).

        Args:
            arch: read both inputs for this architecture (the loaded model's); None = the
                architecture both files fit best.
        """
        contents, styles = self.load_all(index, request, arch)
        key = ("fused", tuple((lo.sha256, w) for lo, w in contents), tuple((lo.sha256, w) for lo, w in styles),
               contents[0][0].arch, request.params, str(device), str(dtype))

        def make():
            fused = fuse_set(contents, styles, request.params, device=device, dtype=dtype,
                             out_device=device or "cpu", cache=self.caches, progress=progress)
            release_free_memory()  # the batch buffers just freed
            return fused, fused.nbytes()

        return self.caches.memo(key, make)

    def analyze(self, index: LoraIndex, request: FusionRequest, *, device=None) -> Analysis:
        contents, styles = self.load_all(index, request)
        result = analyze_set(contents, styles, request.params, device=device, cache=self.caches)
        release_free_memory()
        return result

    def save(self, index: LoraIndex, request: FusionRequest, name: str, *, overwrite: bool = False,
             dtype: torch.dtype = torch.float16, device=None, progress: Progress | None = None) -> SavedFile:
        """Fuse and write ``<LoRA folder>/<name>.safetensors``; the index is refreshed after.

        Raises:
            OutputIsInputError: the name is one of the inputs' files (or a link to one),
                whatever ``overwrite`` says.
            OutputExistsError: the file exists and ``overwrite`` is False.
        """
        path = output_path(index, name)
        # never onto an input (whatever ``overwrite``), never over a file unless asked
        check_output(path, inputs=self.labelled(index, request), overwrite=overwrite, exists_hint=EXISTS_HINT)
        contents, styles = self.load_all(index, request)
        fused = self.fuse(index, request, device=device, dtype=dtype, progress=progress)
        saved = save_fused(fused, path, output_name=path.stem, overwrite=overwrite,
                           content_meta=contents[0][0].metadata, style_meta=styles[0][0].metadata,
                           input_meta=[lo.metadata for lo, _ in contents + styles])
        index.refresh()
        return saved
