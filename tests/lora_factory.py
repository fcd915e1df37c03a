"""Build real LoRA .safetensors files for the tests, with the module names and shapes of SD1.5,
SDXL, FLUX and the DiTs (Z-Image, Qwen-Image, FLUX.2, Chroma) as the committed architecture
tables list them (generated from the real diffusers / transformers model classes by
tools/gen_arch_tables.py).

Key names are written here from the naming conventions of each trainer family, independently
of the library's own name resolution, so that reading them back tests that resolution:

* kohya: ``lora_unet_`` + underscored path (SD1/SD2: diffusers block names; SDXL: SGM names;
  FLUX: BFL fused names), ``lora_te_`` / ``lora_te1_`` / ``lora_te2_`` / ``lora_te3_`` + HF path;
* peft: the dotted diffusers pipeline name + ``.lora_A.weight`` / ``.lora_B.weight``, no alpha;
* ldm: ``diffusion_model.`` + the original path (ComfyUI saves);
* ldm-peft: ``diffusion_model.`` + the diffusers path + ``lora_A/lora_B`` (ai-toolkit's Z-Image /
  Qwen-Image / FLUX.2 saves);
* kohya-split: ``lora_unet_`` + the underscored diffusers path (kohya-style trainers that wrap
  the diffusers model: Z-Image ``lora_unet_layers_0_attention_to_q``);
* lycoris: ``lycoris_`` + the underscored diffusers path (SimpleTuner);
* xlabs: ``double_blocks.N.processor.qkv_lora1.down.weight`` ...

The formats that spell diffusers names write a fused parent as its split parts.

Each file comes with its ground truth: per canonical (split) module the float64 factors and
scale, so tests can rebuild the exact dense updates.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import save_file

import lib_nplora

TABLES = Path(lib_nplora.__file__).parent / "arch" / "tables"


@lru_cache(maxsize=None)
def table(arch: str) -> tuple[dict, ...]:
    return tuple(json.loads((TABLES / f"{arch}.json").read_text())["modules"])


@lru_cache(maxsize=None)
def rows_by_name(arch: str) -> dict[str, dict]:
    return {r["name"]: r for r in table(arch)}


#: Architectures whose tables list the denoiser only (text encoders are generic in the library).
DITS = ("zimage", "qwenimage", "flux2", "chroma", "wan14b", "wan5b", "wan1b", "sd35l", "sd35m", "lumina2", "hidream",
        "flux2klein4b", "flux2klein9b")
#: Formats that spell diffusers names (fused parents are written as their parts).
SPLIT_FORMATS = ("peft", "ldm-peft", "kohya-split", "lycoris")


def text_encoder_row(path: str, shape: tuple[int, int], component: str = "te1", pipeline: str = "text_encoder") -> dict:
    """A row for a DiT text-encoder linear (Qwen3, Qwen2.5-VL, ...), which has no table: the
    library names it ``<component>.<flattened path>``; its diffusers name is ``<pipeline>.<path>``."""
    return {"name": f"{component}.{flat(path)}", "kind": "linear", "shape": list(shape),
            "aliases": [f"{pipeline}.{path}"]}


def flat(s: str) -> str:
    return s.replace(".", "_")


def is_attention(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return (".attn1." in name or ".attn2." in name or "self_attn" in name) and last in (
        "to_q", "to_k", "to_v", "0", "q_proj", "k_proj", "v_proj", "out_proj")


def select(arch: str, which: str = "attn", components=("unet",), limit: int | None = None,
           blocks: tuple[str, ...] | None = None) -> list[dict]:
    """Table rows to put LoRA modules on.

    which: "attn" (UNet attention q/k/v/out, TE self-attention), "linear" (every linear),
    "conv" (every conv), "all" (linear + conv). FLUX: parents (fused) and other linears.
    blocks: keep only names containing one of these substrings.
    """
    out = []
    for r in table(arch):
        comp = r["name"].split(".", 1)[0]
        if comp not in components or ":" in r["name"] or r["kind"] == "norm":
            continue
        dit_attn = arch in ("flux",) + DITS and any(a in r["name"] for a in ("_attn.", ".attn.", ".attention."))
        if which == "attn" and not (is_attention(r["name"]) or dit_attn):
            continue
        if which == "linear" and r["kind"] != "linear":
            continue
        if which == "conv" and r["kind"] != "conv":
            continue
        if blocks and not any(b in r["name"] for b in blocks):
            continue
        out.append(r)
    return out[:limit] if limit else out


def kohya_key(arch: str, row: dict) -> str:
    comp, path = row["name"].split(".", 1)
    if comp == "unet" and arch in ("sd1", "sd2") and row["aliases"]:
        dpath = row["aliases"][0].split(".", 1)[1]
        if dpath.split(".")[0] in ("down_blocks", "mid_block", "up_blocks"):
            path = dpath
    return f"lora_{comp}_{flat(path)}"


def peft_key(arch: str, row: dict) -> str:
    if not row["aliases"]:
        raise ValueError(f"{row['name']} has no diffusers name")
    return row["aliases"][0]


def parts_of(arch: str, row: dict) -> list[dict]:
    byname = rows_by_name(arch)
    return [byname[f"{row['name']}:{p}"] for p, _ in row.get("parts", ())]


@dataclass
class Truth:
    """Ground truth of one canonical module: dW = scale * up @ down (float64, flattened)."""

    up: torch.Tensor
    down: torch.Tensor
    scale: float

    def dense(self) -> torch.Tensor:
        return self.scale * (self.up @ self.down)


@dataclass
class Made:
    path: Path
    arch: str
    truth: dict[str, Truth] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)


def _factors(g, out, inn, r, conv_kernel=None):
    up = torch.randn(out, r, generator=g, dtype=torch.float64) / r ** 0.5
    down = torch.randn(r, inn, generator=g, dtype=torch.float64) / inn ** 0.5
    return up, down


def make_lora(path, arch: str, rows: list[dict], *, fmt: str = "kohya", rank: int = 4, alpha: float | None = None,
              seed: int = 0, dtype=torch.float32, kind: str = "lora", metadata: dict | None = None) -> Made:
    """Write a LoRA file with one module per row; return its ground truth per canonical module.

    fmt: "kohya", "peft", "ldm" (``diffusion_model.`` dotted), "xlabs" (FLUX attention only),
        "ldm-peft", "kohya-split", "lycoris" (see the module docstring).
    kind: "lora" (LoCon for conv rows), "tucker" (conv rows), "loha", "lokr".
    In the formats that spell diffusers names (SPLIT_FORMATS) fused parents are written as their
    split parts.
    """
    path = Path(path)
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    made = Made(path, arch)
    for row in rows:
        targets = [row]
        if fmt in SPLIT_FORMATS and row.get("parts"):
            targets = parts_of(arch, row)
        for t in targets:
            _add_module(sd, made, arch, t, fmt, rank, alpha, g, dtype, kind)
    meta = {"ss_network_module": "networks.lora"}
    meta.update(metadata or {})
    save_file(sd, str(path), metadata=meta)
    made.keys = list(sd)
    return made


def _record(made: Made, arch: str, row: dict, up, down, scale):
    """Truth per canonical module; fused parents are recorded per part (row slices)."""
    if row.get("parts"):
        offset = 0
        for part in parts_of(arch, row):
            rows_n = part["shape"][0]
            if offset >= up.shape[0]:
                break
            made.truth[part["name"]] = Truth(up[offset:offset + rows_n], down, scale)
            offset += rows_n
    else:
        made.truth[row["name"]] = Truth(up, down, scale)


def _add_module(sd, made, arch, row, fmt, rank, alpha, g, dtype, kind):
    shape = row["shape"]
    out = shape[0]
    inn = 1
    for s in shape[1:]:
        inn *= s
    conv = row["kind"] == "conv"
    if fmt == "kohya":
        key = kohya_key(arch, row)
    elif fmt == "ldm":
        key = "diffusion_model." + row["name"].split(".", 1)[1]
    elif fmt == "peft":
        key = peft_key(arch, row)
    elif fmt == "xlabs":
        key = _xlabs_key(row["name"])
    elif fmt == "ldm-peft":
        key = "diffusion_model." + peft_key(arch, row).split(".", 1)[1]
    elif fmt == "kohya-split":
        key = "lora_unet_" + flat(peft_key(arch, row).split(".", 1)[1])
    elif fmt == "lycoris":
        key = "lycoris_" + flat(peft_key(arch, row).split(".", 1)[1])
    else:
        raise ValueError(fmt)
    if fmt in ("kohya-split", "lycoris", "ldm-peft", "ldm") and not row["name"].startswith("unet."):
        key = kohya_key(arch, row)  # text encoders keep the kohya spelling in these families

    if kind == "lora" or (kind == "tucker" and not conv):
        up, down = _factors(g, out, inn, rank)
        scale = (alpha / rank) if alpha is not None else 1.0
        d_t, u_t = down, up
        if conv:
            d_t = down.reshape(rank, *shape[1:])
            u_t = up.reshape(out, rank, 1, 1)
        _put(sd, key, fmt, u_t.to(dtype), d_t.to(dtype), alpha, dtype)
        _record(made, arch, row, up, down, scale)
    elif kind == "tucker":
        kh, kw = shape[2], shape[3]
        up = torch.randn(out, rank, generator=g, dtype=torch.float64) / rank ** 0.5
        mid = torch.randn(rank, rank, kh, kw, generator=g, dtype=torch.float64) / rank
        down = torch.randn(rank, shape[1], generator=g, dtype=torch.float64) / shape[1] ** 0.5
        sd[f"{key}.lora_up.weight"] = up.reshape(out, rank, 1, 1).to(dtype)
        sd[f"{key}.lora_mid.weight"] = mid.to(dtype)
        sd[f"{key}.lora_down.weight"] = down.reshape(rank, shape[1], 1, 1).to(dtype)
        if alpha is not None:
            sd[f"{key}.alpha"] = torch.tensor(float(alpha), dtype=dtype)
        up32, mid32, down32 = (x.to(dtype).double() for x in (up, mid, down))
        dense = torch.einsum("oa,abyx,bi->oiyx", up32, mid32, down32).reshape(out, -1)
        scale = (alpha / rank) if alpha is not None else 1.0
        made.truth[row["name"]] = Truth(dense, torch.eye(dense.shape[1], dtype=torch.float64), scale)
    elif kind == "loha":
        w1a, w1b = _factors(g, out, inn, rank)
        w2a, w2b = _factors(g, out, inn, rank)
        sd[f"{key}.hada_w1_a"], sd[f"{key}.hada_w1_b"] = w1a.to(dtype), w1b.to(dtype)
        sd[f"{key}.hada_w2_a"], sd[f"{key}.hada_w2_b"] = w2a.to(dtype), w2b.to(dtype)
        if alpha is not None:
            sd[f"{key}.alpha"] = torch.tensor(float(alpha), dtype=dtype)
        w1a, w1b, w2a, w2b = (x.to(dtype).double() for x in (w1a, w1b, w2a, w2b))
        dense = (w1a @ w1b) * (w2a @ w2b)
        scale = (alpha / rank) if alpha is not None else 1.0
        made.truth[row["name"]] = Truth(dense, torch.eye(inn, dtype=torch.float64), scale)
    elif kind == "lokr":
        f1 = 4 if out % 4 == 0 and inn % 4 == 0 else 1
        w1 = torch.randn(f1, f1, generator=g, dtype=torch.float64)
        w2a, w2b = _factors(g, out // f1, inn // f1, rank)
        sd[f"{key}.lokr_w1"] = w1.to(dtype)
        sd[f"{key}.lokr_w2_a"], sd[f"{key}.lokr_w2_b"] = w2a.to(dtype), w2b.to(dtype)
        if alpha is not None:
            sd[f"{key}.alpha"] = torch.tensor(float(alpha), dtype=dtype)
        w1, w2a, w2b = (x.to(dtype).double() for x in (w1, w2a, w2b))
        dense = torch.kron(w1, w2a @ w2b)
        scale = (alpha / rank) if alpha is not None else 1.0
        made.truth[row["name"]] = Truth(dense, torch.eye(inn, dtype=torch.float64), scale)
    else:
        raise ValueError(kind)


def _put(sd, key, fmt, up, down, alpha, dtype):
    if key.startswith("lora_te"):
        fmt = "kohya"
    if fmt in ("kohya", "ldm", "kohya-split", "lycoris"):
        sd[f"{key}.lora_down.weight"] = down.contiguous()
        sd[f"{key}.lora_up.weight"] = up.contiguous()
        if alpha is not None:
            sd[f"{key}.alpha"] = torch.tensor(float(alpha), dtype=dtype)
    elif fmt in ("peft", "ldm-peft"):
        sd[f"{key}.lora_A.weight"] = down.reshape(down.shape[0], -1).contiguous() if down.dim() == 2 else down.contiguous()
        sd[f"{key}.lora_B.weight"] = up.contiguous()
    elif fmt == "xlabs":
        sd[f"{key}.down.weight"] = down.contiguous()
        sd[f"{key}.up.weight"] = up.contiguous()


def _xlabs_key(name: str) -> str:
    _, path = name.split(".", 1)
    block, idx, rest = path.split(".", 2)
    table_ = {"img_attn.qkv": "qkv_lora1", "txt_attn.qkv": "qkv_lora2",
              "img_attn.proj": "proj_lora1", "txt_attn.proj": "proj_lora2"}
    return f"{block}.{idx}.processor.{table_[rest]}"


def read_output(path, arch: str, extra_rows=()) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(up * alpha/rank, down) float64 per canonical (split) module of a written kohya file, mapped
    by this factory's own key spelling (not the library's); ``extra_rows``: rows outside the
    table (``text_encoder_row``)."""
    from safetensors.torch import load_file

    sd = load_file(str(path))
    names = {kohya_key(arch, r): r for r in list(table(arch)) + list(extra_rows) if ":" not in r["name"]}
    out = {}
    for key in {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in sd}:
        row = names[key]
        down = sd[f"{key}.lora_down.weight"].double()
        r = down.shape[0]
        up = (float(sd[f"{key}.alpha"]) / r) * sd[f"{key}.lora_up.weight"].double().reshape(-1, r)
        down = down.reshape(r, -1)
        if row.get("parts"):
            offset = 0
            for part in parts_of(arch, row):
                n = part["shape"][0]
                out[part["name"]] = (up[offset:offset + n], down)
                offset += n
        else:
            out[row["name"]] = (up, down)
    return out


def dense_fused(style: Truth | None, content: Truth | None, ws: float, wc: float, c: float,
                k: int | None = None) -> torch.Tensor:
    """The NP-LoRA formula on dense float64 matrices, independent of the library.

    V_k: with k None the whole row space of dW_s (orthonormal basis of down_s^T by QR: the
    paper's fast path, exact because the random up_s has full column rank); else the top-k
    right singular vectors of the dense dW_s.
    """
    total = 0
    if style is not None:
        total = total + ws * style.dense()
    if content is not None:
        dwc = wc * content.dense()
        if style is not None and c > 0:
            if style.down.shape[0] < style.down.shape[1]:
                vk = style_basis_ref(style, k)
            else:
                dws = style.dense()
                _, s, vh = torch.linalg.svd(dws, full_matrices=False)
                rank = int((s > max(dws.shape) * torch.finfo(torch.float32).eps * s[0]).sum())
                vk = vh[:min(k, rank) if k is not None else rank].T
            dwc = dwc - c * (dwc @ vk) @ vk.T
        total = total + dwc
    return total


def lowrank_rel_err(up1, down1, up2, down2) -> float:
    """||up1 @ down1 - up2 @ down2||_F / ||up2 @ down2||_F from the factors (float64, no dense m x n)."""
    x = torch.cat([up1.double(), -up2.double()], dim=1)
    y = torch.cat([down1.double(), down2.double()], dim=0)
    diff = float(((x.T @ x) * (y @ y.T)).sum().clamp_min(0)) ** 0.5
    u2, d2 = up2.double(), down2.double()
    ref = float(((u2.T @ u2) * (d2 @ d2.T)).sum()) ** 0.5
    return diff / ref


def style_basis_ref(truth: Truth, k: int | None = None) -> torch.Tensor:
    """Orthonormal basis (n, k) of the top-k input directions of scale*up@down, float64.

    QR of down^T gives the row space Q (exact when up has full column rank, as random factors
    do); the SVD of the small (m, r) matrix up @ down @ Q orders the directions inside it.
    """
    q, _ = torch.linalg.qr(truth.down.T)
    if k is None:
        return q
    _, _, wh = torch.linalg.svd(truth.up @ (truth.down @ q), full_matrices=False)
    return q @ wh[:k].T


def fused_factors(style: Truth | None, content: Truth | None, ws: float, wc: float, c: float,
                  k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The NP-LoRA formula as float64 factors (up, down), for factor-form truths."""
    ups, downs = [], []
    if style is not None:
        ups.append(ws * style.scale * style.up)
        downs.append(style.down)
    if content is not None:
        d = content.down
        if style is not None and c > 0:
            v = style_basis_ref(style, k)
            d = d - c * (d @ v) @ v.T
        ups.append(wc * content.scale * content.up)
        downs.append(d)
    return torch.cat(ups, dim=1), torch.cat(downs, dim=0)


#: a block list's numbered blocks (``double_blocks.3.``, ``layers.0.``, ...) at the start of a path
BLOCK_LIST = re.compile(r"^(double_blocks|single_blocks|transformer_blocks|layers|blocks)\.(\d+)\.")


def in_first_blocks(path: str) -> bool:
    """Whether a model path (no ``unet.``) is outside every block list or in its block 0 (the
    reduced DiTs the hosts' sampling checks build; refiners and guidance layers stay whole)."""
    m = BLOCK_LIST.match(path)
    return m is None or m.group(2) == "0"


def first_block_rows(arch: str) -> list[dict]:
    """The table's denoiser weights of those reduced models (fused ones as one row, no norms)."""
    return [r for r in table(arch) if r["name"].startswith("unet.") and ":" not in r["name"]
            and r["kind"] != "norm" and in_first_blocks(r["name"].split(".", 1)[1])]


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded float32 values for a model's state dict, drawn in sorted key order: weights
    (>= 2-D) scaled by 1/sqrt(fan-in), biases small, other 1-D tensors (norm scales) near 1."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in sorted(shapes):
        x = torch.randn(shapes[k], generator=g)
        if len(shapes[k]) >= 2:
            x /= x[0].numel() ** 0.5
        elif k.endswith("bias"):
            x *= 0.02
        else:
            x = 1 + 0.1 * x
        out[k] = x.contiguous()
    return out


def reference_weights(arch: str, base: dict, rows: list[dict], content: Made, style: Made, c: float,
                      in_place: bool = False) -> dict:
    """``base`` (model path + ``.weight`` -> W) with every row's weight replaced by W + dW, dW the
    NP-LoRA formula (weights 1) of the two files' ground truth, per canonical module (a fused
    weight's row slices one by one, stacked), computed in float64, returned float32.
    ``in_place``: replace them in ``base`` itself (no second model in memory)."""
    out = base if in_place else dict(base)
    for r in rows:
        key = r["name"].split(".", 1)[1] + ".weight"
        dw = torch.cat([dense_fused(style.truth[p["name"]], content.truth[p["name"]], 1.0, 1.0, c)
                        for p in parts_of(arch, r) or [r]], dim=0)
        out[key] = (base[key].double() + dw.reshape(base[key].shape)).float().contiguous()
    return out
