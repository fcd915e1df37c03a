"""Write a fused LoRA as a kohya-format .safetensors file that A1111, Forge, reForge and ComfyUI
all load unconverted.

* Keys: ``lora_unet_…`` / ``lora_te…_`` + ``.lora_down.weight`` (R, in[, kh, kw]),
  ``.lora_up.weight`` (out, R[, 1, 1]), ``.alpha`` = R: all scaling is baked into the factors.
  SD1/SD2 UNet modules use the diffusers block names kohya's trainer writes; SDXL the SGM names;
  FLUX the BFL fused names (parts are fused back into their parent: exact).
* SD2 and SDXL's OpenCLIP text encoders are attention blocks that A1111 patches only when q, k,
  v and out all have a module; a missing sibling is written as a zero update.
* Passthrough modules keep their tensors and suffixes; bundled embeddings are kept.
* Files: through ``atomic`` (random temporary name in the same folder, created exclusively,
  umask mode, renamed into place; never onto an input); ``is_temp_name`` tells the LoRA list
  which files are our temporary ones.
* Metadata: the minimal ``ss_*`` set (base model version from the inputs), ``modelspec.*`` with
  ``merged_from``, and an ``nplora`` JSON block recording every parameter and both inputs' hashes.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__
from .. import arch as archmod
from ..fused import FusedLora, FusedModule
from ..fusion.checks import require_finite
from ..fusion.linalg import EPS32, numerical_rank
from .atomic import check_output, is_temp_name, labelled_inputs, sweep_stale_temps  # noqa: F401  (re-exported)
from .keys import KOHYA_SUFFIX
from .safetensors_file import write_file
from .untrusted import MAX_METADATA_DEPTH, UntrustedJSONError, loads_json

OUTPUT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class SavedFile:
    path: str
    sha256: str
    metadata: dict[str, str]
    tensors: int


def _join_parts(arch: archmod.Architecture, parent: str, parts: dict[str, FusedModule],
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Fuse the parts' updates back into the parent weight's (up, down), exactly.

    The parent's update is U D with U = blockdiag(up_i) (part i owns its rows and its R_i rank
    columns) and D = the parts' downs stacked (R, n); the (out, n) matrix is never formed.

    **Shared rows** (inputs that named the fused weight): every part's down spans the same rows
    (the shared down factors of style and content; the style directions projected out of the
    content lie in them), so one part's QR gives an orthonormal row basis and the join is a
    product, of rank q <= R_widest (r_style + r_content of that part)::

        D_widest^T = Q R_w               (Q (n, q))
        M = D Q                          (R, q): D = M Q^T
        up = U M (rows of part i: up_i M_i),   down = Q^T

    each column of ``up`` and row of ``down`` then scaled by the square root of that column's
    norm (exact: a diagonal in between), so that neither factor's entries fall into float16's
    subnormal range. That D = M Q^T is checked, not assumed: every part's residual
    ||D_i - M_i Q^T||_F must be below the precision its factors are stored in (eps of their
    dtype times ||D_i||_F: what rounding the fused factors to fp16 already moved them by), or the
    error it makes, ||U (D - M Q^T)||_F, below the rank tolerance the SVD truncates at
    (max(out, n) eps32 sigma_max: float32 factors).

    **Own downs** (parts with their own downs, as diffusers-named inputs have): the stacked update
    is written at its joint numerical rank, from an exact SVD of the factors::

        D^T = Q R_a,  M = R_a^T           (Q (n, ka), the QR of the whole stacked D)
        up_i = Q_i R_i                    (R only: Q_i is never formed)
        C = blockdiag(R_i) M = W S Z^T    (Z, S from the eigenvectors of C^T C, float64)
        up = U M Z S^-1/2,  down = S^1/2 Z^T Q^T      (top numerical-rank columns)

    since blockdiag(Q_i) W S^1/2 = U M Z S^-1/2.
    """
    spec = arch.modules[parent]
    present = [(arch.modules[p], parts[p]) for p in spec.parts if p in parts]
    ups = [m.up.float() for _, m in present]                          # (m_i, R_i) each
    downs = [m.down.float() for _, m in present]                      # (R_i, n) each
    ranks = [d.shape[0] for d in downs]
    down = torch.cat(downs, dim=0)                                    # (R, n)

    def stacked_up(coef: torch.Tensor) -> torch.Tensor:
        """U coef for coef (R, c): part i's rows are up_i coef_i. (out, c)."""
        up = torch.zeros(spec.out_features, coef.shape[1], device=down.device)
        for (pspec, _), u, c in zip(present, ups, coef.split(ranks)):
            up[pspec.row_offset:pspec.row_offset + u.shape[0]] = u @ c
        return up

    widest = max(range(len(downs)), key=lambda i: ranks[i])
    q = torch.linalg.qr(downs[widest].mT)[0]                          # (n, q), q <= R_widest
    m = down @ q                                                      # (R, q)
    residuals = [d - mi @ q.mT for d, mi in zip(downs, m.split(ranks))]   # D_i - M_i Q^T
    eps = torch.finfo(present[0][1].down.dtype).eps                   # the precision the factors hold
    shared = all(float(e.norm()) <= eps * float(d.norm()) for e, d in zip(residuals, downs))

    def svd(m_rows: torch.Tensor):
        """eigh of C^T C, C = blockdiag(R_i) M, for M (R, q) float64: (S descending, Z)."""
        core = torch.cat([r @ mi for r, mi in zip(r_parts, m_rows.split(ranks))], dim=0)   # (K, q)
        lam, z = torch.linalg.eigh(core.mT @ core)
        return lam.flip(0).clamp_min(0).sqrt(), z.flip(1)

    if not shared:   # every path to the SVD join passes here first
        r_parts = [torch.linalg.qr(u, mode="r")[1].double() for u in ups]  # (k_i, R_i) each
        s, z = svd(m.double())
        # ||U (D - M Q^T)||_F = sqrt(sum ||R_i (D_i - M_i Q^T)||_F^2) against the rank tolerance
        err = sum(float((r.float() @ e).square().sum()) for r, e in zip(r_parts, residuals)) ** 0.5
        shared = err <= max(spec.out_features, down.shape[1]) * EPS32 * float(s[0])
    if shared:
        up = stacked_up(m)                                            # (out, q)
        norms = up.norm(dim=0)
        scale = torch.where(norms > 0, norms, torch.ones_like(norms)).sqrt()
        return (up / scale).to(dtype).contiguous(), (scale[:, None] * q.mT).to(dtype).contiguous()
    q, r_a = torch.linalg.qr(down.mT)                                 # (n, ka), (ka, R): their own downs
    m = r_a.mT                                                        # (R, ka)
    s, z = svd(m.double())
    keep = max(numerical_rank(s.float(), spec.out_features, down.shape[1]), 1)
    root = s[:keep].sqrt()
    zk = z[:, :keep]                                                  # (q, keep)
    coef = (m.double() @ zk / torch.where(root > 0, root, torch.ones_like(root))).float()  # (R, keep)
    right = (root[:, None] * zk.mT).float() @ q.mT                    # (keep, n)
    return stacked_up(coef).to(dtype).contiguous(), right.to(dtype).contiguous()


def _shape(spec: archmod.ModuleSpec, up: torch.Tensor, down: torch.Tensor):
    r = down.shape[0]
    if spec.kind == "conv":
        out, inn, kh, kw = spec.shape
        return up.reshape(out, r, 1, 1), down.reshape(r, inn, kh, kw)
    return up.reshape(up.shape[0], r), down.reshape(r, -1)


def to_state_dict(fused: FusedLora, dtype: torch.dtype | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """kohya tensors for a fused LoRA, in key order; plus notes on what was added.

    Args:
        fused: the fusion result.
        dtype: cast the fused factors to this dtype (default: keep theirs).
    """
    a = archmod.get(fused.arch)
    out: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    entries: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, archmod.ModuleSpec]] = {}
    by_parent: dict[str, dict[str, FusedModule]] = {}
    for name, m in fused.modules.items():
        spec = a.modules[name]
        if spec.parent:
            by_parent.setdefault(spec.parent, {})[name] = m
            continue
        up, down = m.up, m.down
        if dtype is not None:
            up, down = up.to(dtype), down.to(dtype)
        entries[name] = (up, down, m.bias, spec)
    for parent, parts in by_parent.items():
        dt = dtype or next(iter(parts.values())).up.dtype
        up, down = _join_parts(a, parent, parts, dt)
        biases = [(a.modules[p], m.bias) for p, m in parts.items() if m.bias is not None]
        bias = None
        if biases:
            bias = torch.zeros(a.modules[parent].out_features, dtype=dt)
            for pspec, b in biases:
                bias[pspec.row_offset:pspec.row_offset + b.shape[0]] = b.to(dt)
        entries[parent] = (up, down, bias, a.modules[parent])

    _pad_attention_blocks(a, fused, entries, notes)

    for name in sorted(entries, key=a.kohya_key):
        up, down, bias, spec = entries[name]
        key = a.kohya_key(name)
        # after the casts and the re-factoring of fused parts: never write Inf/NaN (fusion checked
        # its own output; this covers what happened to it here)
        require_finite(name, {"up": up, "down": down, "bias": bias}, what="fused update to be written")
        up, down = _shape(spec, up, down)
        out[f"{key}.lora_down.weight"] = down.detach().to("cpu").contiguous()
        out[f"{key}.lora_up.weight"] = up.detach().to("cpu").contiguous()
        out[f"{key}.alpha"] = torch.tensor(float(down.shape[0]), dtype=down.dtype)
        if bias is not None:
            out[f"{key}.bias"] = bias.detach().to("cpu").contiguous()

    for name in sorted(fused.passthrough, key=a.kohya_key):
        mod = fused.passthrough[name]
        key = a.kohya_key(name)
        for role, t in mod.tensors.items():
            if role == "dora_scale" and t.dim() == 1:
                t = t.reshape(-1, 1)  # PEFT's magnitude vector (out,) -> LyCORIS (out, 1)
            out[key + KOHYA_SUFFIX[role]] = t.detach().to("cpu").contiguous()
    for key in sorted(fused.extras):
        out[key] = fused.extras[key].detach().to("cpu").contiguous()
    return out, notes


def _pad_attention_blocks(a: archmod.Architecture, fused: FusedLora, entries: dict, notes: list[str]) -> None:
    """Give every OpenCLIP attention block with any of q/k/v/out all four (zero updates)."""
    for name in a.attention_padding(set(entries) | set(fused.passthrough)):
        spec = a.modules[name]
        dt = next(iter(entries.values()))[0].dtype if entries else torch.float16
        entries[name] = (torch.zeros(spec.out_features, 1, dtype=dt),
                         torch.zeros(1, spec.in_features, dtype=dt), None, spec)
        notes.append(f"{name}: added as a zero update so that A1111 applies the other projections "
                     "of this attention block")


def _merge_tag_frequency(content: dict[str, str], style: dict[str, str], others=()) -> str | None:
    """The inputs' kohya tag counts, each dataset under "content: NAME" / "style: NAME" (the
    further inputs of several: "content 2: NAME", ...)."""
    merged = {}
    for label, meta in (("content", content), ("style", style), *others):
        raw = meta.get("ss_tag_frequency")
        if not raw:
            continue
        try:  # metadata is file content: nesting bounded, no recursion depth chosen by the file
            data = loads_json(raw, max_depth=MAX_METADATA_DEPTH)
        except UntrustedJSONError:
            continue
        if isinstance(data, dict):
            for k, v in data.items():
                merged[f"{label}: {k}"] = v
    return json.dumps(merged) if merged else None


def merged_from(fused: FusedLora) -> str:
    """``modelspec.merged_from``: every input with its role, short hash and effective weight,
    ``"dog (content, a1b2c3d4e5f6, 1), ink (style, 0f0e0d0c0b0a, 0.8)"``."""
    return ", ".join(f"{i.name} ({role}, {i.short_hash or 'no hash'}, {i.weight:g})"
                     for role, infos in (("content", fused.contents), ("style", fused.styles)) for i in infos)


def build_metadata(fused: FusedLora, output_name: str, state: dict[str, torch.Tensor],
                   content_meta: dict[str, str] | None = None, style_meta: dict[str, str] | None = None,
                   notes: list[str] | None = None, input_meta: list[dict[str, str]] | None = None) -> dict[str, str]:
    """The header metadata of a fused file (all values are strings).

    ``input_meta``: with several inputs, every input's metadata (contents, then styles), for
    their tag counts; the first content's and style's are ``content_meta`` / ``style_meta``."""
    content_meta, style_meta = content_meta or {}, style_meta or {}
    defaults = archmod.ARCH_METADATA[fused.arch]
    ranks = {int(t.reshape(()).item()) for k, t in state.items() if k.endswith(".alpha")}
    dim = str(ranks.pop()) if len(ranks) == 1 else "Dynamic"
    p = fused.params

    def stated(key: str) -> str:
        """The content's value, else the style's, where it names the fused file's model (an
        input read for another model, by ``--arch`` or the loaded model, keeps its own out)."""
        return next((m[key] for m in (content_meta, style_meta)
                     if m.get(key) and archmod.names_arch({key: m[key]}, fused.arch)), defaults[key])

    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": dim,
        "ss_network_alpha": dim,
        "ss_base_model_version": stated("ss_base_model_version"),
        "ss_v2": defaults["ss_v2"],
        "ss_output_name": output_name,
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": stated("modelspec.architecture"),
        "modelspec.implementation": defaults["modelspec.implementation"],
        "modelspec.resolution": content_meta.get("modelspec.resolution") or defaults["modelspec.resolution"],
        "modelspec.title": output_name,
        "modelspec.date": _dt.date.today().isoformat(),
        "modelspec.merged_from": merged_from(fused),
        "modelspec.description": (
            f"NP-LoRA fusion of content {' + '.join(i.name for i in fused.contents)} and style "
            f"{' + '.join(i.name for i in fused.styles)} ({p.label()})"),
    }
    others = []
    if input_meta:
        infos = [("content", i, x) for i, x in enumerate(fused.contents)] + [
            ("style", j, x) for j, x in enumerate(fused.styles)]
        others = [(f"{role} {i + 1}", meta or {}) for (role, i, _), meta in zip(infos, input_meta) if i > 0]
    tags = _merge_tag_frequency(content_meta, style_meta, others)
    if tags:
        meta["ss_tag_frequency"] = tags
    counts = fused.counts()
    block = {
        "version": __version__,
        "method": p.method,
        "mu": p.mu, "c": p.c, "hard": p.hard,
        "k": p.k, "energy": p.energy, "k_policy": p.k_policy,
        "rank_tolerance": "singular values <= max(out, in) * eps(float32) * sigma_max are dropped",
        "scope": p.scope,
        "block_mu": p.block_mu,
        "block_c": {b.group: b.c for b in p.blocks},
        "chain": p.chain,
        "projection": "right (input space): dW = sum ws_j dW_sj + sum wc_i dW_ci (I - c V_k V_k^T), "
                      "c = mu/(1+mu) (per block group with block_mu), V_k of the joint style update"
                      + ("; chain: content i also projected off contents 1..i-1's top-k input directions"
                         if p.chain else ""),
        "output": "per fused module rank sum r_style + sum r_content; alpha = rank; scaling baked in",
        "content": _input_block(fused.content),
        "style": _input_block(fused.style),
        "contents": [_input_block(i) for i in fused.contents],
        "styles": [_input_block(i) for i in fused.styles],
        "modules": counts,
        "passthrough": {n: m.kind for n, m in sorted(fused.passthrough.items())},
        "notes": (notes or [])[:50],
        "warnings": fused.warnings[:50],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    meta["nplora"] = json.dumps(block, sort_keys=True)
    return meta


def _input_block(info) -> dict:
    return {"name": info.name, "file": os.path.basename(info.path), "sha256": info.sha256,
            "short_hash": info.short_hash, "weight": info.weight, "format": info.format}


def save_fused(fused: FusedLora, path: str | os.PathLike, *, output_name: str | None = None,
               overwrite: bool = False, dtype: torch.dtype | None = None,
               content_meta: dict[str, str] | None = None,
               style_meta: dict[str, str] | None = None,
               input_meta: list[dict[str, str]] | None = None) -> SavedFile:
    """Write ``fused`` to ``path`` (atomically; never over an existing file unless ``overwrite``,
    never over an input file whatever ``overwrite`` says: the inputs are ``fused.inputs``' paths).

    Args:
        output_name: ``ss_output_name`` / title (default: the file stem).
        dtype: cast the factors to this dtype (default: as fused).
        content_meta, style_meta: the inputs' metadata (base model version, tags).
        input_meta: with several inputs, every input's metadata (``build_metadata``).
    """
    path = Path(path)
    inputs = labelled_inputs(fused.content.path, fused.style.path) + [
        (f"input LoRA {i.name}", i.path) for i in fused.contents[1:] + fused.styles[1:] if i.path]
    check_output(path, inputs=inputs, overwrite=overwrite)  # before the work of building the tensors
    state, notes = to_state_dict(fused, dtype)
    meta = build_metadata(fused, output_name or path.stem, state, content_meta, style_meta, notes, input_meta)
    digest = write_file(path, state, meta, overwrite=overwrite, inputs=inputs)
    return SavedFile(str(path), digest, meta, len(state))
