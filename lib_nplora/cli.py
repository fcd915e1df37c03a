"""Command line: ``python -m lib_nplora fuse|inspect|analyze|serve``.

Every failure exits non-zero with one line, ``nplora: error: <file>: <module>: <problem>. <what to do>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

from . import __version__
from .errors import NpLoraError
from .params import DEFAULT_MU, FuseParams


class ProgressBar:
    """A one-line progress display on stderr (a line per stage when stderr is not a terminal)."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.perf_counter()
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        pct = int(100 * done / total) if total else 100
        if self.tty:
            bar = "#" * (pct // 4)
            self.stream.write(f"\r{self.label} [{bar:<25}] {pct:3d}% ({done}/{total} modules)")
            self.stream.flush()
        elif pct // 25 != self.last // 25 or done == total:
            self.stream.write(f"{self.label}: {pct}% ({done}/{total} modules)\n")
        self.last = pct

    def finish(self, message: str) -> None:
        if self.tty:
            self.stream.write("\n")
        self.stream.write(f"{message} in {time.perf_counter() - self.start:.2f} s\n")
        self.stream.flush()


def _weight(text: str) -> float:
    return float(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lib_nplora",
                                description="NP-LoRA: fuse a content LoRA and a style LoRA by null-space projection.")
    p.add_argument("--version", action="version", version=f"NP-LoRA {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fuse", help="fuse CONTENT and STYLE into one LoRA file")
    f.add_argument("content", help="content (subject) LoRA, .safetensors")
    f.add_argument("style", help="style LoRA, .safetensors")
    f.add_argument("-o", "--output", required=True, help="output .safetensors file")
    mode = f.add_mutually_exclusive_group()
    mode.add_argument("--mu", type=float, default=DEFAULT_MU,
                      help=f"soft projection strength mu >= 0, c = mu/(1+mu) (default {DEFAULT_MU}, the paper's)")
    mode.add_argument("--hard", action="store_true", help="hard projection (c = 1, NP-LoRA-H)")
    mode.add_argument("--direct", action="store_true", help="plain weighted merge, no projection (c = 0)")
    kk = f.add_mutually_exclusive_group()
    kk.add_argument("--k", type=int, default=None,
                    help="style directions removed per module (default: the style's full numerical rank)")
    kk.add_argument("--energy", type=float, default=None,
                    help="beyond the paper: smallest k keeping this share of style energy, e.g. 0.9")
    f.add_argument("--content-weight", type=_weight, default=1.0, metavar="W")
    f.add_argument("--style-weight", type=_weight, default=1.0, metavar="W")
    f.add_argument("--scope", choices=("unet", "all"), default="unet",
                   help="project only the denoiser (default) or the text encoders too")
    f.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N or mps")
    f.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16", help="output dtype")
    f.add_argument("--name", default=None, help="ss_output_name / title (default: output file name)")
    f.add_argument("--force", action="store_true", help="overwrite the output file if it exists")

    i = sub.add_parser("inspect", help="show a LoRA file's architecture, format, modules and metadata")
    i.add_argument("file")
    i.add_argument("--json", action="store_true", help="print JSON")

    a = sub.add_parser("analyze", help="how much the content overlaps the style's principal subspace")
    a.add_argument("content")
    a.add_argument("style")
    a.add_argument("--k", type=int, default=None)
    a.add_argument("--energy", type=float, default=None)
    a.add_argument("--scope", choices=("unet", "all"), default="unet")
    a.add_argument("--device", default="auto")
    a.add_argument("--json", dest="json_file", default=None, metavar="FILE",
                   help="also write the per-module numbers as JSON")
    v = sub.add_parser("serve", help="serve the NP-LoRA tab and REST API over a LoRA folder (no WebUI needed)")
    v.add_argument("--lora-dir", required=True, help="folder with .safetensors LoRAs; fused files are saved there")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    v.add_argument("--port", type=int, default=7870)
    return p


def _params(ns) -> FuseParams:
    return FuseParams(
        mu=ns.mu, hard=ns.hard, method="direct" if ns.direct else "nplora", k=ns.k, energy=ns.energy,
        content_weight=ns.content_weight, style_weight=ns.style_weight, scope=ns.scope)


def cmd_fuse(ns) -> int:
    from .api import fuse_files

    params = _params(ns)
    bar = ProgressBar("fusing")
    fused, saved = fuse_files(ns.content, ns.style, ns.output, params, dtype=ns.dtype, device=ns.device,
                              overwrite=ns.force, output_name=ns.name, progress=bar)
    counts = fused.counts()
    bar.finish(f"wrote {saved.path} ({os.path.getsize(saved.path) / 2**20:.1f} MiB, "
               f"{counts['fused']} fused / {counts['projected']} projected, "
               f"{counts['content']} content-only, {counts['style']} style-only, "
               f"{counts['passthrough']} passthrough modules; c = {params.c:.4g})")
    for w in fused.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def describe(lora) -> dict:
    from . import arch as archmod

    ranks = Counter(lora.ranks().values())
    by_component = Counter(n.split(".", 1)[0] for n in lora.modules)
    return {
        "file": lora.path, "name": lora.name,
        "architecture": archmod.ARCH_LABELS[lora.arch],
        "also_fits": [archmod.ARCH_LABELS[a] for a in lora.arch_candidates if a != lora.arch],
        "format": lora.format, "modules": len(lora.modules),
        "module_types": dict(lora.kinds()), "components": dict(by_component),
        "ranks": {str(r): n for r, n in sorted(ranks.items())},
        "sha256": lora.sha256, "short_hash": lora.short_hash,
        "bundled_embeddings": len({k.split(".")[1] for k in lora.extras}),
        "warnings": lora.warnings, "metadata": lora.metadata,
    }


def cmd_inspect(ns) -> int:
    from .formats.reader import load_lora

    info = describe(load_lora(ns.file))
    if ns.json:
        print(json.dumps(info, indent=2))
        return 0
    for key in ("file", "architecture", "also_fits", "format", "modules", "module_types", "components",
                "ranks", "short_hash", "bundled_embeddings"):
        value = info[key]
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(value) or "-"
        print(f"{key.replace('_', ' '):>18}: {value}")
    meta = info["metadata"]
    print(f"{'metadata':>18}: {len(meta)} keys")
    for k in sorted(meta):
        v = meta[k].replace("\n", " ")
        print(f"{'':>18}  {k} = {v[:100]}{'…' if len(v) > 100 else ''}")
    for w in info["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def format_analysis(result) -> str:
    lines = [f"{result.content} (content) vs {result.style} (style), {result.arch.upper()}",
             f"{'block':<18} {'modules':>7} {'overlap':>8} {'max cos':>8} {'style kept':>10}"]
    for b in result.blocks + ([result.total] if result.total else []):
        lines.append(f"{b.block:<18} {b.modules:>7} {b.overlap:>8.3f} {b.max_cosine:>8.3f} "
                     f"{b.style_energy_kept:>10.3f}")
    lines.append("overlap = ||dW_c V_k|| / ||dW_c||: share of the content inside the style's principal "
                 "input subspace (what NP-LoRA attenuates)")
    if result.content_only or result.style_only:
        lines.append(f"not paired: {result.content_only} content-only, {result.style_only} style-only modules")
    return "\n".join(lines)


def cmd_analyze(ns) -> int:
    from .api import analyze_files

    params = FuseParams(k=ns.k, energy=ns.energy, scope=ns.scope)
    result = analyze_files(ns.content, ns.style, params, device=ns.device)
    print(format_analysis(result))
    if ns.json_file:
        from .errors import OutputError

        tmp = ns.json_file + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(result.to_dict(), f, indent=1)
            os.replace(tmp, ns.json_file)
        except OSError as e:
            raise OutputError(f"cannot be written ({e.strerror or e})", path=ns.json_file) from None
    return 0


def cmd_serve(ns) -> int:
    from .app.standalone import serve

    serve(ns.lora_dir, ns.host, ns.port)
    return 0


COMMANDS = {"fuse": cmd_fuse, "inspect": cmd_inspect, "analyze": cmd_analyze, "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return COMMANDS[ns.command](ns)
    except NpLoraError as e:
        print(f"nplora: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nplora: interrupted", file=sys.stderr)
        return 130
