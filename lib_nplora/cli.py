"""Command line: ``python -m lib_nplora fuse|inspect|analyze|serve|demo``.

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
from .params import FUSE_PARAMS, FuseParams, Param


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


def _option(p: Param) -> dict:
    """A table row as ``add_argument`` keyword arguments (by the row's kind)."""
    kw = {"dest": p.name, "help": p.cli_help or p.doc}
    if p.cli_const is not None:
        return dict(kw, action="store_const", const=p.cli_const, default=None)
    if p.kind == "flag":
        return dict(kw, action="store_true")
    if p.kind == "choice":
        return dict(kw, choices=p.choices, default=None)
    if p.kind == "blocks":
        return dict(kw, default=None, metavar=p.metavar)
    kw.update(type=float if p.kind == "number" else int, default=None)
    return dict(kw, metavar=p.metavar) if p.metavar else kw


def add_param_options(parser: argparse.ArgumentParser, params) -> None:
    """One option per table row (``params.PARAMS``); rows of one ``group`` exclude each other.
    Unset options are None: ``FuseParams.from_values`` gives them their defaults."""
    groups: dict = {}
    for p in params:
        if p.cli_flag is None:
            continue
        target = parser
        if p.group:
            if p.group not in groups:
                groups[p.group] = parser.add_mutually_exclusive_group()
            target = groups[p.group]
        target.add_argument(p.cli_flag, **_option(p))


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """CONTENT and STYLE positionally (one pair), and ``--content FILE [W]`` / ``--style FILE [W]``,
    each repeatable, for several with their own weights (after the positional ones, in order)."""
    parser.add_argument("content", nargs="?", default=None, help="content (subject) LoRA, .safetensors")
    parser.add_argument("style", nargs="?", default=None, help="style LoRA, .safetensors")
    for side in ("content", "style"):
        parser.add_argument(f"--{side}", dest=f"more_{side}", action="append", nargs="+", default=[],
                            metavar=("FILE", "W"), help=f"a{' further' if side == 'content' else ''} {side} LoRA "
                            "and its own weight (default 1); repeat for several")
    from .arch import ARCH_NAMES

    parser.add_argument("--arch", dest="base", choices=ARCH_NAMES, default=None,
                        help="read every file for this base model (default: the one all files fit; "
                             "for files that fit several, the one their metadata names)")


def inputs_of(ns) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """The (file, own weight) lists the options give.

    Raises:
        ParameterError: a side without a file, more than one weight after a file, a weight that
        is not a number.
    """
    from .errors import ParameterError

    out = []
    for side in ("content", "style"):
        items = [(getattr(ns, side), 1.0)] if getattr(ns, side) else []
        for given in getattr(ns, f"more_{side}"):
            if len(given) > 2:
                raise ParameterError(f"--{side} takes a file and at most one weight, got {' '.join(given)[:80]!r}")
            try:
                w = float(given[1]) if len(given) == 2 else 1.0
            except ValueError:
                raise ParameterError(f"--{side} {given[0]}: the weight {given[1]!r} is not a number") from None
            if w != w or abs(w) == float("inf"):
                raise ParameterError(f"--{side} {given[0]}: the weight must be a finite number")
            items.append((given[0], w))
        if not items:
            raise ParameterError(f"no {side} LoRA given", hint=f"Give CONTENT STYLE, or --{side} FILE [W]")
        out.append(items)
    return out[0], out[1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lib_nplora",
                                description="NP-LoRA: fuse a content LoRA and a style LoRA by null-space projection.")
    p.add_argument("--version", action="version", version=f"NP-LoRA {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fuse", help="fuse CONTENT and STYLE (or several of each) into one LoRA file")
    add_input_options(f)
    f.add_argument("-o", "--output", required=True, help="output .safetensors file")
    add_param_options(f, FUSE_PARAMS)
    f.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N or mps")
    f.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16", help="output dtype")
    f.add_argument("--name", default=None, help="ss_output_name / title (default: output file name)")
    f.add_argument("--force", action="store_true", help="overwrite the output file if it exists")

    i = sub.add_parser("inspect", help="show a LoRA file's architecture, format, modules and metadata")
    i.add_argument("file")
    i.add_argument("--json", action="store_true", help="print JSON")

    a = sub.add_parser("analyze", help="how much the content overlaps the style's principal subspace")
    add_input_options(a)
    add_param_options(a, [p for p in FUSE_PARAMS if p.analysis])
    a.add_argument("--device", default="auto")
    a.add_argument("--json", dest="json_file", default=None, metavar="FILE",
                   help="also write the per-module numbers as JSON (never over an input)")
    a.add_argument("--force", action="store_true", help="overwrite the JSON file if it exists")
    v = sub.add_parser("serve", help="serve the NP-LoRA tab and REST API over a LoRA folder (no WebUI needed)")
    v.add_argument("--lora-dir", required=True, help="folder with .safetensors LoRAs; fused files are saved there")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    v.add_argument("--port", type=int, default=7870)
    d = sub.add_parser("demo", help="no files needed: build a synthetic content/style pair, analyze, fuse and "
                                    "verify it (lib_nplora/demo.py)")
    d.add_argument("--out", default="nplora-demo", metavar="DIR",
                   help="folder for the demo's files (default ./nplora-demo; only its own files are overwritten)")
    d.add_argument("--arch", choices=("sd15", "sdxl"), default="sd15", help="base model shape (default sd15)")
    return p


def _params(ns) -> FuseParams:
    """The parameters a command's options give (the others: the library's defaults)."""
    return FuseParams.from_values(None, **{p.name: getattr(ns, p.name) for p in FUSE_PARAMS if hasattr(ns, p.name)})


def cmd_fuse(ns) -> int:
    from .api import fuse_file_sets

    params = _params(ns)
    contents, styles = inputs_of(ns)
    bar = ProgressBar("fusing")
    fused, saved = fuse_file_sets(contents, styles, ns.output, params, dtype=ns.dtype, device=ns.device,
                                  overwrite=ns.force, output_name=ns.name, progress=bar, arch=ns.base)
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
    for o in result.contents:
        lines.append(f"content {o.content}: overlap {o.overlap:.3f} with the joint style subspace")
    for o in result.between:
        lines.append(f"content {o.content}: overlap {o.overlap:.3f} with content {o.of}'s directions (chain)")
    groups = result.suggested_groups()
    if result.groups:
        lines.append("per-block mu (mub=GROUP:MU): projection matters most in "
                     + (", ".join(groups) if groups else "no group (every overlap is low)"))
    return "\n".join(lines)


def cmd_analyze(ns) -> int:
    from .api import analyze_file_sets, labelled_sets
    from .formats.atomic import atomic_write, check_output

    contents, styles = inputs_of(ns)
    inputs = labelled_sets(contents, styles)
    if ns.json_file:  # refuse a bad report file before the work
        check_output(ns.json_file, inputs=inputs, overwrite=ns.force)
    params = _params(ns)
    result = analyze_file_sets(contents, styles, params, device=ns.device, arch=ns.base)
    print(format_analysis(result))
    if ns.json_file:
        data = json.dumps(result.to_dict(), indent=1).encode("utf-8")
        atomic_write(ns.json_file, [data], overwrite=ns.force, inputs=inputs)
    return 0


def cmd_serve(ns) -> int:
    from .app.standalone import serve

    serve(ns.lora_dir, ns.host, ns.port)
    return 0


def cmd_demo(ns) -> int:
    from .demo import run

    return run(ns.out, ns.arch)


COMMANDS = {"fuse": cmd_fuse, "inspect": cmd_inspect, "analyze": cmd_analyze, "serve": cmd_serve,
            "demo": cmd_demo}


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
