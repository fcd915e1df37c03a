"""Fusion speed and memory, as ratios against baselines measured in the same run.

For SD1.5-, SDXL- and FLUX-shaped LoRA pairs (the module sets kohya's trainers write, random
fp16 factors) at ranks 8, 32 and 128, and Z-Image-, Qwen-Image- and FLUX.2-shaped pairs (every
linear of the transformer blocks, as ai-toolkit and musubi-tuner train them; written in the
original-checkpoint names, fused qkv) it measures:

* floor        reading both input files and writing a concatenated LoRA of the same size, no math;
* cold         NP-LoRA from the two files to the written fused file, fresh caches (CLI path);
* cold (mem)   the same without writing: files -> fused factors in memory (WebUI path);
* warm new mu  a new mu with the inputs and style subspace cached (X/Y/Z sweep path);
* peak memory  of the cold run (fresh subprocess, peak RSS above its post-import baseline),
               as a ratio to the bytes of the inputs plus the output;
* dense        what peer tools do (kohya svd_merge_lora, supermerger, PEFT svd): per module form
               the dense dW_s and call torch.linalg.svd for V, project the dense dW_c, and SVD the
               dense result back to rank r_s + r_c; timed on one module of each shape and scaled
               by the module counts (it does not depend on the rank). torch.linalg.svd is called
               with its defaults (full_matrices=True), as the peers do; the figure with reduced
               SVDs (full_matrices=False, kinder to the baseline) is reported too.

Run (about 45 minutes on 2 CPU cores, most of it the dense reference for FLUX):
    .venv/bin/python bench/bench_fusion.py                   # SD1.5, SDXL, FLUX; prints a Markdown table
    .venv/bin/python bench/bench_fusion.py --arch zimage qwenimage flux2 --rank 32
    .venv/bin/python bench/bench_fusion.py --arch sdxl --rank 32 --device cuda
Timings are medians of repeated runs; nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib_nplora import arch as archmod  # noqa: E402
from lib_nplora.cache import Caches  # noqa: E402
from lib_nplora.formats.reader import load_pair  # noqa: E402
from lib_nplora.formats.safetensors_file import read_file, write_file  # noqa: E402
from lib_nplora.formats.writer import save_fused  # noqa: E402
from lib_nplora.fusion.merge import fuse  # noqa: E402
from lib_nplora.params import FuseParams  # noqa: E402


def module_set(arch: str) -> list[archmod.ModuleSpec]:
    """The modules a default kohya LoRA of this architecture trains."""
    a = archmod.get(arch)
    out = []
    for name, spec in a.modules.items():
        if spec.parent or spec.kind == "norm":
            continue
        comp, path = name.split(".", 1)
        if arch in ("sd1", "sdxl") and comp == "unet":
            if ".transformer_blocks." in path or path.endswith((".proj_in", ".proj_out")):
                out.append(spec)
        elif arch == "sd1" and comp == "te":
            if ".self_attn." in path or ".mlp." in path:
                out.append(spec)
        elif arch in DIT_BLOCKS and comp == "unet":
            if path.startswith(DIT_BLOCKS[arch]):
                out.append(spec)
    return out


#: The transformer blocks of each DiT (their every linear is in the LoRA).
DIT_BLOCKS = {"flux": ("double_blocks.", "single_blocks."), "zimage": ("layers.", "noise_refiner.", "context_refiner."),
              "qwenimage": ("transformer_blocks.",), "flux2": ("double_blocks.", "single_blocks.")}
LABEL = {"sd1": "SD1.5 UNet+TE", "sdxl": "SDXL UNet", "flux": "FLUX DiT", "zimage": "Z-Image DiT",
         "qwenimage": "Qwen-Image DiT", "flux2": "FLUX.2-dev DiT"}


def make_file(path: Path, arch: str, specs, rank: int, seed: int) -> int:
    a = archmod.get(arch)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for spec in specs:
        key = a.kohya_key(spec.name)
        n_in = spec.in_features
        down = torch.randn(rank, n_in, generator=g) / n_in ** 0.5
        up = torch.randn(spec.out_features, rank, generator=g) * 0.01
        if spec.kind == "conv":
            down = down.reshape(rank, *spec.shape[1:])
            up = up.reshape(spec.out_features, rank, 1, 1)
        tensors[f"{key}.lora_down.weight"] = down.half()
        tensors[f"{key}.lora_up.weight"] = up.half()
        tensors[f"{key}.alpha"] = torch.tensor(float(rank) / 2, dtype=torch.float16)
    write_file(path, tensors, {"ss_network_module": "networks.lora"}, overwrite=True)
    return path.stat().st_size


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def floor_once(c_path, s_path, out_path):
    """Read both files, write the concatenated LoRA (same keys and sizes as the fused one), no math."""
    _, tc, _ = read_file(c_path)
    _, ts, _ = read_file(s_path)
    out = {}
    for key, t in tc.items():
        if key.endswith(".alpha"):
            out[key] = t + ts[key]
        elif key.endswith(".lora_down.weight"):
            out[key] = torch.cat([ts[key], t], dim=0)
        else:
            out[key] = torch.cat([ts[key], t], dim=1)
    write_file(out_path, out, {"floor": "1"}, overwrite=True)


def cold_to_file(c_path, s_path, out_path, device=None):
    content, style = load_pair(c_path, s_path)
    fused = fuse(content, style, FuseParams(), device=device)
    save_fused(fused, out_path, overwrite=True, content_meta=content.metadata, style_meta=style.metadata)


def cold_in_memory(c_path, s_path, device=None):
    content, style = load_pair(c_path, s_path)
    return fuse(content, style, FuseParams(), device=device, out_device=device or "cpu")


def dense_reference_seconds(arch: str, specs, repeat: int = 1, full: bool = True) -> tuple[float, int]:
    """Peer-style dense NP-LoRA per module, one module per shape, scaled by counts."""
    counts: dict[tuple, int] = {}
    for s in specs:
        key = (s.out_features, s.in_features)
        counts[key] = counts.get(key, 0) + 1
    total = 0.0
    r = 32
    g = torch.Generator().manual_seed(0)
    for (m, n), count in counts.items():
        b_s, a_s = torch.randn(m, r, generator=g), torch.randn(r, n, generator=g)
        b_c, a_c = torch.randn(m, r, generator=g), torch.randn(r, n, generator=g)

        def run():
            dws = b_s @ a_s
            _, _, vh = torch.linalg.svd(dws, full_matrices=full)
            v = vh[:r].T
            dwc = b_c @ a_c
            fused = dws + dwc - (1 / 3) * (dwc @ v) @ v.T
            u, s, vh2 = torch.linalg.svd(fused, full_matrices=full)
            return u[:, :2 * r] * s[:2 * r], vh2[:2 * r]

        total += median_time(run, repeat) * count
    return total, len(counts)


def peak_memory(c_path, s_path, out_path) -> int:
    """Peak RSS above the post-import baseline of a fresh process doing the cold run (bytes).

    The peak is the process' VmHWM, which starts afresh at exec; ``ru_maxrss`` would not: it
    keeps the high-water mark of the forked parent (this benchmark, with its caches)."""
    code = (
        "import sys, os; sys.path.insert(0, %r)\n"
        "import torch\n"
        "from lib_nplora.formats.reader import load_pair\n"
        "from lib_nplora.fusion.merge import fuse\n"
        "from lib_nplora.formats.writer import save_fused\n"
        "from lib_nplora.params import FuseParams\n"
        "torch.linalg.qr(torch.randn(8, 4)); torch.linalg.svd(torch.randn(4, 4))\n"
        "base = int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
        "c, s = load_pair(%r, %r)\n"
        "f = fuse(c, s, FuseParams())\n"
        "save_fused(f, %r, overwrite=True)\n"
        "peak = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) * 1024\n"
        "print(peak - base)\n" % (str(ROOT), str(c_path), str(s_path), str(out_path)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def gpu_seconds(c_path, s_path, repeat: int) -> float | None:
    if not torch.cuda.is_available():
        return None
    content, style = load_pair(c_path, s_path)
    dev = torch.device("cuda")
    for lora in (content, style):  # disk reads excluded: inputs on the GPU first
        for m in lora.modules.values():
            if m.factors is not None:
                m.factors.up, m.factors.down = m.factors.up.to(dev), m.factors.down.to(dev)

    def run():
        fuse(content, style, FuseParams(), device=dev, out_device=dev)
        torch.cuda.synchronize()

    run()
    return median_time(run, repeat)


def bench(arch: str, rank: int, workdir: Path, repeat: int, dense_cache: dict, device=None,
          dense: bool = True) -> dict:
    specs = module_set(arch)
    c_path, s_path = workdir / f"{arch}_r{rank}_content.safetensors", workdir / f"{arch}_r{rank}_style.safetensors"
    out_path, floor_path = workdir / "fused.safetensors", workdir / "floor.safetensors"
    in_bytes = make_file(c_path, arch, specs, rank, 1) + make_file(s_path, arch, specs, rank, 2)
    floor_once(c_path, s_path, floor_path)  # warm the page cache and the allocator alike for all
    cold_to_file(c_path, s_path, out_path)
    floor = median_time(lambda: floor_once(c_path, s_path, floor_path), repeat)
    cold = median_time(lambda: cold_to_file(c_path, s_path, out_path, device), repeat)
    cold_mem = median_time(lambda: cold_in_memory(c_path, s_path, device), repeat)
    caches = Caches()
    content, style = caches.load_pair(c_path, s_path)
    fuse(content, style, FuseParams(mu=0.5), cache=caches, device=device)
    mus = iter([0.1 * i for i in range(1, 1000)])
    warm = median_time(lambda: fuse(content, style, FuseParams(mu=next(mus)), cache=caches, device=device),
                       repeat)
    out_bytes = out_path.stat().st_size
    peak = peak_memory(c_path, s_path, out_path)
    if not dense:
        dense_cache.setdefault(arch, ((None, 0), (None, 0)))
    elif arch not in dense_cache:
        dense_cache[arch] = (dense_reference_seconds(arch, specs, full=True),
                             dense_reference_seconds(arch, specs, full=False))
    (dense, shapes), (dense_reduced, _) = dense_cache[arch]
    gpu = gpu_seconds(c_path, s_path, repeat) if device is None or str(device).startswith("cuda") else None
    for p in (c_path, s_path, out_path, floor_path):
        p.unlink(missing_ok=True)
    return {"arch": arch, "label": LABEL[arch], "rank": rank, "modules": len(specs), "input_mib": in_bytes / 2 ** 20,
            "output_mib": out_bytes / 2 ** 20, "floor_s": floor, "cold_s": cold, "cold_mem_s": cold_mem,
            "warm_mu_s": warm, "dense_s": dense, "dense_reduced_s": dense_reduced, "dense_shapes": shapes, "peak_mib": peak / 2 ** 20,
            "peak_ratio": peak / (in_bytes + out_bytes), "gpu_s": gpu}


def _dense(r: dict, key: str) -> str:
    """A dense-reference cell: seconds (×floor; ×cold), or "not run" (``--no-dense``)."""
    if r[key] is None:
        return "not run"
    return f"{r[key]:.0f} ({r[key] / r['floor_s']:.0f}×; {r[key] / r['cold_s']:.0f}×)"


def table(rows: list[dict]) -> str:
    """Markdown table: every time also as a ratio to the floor (×fl), plus the ratios the targets
    are stated in (warm μ against the cold in-memory fusion, dense against ours, peak memory
    against the inputs plus the output)."""
    head = ("| pair | rank | modules | in+out MiB | floor s | cold s (×fl) | cold in-memory s (×fl) "
            "| warm new μ s (×fl; ×cold in-memory) | dense ref s (×fl; ×cold) | dense, reduced SVD s (×fl; ×cold) "
            "| peak MiB (×(in+out)) |")
    sep = "|" + "---|" * 11
    lines = [head, sep]
    for r in rows:
        fl = r["floor_s"]
        lines.append(
            f"| {r['label']} | {r['rank']} | {r['modules']} | {r['input_mib'] + r['output_mib']:.0f} "
            f"| {fl:.3f} | {r['cold_s']:.3f} ({r['cold_s'] / fl:.2f}×) "
            f"| {r['cold_mem_s']:.3f} ({r['cold_mem_s'] / fl:.2f}×) "
            f"| {r['warm_mu_s']:.3f} ({r['warm_mu_s'] / fl:.2f}×; {r['warm_mu_s'] / r['cold_mem_s']:.2f}×) "
            f"| {_dense(r, 'dense_s')} | {_dense(r, 'dense_reduced_s')} "
            f"| {r['peak_mib']:.0f} ({r['peak_ratio']:.2f}×) |")
    gpu = [r for r in rows if r.get("gpu_s") is not None]
    if gpu:
        lines.append("")
        lines.append("| pair | rank | GPU fusion, inputs already on the GPU (ms) |")
        lines.append("|---|---|---|")
        for r in gpu:
            lines.append(f"| {r['label']} | {r['rank']} | {1000 * r['gpu_s']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description="NP-LoRA fusion benchmark")
    ap.add_argument("--arch", nargs="*", default=["sd1", "sdxl", "flux"], choices=list(LABEL),
                    help="default: %(default)s; the DiT rows (zimage, qwenimage, flux2) are run at rank 32")
    ap.add_argument("--rank", nargs="*", type=int, default=[8, 32, 128])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default=None, help="cpu (default) or cuda for the fusion math")
    ap.add_argument("--json", default=None, help="also write the raw figures here")
    ap.add_argument("--no-dense", action="store_true",
                    help="skip the dense reference (minutes per shape on a CPU): its cells read 'not run'")
    ap.add_argument("--workdir", default=None, help="where the temporary LoRA files go")
    ap.add_argument("--from-json", default=None, help="print the table of figures saved by --json; measure nothing")
    ns = ap.parse_args()
    if ns.from_json:
        print(table(json.loads(Path(ns.from_json).read_text())))
        return 0
    torch.linalg.qr(torch.randn(8, 4))  # initialise LAPACK before timing anything
    rows, dense_cache = [], {}
    with tempfile.TemporaryDirectory(dir=ns.workdir) as d:
        for a in ns.arch:
            for r in ns.rank:
                row = bench(a, r, Path(d), ns.repeat, dense_cache, ns.device, dense=not ns.no_dense)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"{time.strftime('%Y-%m-%d')}, {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(table(rows))
    if ns.json:
        Path(ns.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
