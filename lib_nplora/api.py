"""The library's front door: files in, fused LoRA (in memory or on disk) or analysis out.

The CLI, the WebUI extension, the tab and the REST API all call these functions::

    content, style = load_pair(content_path, style_path)         # files -> canonical LoRAs
    fused = fuse(content, style, FuseParams(mu=0.5))              # -> fused low-rank modules
    save_fused(fused, "out.safetensors")                          # -> kohya file
"""

from __future__ import annotations

import os

import torch

from .analysis import Analysis, analyze, analyze_set
from .cache import Caches
from .devices import resolve_device
from .errors import ParameterError
from .formats.atomic import check_output, labelled_inputs
from .formats.reader import load_lora, load_pair
from .formats.writer import OUTPUT_DTYPES, SavedFile, save_fused
from .fused import FusedLora
from .fusion.merge import Progress, fuse, fuse_set
from .params import FuseParams

__all__ = ["FuseParams", "load_lora", "load_pair", "fuse", "fuse_set", "save_fused", "analyze", "analyze_set",
           "fuse_files", "fuse_file_sets", "analyze_files", "analyze_file_sets", "resolve_device", "output_dtype"]


def output_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return OUTPUT_DTYPES[name]
    except KeyError:
        raise ParameterError(f"unknown output dtype {name!r}",
                             hint=f"Use one of {', '.join(OUTPUT_DTYPES)}") from None


def _pair(content_path, style_path, cache: Caches | None, arch: str | None = None):
    return load_pair(content_path, style_path, arch=arch, load=cache.load if cache else None)


def fuse_files(content_path: str | os.PathLike, style_path: str | os.PathLike,
               output_path: str | os.PathLike, params: FuseParams | None = None, *,
               dtype: str | torch.dtype = "fp16", device: str | torch.device | None = "auto",
               overwrite: bool = False, output_name: str | None = None, cache: Caches | None = None,
               progress: Progress | None = None) -> tuple[FusedLora, SavedFile]:
    """Read both files, fuse them and write the result (atomically; ``output_path`` is never one
    of the inputs, even through a hard link or a symlink, whatever ``overwrite`` says).

    Returns:
        (the fusion result, what was written).
    """
    return fuse_file_sets([(content_path, 1.0)], [(style_path, 1.0)], output_path, params, dtype=dtype,
                          device=device, overwrite=overwrite, output_name=output_name, cache=cache, progress=progress)


def analyze_files(content_path, style_path, params: FuseParams | None = None, *,
                  device: str | torch.device | None = "auto", cache: Caches | None = None) -> Analysis:
    """Read both files and analyze how the content overlaps the style's subspace."""
    return analyze_file_sets([(content_path, 1.0)], [(style_path, 1.0)], params, device=device, cache=cache)


def _sets(contents, styles, cache: Caches | None, arch: str | None = None):
    """(path, weight) lists -> ([(LoraSet, weight)], [(LoraSet, weight)]) read for one architecture,
    ``arch`` when given (a pair by ``load_pair``, several by ``Caches.load_set``: the same rule)."""
    if len(contents) == len(styles) == 1:
        loads = list(_pair(contents[0][0], styles[0][0], cache, arch))
    else:
        loads = (cache or Caches(max_bytes=0)).load_set([p for p, _ in list(contents) + list(styles)], arch)
    n = len(contents)
    return (list(zip(loads[:n], [w for _, w in contents])), list(zip(loads[n:], [w for _, w in styles])))


def labelled_sets(contents, styles) -> list[tuple[str, str | os.PathLike]]:
    """(label, path) of every input, for ``check_output`` (a pair: ``labelled_inputs``')."""
    if len(contents) == len(styles) == 1:
        return labelled_inputs(contents[0][0], styles[0][0])
    return ([(f"content LoRA {i + 1}", p) for i, (p, _) in enumerate(contents)]
            + [(f"style LoRA {j + 1}", p) for j, (p, _) in enumerate(styles)])


def fuse_file_sets(contents: list[tuple[str | os.PathLike, float]], styles: list[tuple[str | os.PathLike, float]],
                   output_path: str | os.PathLike, params: FuseParams | None = None, *,
                   dtype: str | torch.dtype = "fp16", device: str | torch.device | None = "auto",
                   overwrite: bool = False, output_name: str | None = None, cache: Caches | None = None,
                   progress: Progress | None = None, arch: str | None = None) -> tuple[FusedLora, SavedFile]:
    """``fuse_files`` for several contents and styles, each (path, own weight) (``fusion.merge.fuse_set``;
    one of each with weight 1 is the pair fusion, bit for bit). ``arch``: read every file for this
    architecture (``arch.ARCH_NAMES``); None: the one they all fit (``formats.reader.common_arch``)."""
    params = params or FuseParams()
    dt = output_dtype(dtype)
    dev = resolve_device(device)
    check_output(output_path, inputs=labelled_sets(contents, styles), overwrite=overwrite)
    c_sets, s_sets = _sets(contents, styles, cache, arch)
    fused = fuse_set(c_sets, s_sets, params, device=dev, dtype=dt, cache=cache, progress=progress)
    saved = save_fused(fused, output_path, output_name=output_name, overwrite=overwrite,
                       content_meta=c_sets[0][0].metadata, style_meta=s_sets[0][0].metadata,
                       input_meta=[lo.metadata for lo, _ in c_sets + s_sets])
    return fused, saved


def analyze_file_sets(contents, styles, params: FuseParams | None = None, *,
                      device: str | torch.device | None = "auto", cache: Caches | None = None,
                      arch: str | None = None) -> Analysis:
    """``analyze_files`` for several contents and styles, each (path, own weight); ``arch`` as
    ``fuse_file_sets``'."""
    dev = resolve_device(device)
    c_sets, s_sets = _sets(contents, styles, cache, arch)
    return analyze_set(c_sets, s_sets, params, device=dev, cache=cache)
