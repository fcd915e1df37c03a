"""The fusion service under the load a WebUI puts on it: long μ × k sweeps, concurrent fuse /
analyze / save calls, and a bounded cache."""

import gc
import os
import threading

import pytest
import torch
from safetensors import safe_open

import lora_factory as F
from lib_nplora.cache import Caches
from lib_nplora.errors import OutputExistsError
from lib_nplora.formats.reader import load_lora
from lib_nplora.params import FuseParams
from lib_nplora.app.index import DirectoryIndex
from lib_nplora.app.request import FusionRequest
from lib_nplora.app.service import FusionService


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def folder(tmp_path):
    rows = F.select("sdxl", "attn", ("unet", "te1"), blocks=("input_blocks.7.1.", "layers.2."))
    F.make_lora(tmp_path / "dog.safetensors", "sdxl", rows, rank=8, seed=1, dtype=torch.float16)
    F.make_lora(tmp_path / "ink.safetensors", "sdxl", rows, rank=16, seed=2, dtype=torch.float16)
    return tmp_path


def test_long_sweep_memory_returns_to_baseline(folder):
    """20 μ × 3 k fusions: process memory afterwards is within 5 % of before (cache excluded)."""
    caches = Caches(max_bytes=64 << 20)
    service, index = FusionService(caches), DirectoryIndex(folder)
    for warm in (None, 4):  # first use: imports, allocator, LAPACK workspaces and thread pools warm up
        service.fuse(index, FusionRequest("dog", "ink", FuseParams(k=warm)))
    gc.collect()
    before = _rss() - caches.stats().bytes
    results = 0
    for k in (None, 4, 8):
        for i in range(20):
            fused = service.fuse(index, FusionRequest("dog", "ink", FuseParams(mu=0.1 * (i + 1), k=k)))
            results += len(fused.modules)
            del fused
    gc.collect()
    st = caches.stats()
    after = _rss() - st.bytes
    assert results == 60 * len(load_lora(folder / "dog.safetensors").modules)
    assert st.bytes <= st.max_bytes
    assert after <= before * 1.05, (before, after)


def test_concurrent_fuse_analyze_and_save(folder):
    """Two saves, an analysis and in-memory fusions at once: correct results, whole files only."""
    caches = Caches(max_bytes=16 << 20)
    service, index = FusionService(caches), DirectoryIndex(folder)
    errors, saved, fused = [], [], []
    barrier = threading.Barrier(5)

    def save(name, mu):
        try:
            barrier.wait()
            saved.append((mu, service.save(index, FusionRequest("dog", "ink", FuseParams(mu=mu)), name)))
        except Exception as e:  # pragma: no cover - asserted below
            errors.append(e)

    def analyze():
        try:
            barrier.wait()
            assert service.analyze(index, FusionRequest("dog", "ink")).modules
        except Exception as e:  # pragma: no cover
            errors.append(e)

    def generate():
        try:
            barrier.wait()
            for mu in (0.3, 0.6, 0.9):
                fused.append((mu, service.fuse(index, FusionRequest("dog", "ink", FuseParams(mu=mu)), dtype=torch.float32)))
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=save, args=("a", 0.5)), threading.Thread(target=save, args=("b", 2.0)),
               threading.Thread(target=analyze), threading.Thread(target=generate),
               threading.Thread(target=save, args=("a", 1.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # exactly one of the two writers of "a" lost, with the clear error; nothing else failed
    assert len(errors) == 1 and isinstance(errors[0], OutputExistsError), errors
    assert sorted(os.listdir(folder)) == ["a.safetensors", "b.safetensors", "dog.safetensors", "ink.safetensors"]
    for mu, s in saved:
        with safe_open(s.path, framework="pt") as f:
            assert f"\"mu\": {mu}" in f.metadata()["nplora"]
        assert load_lora(s.path).arch == "sdxl"
    # the concurrently computed fusions equal a quiet recomputation
    quiet = FusionService(Caches())
    for mu, f in fused:
        ref = quiet.fuse(index, FusionRequest("dog", "ink", FuseParams(mu=mu)), dtype=torch.float32)
        for n, m in ref.modules.items():
            assert torch.equal(m.up, f.modules[n].up) and torch.equal(m.down, f.modules[n].down)
    assert caches.stats().bytes <= caches.stats().max_bytes
