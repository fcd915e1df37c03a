"""The file and style-basis caches: reuse, invalidation, byte bound, concurrent use."""

import os
import threading
import time

import torch

import lora_factory as F
from lib_nplora.cache import Caches
from lib_nplora.fusion.merge import fuse
from lib_nplora.params import FuseParams


def _pair(tmp_path):
    rows = F.select("sdxl", "attn", ("unet",), blocks=("input_blocks.4.1.", "output_blocks.3.1."))
    c = F.make_lora(tmp_path / "c.safetensors", "sdxl", rows, rank=4, seed=1)
    s = F.make_lora(tmp_path / "s.safetensors", "sdxl", rows, rank=8, seed=2)
    return c, s


def test_files_are_reused_until_they_change(tmp_path):
    c, s = _pair(tmp_path)
    cache = Caches()
    a = cache.load(c.path)
    assert cache.load(c.path) is a and cache.stats().hits == 1
    time.sleep(0.01)
    F.make_lora(c.path, "sdxl", F.select("sdxl", "attn", ("unet",), limit=3), rank=2, seed=9)
    os.utime(c.path, ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    b = cache.load(c.path)
    assert b is not a and len(b.modules) == 3


def test_new_mu_reuses_the_style_basis_and_matches_uncached(tmp_path):
    c, s = _pair(tmp_path)
    cache = Caches()
    content, style = cache.load_pair(c.path, s.path)
    first = fuse(content, style, FuseParams(mu=0.5), cache=cache, dtype=torch.float32)
    misses = cache.stats().misses
    second = fuse(content, style, FuseParams(mu=2.0), cache=cache, dtype=torch.float32)
    assert cache.stats().misses == misses  # no new basis, no new coordinates A_c V computed
    plain = fuse(content, style, FuseParams(mu=2.0), dtype=torch.float32)
    for n in plain.modules:
        assert torch.equal(second.modules[n].up, plain.modules[n].up)
        assert torch.equal(second.modules[n].down, plain.modules[n].down)
    assert not torch.equal(first.modules[n].down, second.modules[n].down)
    # another k is another basis (computed for every fused module), and other coordinates
    computed = cache.bases_computed
    fuse(content, style, FuseParams(mu=2.0, k=2), cache=cache)
    assert cache.bases_computed == computed + len(plain.modules)
    assert cache.stats().misses > misses


def test_byte_limit_evicts_least_recently_used(tmp_path):
    c, s = _pair(tmp_path)
    one = Caches().load(c.path).nbytes()
    other = F.make_lora(tmp_path / "d.safetensors", "sdxl", F.select("sdxl", "attn", ("unet",),
                        blocks=("input_blocks.4.1.", "output_blocks.3.1.")), rank=4, seed=7)
    cache = Caches(max_bytes=int(one * 1.5))
    a = cache.load(c.path)
    cache.load(other.path)  # same size: evicts c
    st = cache.stats()
    assert st.bytes <= st.max_bytes and st.entries == 1
    assert cache.load(c.path) is not a
    tiny = Caches(max_bytes=10)
    tiny.load(c.path)  # too big to keep, but still returned
    assert tiny.stats().entries == 0 and tiny.stats().bytes == 0


def test_concurrent_loads_compute_once(tmp_path):
    c, s = _pair(tmp_path)
    cache = Caches()
    results, errors = [], []
    barrier = threading.Barrier(6)

    def worker():
        try:
            barrier.wait()
            lora = cache.load(c.path)
            results.append((lora, cache.bases(lora, list(lora.modules), None, None, None)))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 6
    assert all(lora is results[0][0] for lora, _ in results)
    for _, bases in results:
        assert bases.keys() == results[0][1].keys()
        for n in bases:
            assert torch.equal(bases[n].v, results[0][1][n].v)
    assert cache.stats().misses <= 1 + 6  # one file load; basis computations may race but stay correct
    assert cache.stats().bytes <= cache.stats().max_bytes
