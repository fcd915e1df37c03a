"""``python -m lib_nplora demo``: the first run, with no files of the user's.

Builds a synthetic but realistically shaped content/style LoRA pair, then runs the real path on
it: the library's reader, ``api.analyze_files`` (the per-block table ``analyze`` prints),
``api.fuse_files`` (the fused kohya file) and, as an independent check, the dense formula on a
few modules::

    dW = ws * dW_s + wc * dW_c (I - c V_k V_k^T),   c = mu / (1 + mu)

What the pair looks like
------------------------
* Module names and shapes are the real ones, from the committed architecture tables
  (``lib_nplora/arch/tables/*.json``), with kohya's default targets: every linear (and 1x1 conv)
  inside the UNet's transformer blocks, and the text encoders' self-attention q/k/v/out and MLP
  fc1/fc2 -- 192 + 72 = 264 modules on SD1.5, 722 + 264 = 986 on SDXL, as kohya-ss/sd-scripts
  writes them. Rank 8, alpha 4, fp16, kohya keys (``lora_unet_…``, ``lora_te…_``).
* Why two LoRAs trained on the same base overlap: a linear layer's weight gradient is
  ``sum_t delta_t x_t^T``, so what training adds lives in the span of the layer's *inputs* x,
  and a base model's inputs to a layer are dominated by a few directions whatever the prompt
  or image (text embeddings and UNet features are strongly anisotropic). Two LoRAs trained
  independently on that base therefore share their dominant input directions; this overlap is
  what makes a plain merge blur one into the other, and what NP-LoRA removes.
* Construction, per module with input size n and rank r (seeded, so every run writes the same
  bytes): a shared orthonormal basis S (n x 2r) stands for the base's dominant input directions,
  with a decaying spectrum lambda_j = 0.85^j. Each LoRA's down rows mix a combination of S
  (weighted by sqrt(lambda)) with a private random direction, the shared share drawn per module
  and per LoRA from U(0.45, 0.85) (higher for cross-attention k/v, whose inputs are the text
  embeddings); rows have unit norm. The up matrix is Gaussian with decaying column scales
  0.8^i, as trained LoRAs' spectra decay. Unrelated random LoRAs would overlap by about
  sqrt(r / n) (0.1 - 0.16 here); this pair overlaps by roughly 0.4 - 0.6 per block.

The files are made to be fused and inspected, not to draw with: they were not trained, so in a
WebUI they change an image like noise, not like a subject or a style.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__
from . import arch as archmod
from .errors import NpLoraError, OutputError, OutputExistsError
from .params import FuseParams

#: --arch spelling -> library architecture name, label.
DEMO_ARCHS = {"sd15": ("sd1", "SD1.5"), "sdxl": ("sdxl", "SDXL")}
DEFAULT_OUT = "nplora-demo"
CONTENT, STYLE, FUSED = "demo_content", "demo_style", "fused"
RANK, ALPHA = 8, 4.0
SEED = 20251114
#: metadata key marking the demo's own input files (the only files it overwrites, with its fused file)
MARKER = "nplora_demo"
#: relative error allowed between the written fp16 file and the float64 dense formula
TOLERANCE = 5e-3

_TE_TARGET = re.compile(r"\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])$")
#: the verification sample: the first module matching each pattern (several shapes and kinds,
#: a text-encoder module, which the default scope adds without projection)
_SAMPLE = (r"\.attn1\.to_q$", r"\.attn2\.to_k$", r"\.proj_in$", r"\.ff\.net\.2$",
           r"^unet\.middle_block\..*\.attn2\.to_v$", r"\.self_attn\.q_proj$", r"\.mlp\.fc1$")


class DemoError(NpLoraError):
    """The demo's own check failed (a bug in the library: please report it)."""


def targets(arch: archmod.Architecture) -> list[archmod.ModuleSpec]:
    """kohya's default LoRA targets: linears and 1x1 convs inside the UNet's transformer blocks,
    the text encoders' attention and MLP linears (table order)."""
    out = []
    for spec in arch.modules.values():
        if spec.kind == "norm" or spec.parent is not None or spec.parts:
            continue
        name = spec.name
        if not archmod.is_text_encoder(name):
            if ".transformer_blocks." in name or name.endswith((".proj_in", ".proj_out")):
                out.append(spec)
        elif _TE_TARGET.search(name):
            out.append(spec)
    return out


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def make_pair(arch_name: str, rank: int = RANK, seed: int = SEED
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
    """The two state dicts (kohya keys, fp16) and the number of modules (see module docstring).

    Per module: down (r, in[, 1, 1]), up (out, r[, 1, 1]), alpha ().
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few thousand tiny ops: thread hand-offs cost more than they save
    try:
        return _make_pair(arch_name, rank, seed)
    finally:
        torch.set_num_threads(threads)


def _make_pair(arch_name: str, rank: int, seed: int):
    a = archmod.get(arch_name)
    g = torch.Generator().manual_seed(seed)
    content: dict[str, torch.Tensor] = {}
    style: dict[str, torch.Tensor] = {}
    specs = targets(a)
    sigma = 0.8 ** torch.arange(rank, dtype=torch.float32)
    for spec in specs:
        m, n = spec.out_features, spec.in_features
        d = min(2 * rank, n)
        basis, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float32))  # (n, d)
        lam = 0.85 ** torch.arange(d, dtype=torch.float32)
        lo, hi = (0.6, 0.9) if re.search(r"\.attn2\.to_[kv]$", spec.name) else (0.45, 0.85)
        key = a.kohya_key(spec.name)
        for sd in (content, style):
            share = lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float32))
            shared = _unit_rows((torch.randn(rank, d, generator=g, dtype=torch.float32) * lam.sqrt()) @ basis.T)
            private = _unit_rows(torch.randn(rank, n, generator=g, dtype=torch.float32))
            down = _unit_rows(math.sqrt(share) * shared + math.sqrt(1 - share) * private)  # (r, n)
            up = torch.randn(m, rank, generator=g, dtype=torch.float32) * (0.01 * sigma)  # (m, r)
            if spec.kind == "conv":
                down = down.reshape(rank, *spec.shape[1:])
                up = up.reshape(m, rank, 1, 1)
            sd[f"{key}.lora_down.weight"] = down.to(torch.float16).contiguous()
            sd[f"{key}.lora_up.weight"] = up.to(torch.float16).contiguous()
            sd[f"{key}.alpha"] = torch.tensor(ALPHA, dtype=torch.float16)
    return content, style, len(specs)


def _metadata(arch_name: str, role: str, name: str, rank: int) -> dict[str, str]:
    meta = dict(archmod.ARCH_METADATA[arch_name])
    meta.update({
        "ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": f"{ALPHA:g}",
        "ss_output_name": name, "modelspec.sai_model_spec": "1.0.1", "modelspec.title": name,
        "modelspec.description": f"NP-LoRA demo {role} LoRA: synthetic (shared-subspace model), not trained",
        MARKER: json.dumps({"role": role, "version": __version__, "seed": SEED, "rank": rank}),
    })
    return meta


def _is_ours(path: Path, role: str) -> bool:
    """True when ``path`` is a file this demo wrote (read through the library's header reader)."""
    from .formats.safetensors_file import read_header

    try:
        meta = read_header(path).metadata
    except NpLoraError:
        return False
    try:
        if role == FUSED:
            block = json.loads(meta.get("nplora", "null"))
            return (block["content"]["file"], block["style"]["file"]) == (
                f"{CONTENT}.safetensors", f"{STYLE}.safetensors")
        return json.loads(meta.get(MARKER, "null"))["role"] == role
    except (ValueError, TypeError, KeyError):
        return False


def _claim(folder: Path) -> dict[str, Path]:
    """The demo's three file paths in ``folder`` (created), after checking that none of them
    is somebody else's file.

    Raises:
        OutputError: ``folder`` cannot be made; OutputExistsError: a file there is not the demo's.
    """
    if folder.exists() and not folder.is_dir():
        raise OutputError("is not a folder", path=folder, hint="Give --out a folder (it is created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot be created ({e.strerror or e})", path=folder) from None
    paths = {role: folder / f"{name}.safetensors"
             for role, name in (("content", CONTENT), ("style", STYLE), (FUSED, FUSED))}
    for role, p in paths.items():
        if (p.exists() or p.is_symlink()) and not _is_ours(p, role):
            raise OutputExistsError(
                f"already exists in {folder} and was not written by the demo; it is left as it is",
                path=p, hint="Give the demo another folder (--out DIR), or move that file away")
    return paths


@dataclass
class Check:
    name: str
    shape: tuple[int, int]
    projected: bool
    rel_err: float


def verify(content_path, style_path, fused_path, params: FuseParams, sample=_SAMPLE) -> list[Check]:
    """Compare the written fused file with the dense formula on a sample of modules.

    This builds dense (out, in) float64 matrices, for the sampled modules only: an independent
    check of the factor-level fusion, never used by the fusion itself. V_k is the full-rank
    right singular basis of the dense dW_s (the paper's k); the default scope projects only the
    UNet, so text-encoder modules expect the plain sum.
    """
    from .formats.reader import load_lora

    content, style, fused = load_lora(content_path), load_lora(style_path), load_lora(fused_path)
    names = []
    for pattern in sample:
        hit = next((n for n in content.modules if re.search(pattern, n) and n not in names), None)
        if hit is not None:
            names.append(hit)
    wc, ws = params.content_weight, params.style_weight
    checks = []
    for name in names:
        dense = {}
        for label, lora in (("c", content), ("s", style), ("f", fused)):
            f = lora.modules[name].factors
            dense[label] = f.scale * (f.up.double() @ f.down.double())  # (out, in) float64
        dws, dwc = dense["s"], dense["c"]
        _, s, vh = torch.linalg.svd(dws, full_matrices=False)
        rank = int((s > max(dws.shape) * torch.finfo(torch.float32).eps * s[0]).sum())
        vk = vh[:rank].T  # (in, k)
        projected = params.scope == "all" or not archmod.is_text_encoder(name)
        c = params.c if projected else 0.0
        expected = ws * dws + wc * (dwc - c * (dwc @ vk) @ vk.T)
        err = float((dense["f"] - expected).norm() / expected.norm())
        checks.append(Check(name, tuple(dws.shape), projected, err))
    return checks


def _mib(path: Path) -> float:
    return os.path.getsize(path) / 2**20


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it, else absolute."""
    p = path.resolve()
    try:
        rel = p.relative_to(Path.cwd().resolve())
        return str(rel) if str(rel) != "." else "."
    except ValueError:
        return str(p)


def _runner() -> str:
    """How to call the command line in the next-step hints: tools/run.sh of this checkout."""
    run_sh = Path(__file__).resolve().parents[1] / "tools" / "run.sh"
    return f"bash {_shown(run_sh)}" if run_sh.is_file() else f"{Path(sys.executable).name} -m lib_nplora"


def run(out: str | os.PathLike = DEFAULT_OUT, arch: str = "sd15", *, device: str = "auto",
        stream=None) -> int:
    """Write the demo pair into ``out``, analyze, fuse and verify it, printing each step.

    Returns:
        0 (every failure raises an ``NpLoraError``: a file in the way, or a failed check).
    """
    from .api import analyze_files, fuse_files
    from .cache import Caches
    from .cli import format_analysis
    from .formats.safetensors_file import write_file

    stream = stream or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=stream, flush=True)

    if arch not in DEMO_ARCHS:
        from .errors import ParameterError

        raise ParameterError(f"unknown demo architecture {arch!r}", hint=f"Use one of {', '.join(DEMO_ARCHS)}")
    arch_name, label = DEMO_ARCHS[arch]
    start = time.perf_counter()
    folder = Path(out)
    paths = _claim(folder)

    count = len(targets(archmod.get(arch_name)))
    say(f"NP-LoRA demo: a synthetic {label} content/style pair, no files of yours needed "
        f"(kohya format, {count} modules each, rank {RANK}, alpha {ALPHA:g}, fp16; "
        "input subspaces overlap as real pairs do, see lib_nplora/demo.py)")
    content_sd, style_sd, _ = make_pair(arch_name)
    for role, sd, name in (("content", content_sd, CONTENT), ("style", style_sd, STYLE)):
        write_file(paths[role], sd, _metadata(arch_name, role, name, RANK), overwrite=True)
    say(f"[1/4] wrote {_shown(paths['content'])} ({_mib(paths['content']):.1f} MiB) and "
        f"{_shown(paths['style'])} ({_mib(paths['style']):.1f} MiB)")

    params = FuseParams()
    cache = Caches()  # the style bases are computed once, for the analysis and the fusion (as the app does)
    analysis = analyze_files(paths["content"], paths["style"], params, device=device, cache=cache)
    say("[2/4] analysis, as `analyze` prints it:")
    say(format_analysis(analysis))

    t = time.perf_counter()
    fused, _ = fuse_files(paths["content"], paths["style"], paths[FUSED], params, dtype="fp16",
                          device=device, overwrite=True, cache=cache)
    counts = fused.counts()
    say(f"[3/4] fused (mu {params.mu:g}, c = {params.c:.4g}, k = the style's full rank): "
        f"{_shown(paths[FUSED])} ({_mib(paths[FUSED]):.1f} MiB, {counts['fused']} fused modules, "
        f"{counts['projected']} of them projected; text-encoder modules are added unprojected) "
        f"in {time.perf_counter() - t:.2f} s")
    for w in fused.warnings:
        say(f"warning: {w}")

    checks = verify(paths["content"], paths["style"], paths[FUSED], params)
    worst = max(checks, key=lambda ch: ch.rel_err)
    if worst.rel_err > TOLERANCE:
        raise DemoError(f"does not match the dense formula at {worst.name} (relative error {worst.rel_err:.2e})",
                        path=paths[FUSED], hint="This is a bug in NP-LoRA; please report it with this output")
    say(f"[4/4] verified: {len(checks)} sampled modules of {paths[FUSED].name} "
        f"({sum(ch.projected for ch in checks)} projected, {sum(not ch.projected for ch in checks)} text-encoder) "
        f"match dW = ws*dW_s + wc*dW_c (I - c V_k V_k^T) within {worst.rel_err:.1e} relative error "
        f"(fp16 file). This check builds dense matrices for those {len(checks)} modules only; "
        "the fusion itself works on the low-rank factors.")

    run_sh, d = _runner(), _shown(folder)
    c_file, s_file = _shown(paths["content"]), _shown(paths["style"])
    say(f"\ndone in {time.perf_counter() - start:.1f} s. Everything is in {folder.resolve()}:")
    say(f"  {CONTENT}.safetensors  synthetic content LoRA ({label})")
    say(f"  {STYLE}.safetensors    synthetic style LoRA ({label})")
    say(f"  {FUSED}.safetensors         their NP-LoRA fusion, an ordinary kohya LoRA")
    say("next:")
    say(f"  {run_sh} inspect {_shown(paths[FUSED])}          # what the fused file records")
    say(f"  {run_sh} fuse {c_file} {s_file} -o {d}/fused_hard.safetensors --hard   # or --mu 2, --direct, --k 4")
    say(f"  {run_sh} serve --lora-dir {d}          # the NP-LoRA tab in a browser, no WebUI needed")
    say(f"  WebUI: copy {CONTENT}.safetensors and {STYLE}.safetensors into the LoRA folder (models/Lora), "
        f"load an {label} model, then prompt: a photo <nplora:{CONTENT}:{STYLE}>  (untrained: they change images like noise)")
    say(f"  your own pair: {run_sh} fuse content.safetensors style.safetensors -o fused.safetensors")
    return 0
