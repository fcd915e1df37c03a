"""Bounded, thread-safe caches that make repeated fusions cheap.

* Loaded LoRA files (``LoraSet``), keyed by (real path, ``formats.atomic.file_version``,
  architecture); the key is re-checked with ``os.stat`` on every use, so an edited or replaced
  file is read again. The version is (device, inode, size, mtime, ctime): size and mtime alone
  miss a file replaced by one of the same size with its mtime set back (``os.utime``,
  ``cp -p``, ``rsync -t``); the ctime cannot be set back by any call, and a replacement by
  rename has a new inode.
* Style bases (``ModuleBasis`` per module), keyed by the style file's content hash, its
  architecture, k / energy and the device; for several styles, by every style's hash and own
  weight (the joint update's subspace depends on their ratios). A new mu, per-block mu or
  content weight reuses them and costs only the projection.

Both live under one byte limit, evicted least-recently-used first; an entry larger than the
whole limit is used but not kept. Two threads asking for the same missing entry wait for one
computation instead of doing it twice.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch

from .formats.atomic import file_version
from . import arch as archmod
from .formats.reader import common_arch, load_lora, load_pair
from .fusion.basis import ModuleBasis, compute_bases, compute_joint_bases
from .lora import LoraSet

DEFAULT_MAX_BYTES = 2 << 30


@dataclass
class CacheStats:
    entries: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int

    def to_dict(self) -> dict:
        return self.__dict__.copy()


class Caches:
    """The LoRA-file cache and the style-basis cache, under one byte limit."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = int(max_bytes)
        self._lock = threading.RLock()
        self._entries: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[Hashable, threading.Lock] = {}
        self.hits = 0
        self.misses = 0
        #: how many module bases (style subspaces) were computed so far, not found kept
        self.bases_computed = 0

    # ------------------------------------------------------------------ generic LRU
    def _get(self, key: Hashable):
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return hit[0]
            return None

    def _put(self, key: Hashable, value: object, nbytes: int) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if nbytes > self.max_bytes:
                return
            self._entries[key] = (value, nbytes)
            self._bytes += nbytes
            self._evict()

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._entries:
            _, (_, n) = self._entries.popitem(last=False)
            self._bytes -= n

    def memo(self, key: Hashable, make: Callable[[], tuple[object, int]]):
        """Get ``key`` or compute it once (``make() -> (value, nbytes)``), even when several
        threads ask at the same time."""
        value = self._get(key)
        if value is not None:
            return value
        with self._lock:
            gate = self._inflight.setdefault(key, threading.Lock())
        with gate:
            value = self._get(key)
            if value is not None:
                return value
            with self._lock:
                self.misses += 1
            value, nbytes = make()
            self._put(key, value, nbytes)
        with self._lock:
            self._inflight.pop(key, None)
        return value

    # ------------------------------------------------------------------ public
    def set_max_bytes(self, max_bytes: int) -> None:
        with self._lock:
            self.max_bytes = int(max_bytes)
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._entries), self._bytes, self.max_bytes, self.hits, self.misses)

    def load(self, path: str | os.PathLike, arch: str | None = None) -> LoraSet:
        """``formats.reader.load_lora`` through the cache."""
        real = os.path.realpath(os.fspath(path))
        try:
            st = os.stat(real)
            key = ("lora", real, file_version(st), arch)
        except OSError:
            return load_lora(path, arch=arch)  # let the reader raise its clear error

        def make():
            lora = load_lora(path, arch=arch)
            return lora, lora.nbytes()

        return self.memo(key, make)

    def load_pair(self, content_path, style_path, arch: str | None = None) -> tuple[LoraSet, LoraSet]:
        """``formats.reader.load_pair`` through the cache."""
        return load_pair(content_path, style_path, arch=arch, load=self.load)

    def basis_key(self, lora: LoraSet, k, energy, device):
        """The identity of one style's bases."""
        return ("basis", lora.sha256, lora.arch, k, energy, str(device))

    def joint_key(self, styles, k, energy, device):
        """Several styles: their hashes and own weights (their ratios shape the joint update)."""
        return ("joint", tuple((lora.sha256, lora.arch, float(w)) for lora, w in styles), k, energy, str(device))

    def _lookup_bases(self, key) -> dict[str, ModuleBasis]:
        """The cached bases under ``key``; empty if none."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                self.misses += 1
                return {}
            self._entries.move_to_end(key)
            self.hits += 1
            return dict(hit[0])

    def _store_bases(self, key, new: dict[str, ModuleBasis]) -> None:
        """Add computed bases to the entry under ``key``."""
        with self._lock:
            hit = self._entries.get(key)
            merged = dict(hit[0]) if hit is not None else {}
            merged.update(new)
            self._put(key, merged, sum(b.nbytes() for b in merged.values()))

    def _bases(self, key, names, compute) -> dict[str, ModuleBasis]:
        have = self._lookup_bases(key)
        missing = [n for n in names if n not in have]
        if missing:
            new = compute(missing)
            self._store_bases(key, new)
            have.update(new)
        return have

    def bases(self, lora: LoraSet, names, k, energy, device) -> dict[str, ModuleBasis]:
        """Style bases for ``names`` of ``lora``, computing (and keeping) only the missing ones.

        The one way to the kept bases: the fusion and the analysis both ask here."""
        return self._bases(self.basis_key(lora, k, energy, device), names,
                           lambda missing: self._counted(compute_bases(lora, missing, k, energy, device)))

    def joint_bases(self, styles, names, k, energy, device) -> dict[str, ModuleBasis]:
        """Bases of the joint update of several (style LoRA, own weight) for ``names``
        (``basis.compute_joint_bases``), computing (and keeping) only the missing ones."""
        styles = list(styles)
        return self._bases(self.joint_key(styles, k, energy, device), names,
                           lambda missing: self._counted(compute_joint_bases(styles, missing, k, energy, device)))

    def _counted(self, computed: dict[str, ModuleBasis]) -> dict[str, ModuleBasis]:
        with self._lock:
            self.bases_computed += len(computed)
        return computed

    def coordinates(self, content: LoraSet, style_key: Hashable, names, compute) -> torch.Tensor:
        """A content's down factors in a style subspace, A_c V (G, r_c, kk), for one batch of
        modules ``names`` (in order), computed once (``compute() -> tensor``) and kept.

        What a projection with a new mu reuses (``merge.project_batch``: A_c' = A_c - c (A_c V) V^T).
        Kept per batch, not per module: a batched matmul's last bits may depend on the batch it runs
        in, and a kept value must be exactly what the fusion would compute.

        Args:
            style_key: the subspace's identity: ``basis_key`` / ``joint_key`` of its styles.
        """
        def make():
            t = compute()
            return t, t.nbytes

        return self.memo(("coords", content.sha256, content.arch, style_key, tuple(names)), make)

    def load_set(self, paths, arch: str | None = None) -> list[LoraSet]:
        """Several LoRA files read for one architecture (``formats.reader.load_pair``'s rule, for
        any number): ``arch`` if given, else ``formats.reader.common_arch``'s.

        Raises:
            ArchitectureError: no architecture fits every file, or two files' metadata name
                different ones (names the first two that differ).
        """
        paths = list(paths)
        if arch is not None:
            return [self.load(p, arch=arch) for p in paths]
        loras = [self.load(p) for p in paths]
        target = common_arch(loras)
        return [lora if lora.arch == target else self.load(p, arch=target) for p, lora in zip(paths, loras)]

    def drop(self, predicate: Callable[[Hashable], bool]) -> int:
        """Remove the entries whose key matches ``predicate``; returns how many."""
        with self._lock:
            doomed = [k for k in self._entries if predicate(k)]
            for k in doomed:
                self._bytes -= self._entries.pop(k)[1]
            return len(doomed)


#: The process-wide caches used by the CLI server, the WebUI extension and the REST API.
shared = Caches()
