"""Run by ``test_e2e_neo_keymaps.py`` with Forge Neo's Python, in the Neo folder: GGUF DiTs, as Neo
loads and samples them, with NP-LoRA's fused LoRA through Neo's own LoRA code, against the formula.

For Z-Image, FLUX.1 and Qwen-Image (the GGUF bases people run on Neo) and each case

* ``Q8_0 offline``: no "(fp16 LoRA)" choice: ``LoraLoader.refresh`` dequantizes each patched
  weight, merges, and quantizes it again (Neo has a PyTorch quantizer for Q8_0);
* ``Q4_K online``: a "(fp16 LoRA)" choice (``online_mode=True``): the patches are applied to the
  dequantized weight at every forward (``forge_online_loras``);
* ``Q4_K offline``: Neo has no PyTorch quantizer for Q4_K: its refresh raises
  ``NotImplementedError``; the Forge adapters' ``unmergeable_gguf`` must name exactly those
  weights (so NP-LoRA says so and generates without, instead of stopping the generation; the row
  also counts the weights Neo's failed refresh leaves merged: its next refresh without patches
  returns early, the failed one never recorded its state);

it builds the reduced DiT of ``neo_sampling.py`` (real width, one block per list, seeded random
weights), writes it as a ``.gguf`` file with Neo's bundled ``gguf`` package (every 2-D weight whose
rows are whole quantization blocks in that type, the rest F32, as GGUF files of these models are
made), reads it with Neo's ``backend.utils.load_torch_file`` (``ParameterGGUF`` tensors), builds
the model as Neo's loader does for GGUF storage (``using_forge_operations(bnb_dtype="gguf")``,
``load_state_dict``, ``storage_dtype = "gguf"``), bakes it (``memory_management.bake_gguf_model``)
and wraps it in ``KModel``. Then it samples (3 Euler steps, as ``neo_sampling.py``) the base, the
fused LoRA through Neo's loader, the two input files stacked the same way, and the base again
after a refresh without patches (every stored GGUF tensor restored bit for bit), against two
references built without NP-LoRA's or Neo's LoRA code:

* **W + dW**: a float32 model whose weights are what the host's GGUF weights dequantize to
  (``dequantize_tensor``) plus dW, the NP-LoRA formula in float64 (``lora_factory.dense_fused``);
  what the online path computes;
* **requantized** (offline): the GGUF model with each patched weight set to Neo's quantization of
  that W + dW: cast to the dequantized dtype (float16), as Neo's ``merge_lora_to_weight`` returns
  a merged weight, then ``gguf_cls.quantize_pytorch``, as its refresh quantizes it.

Prints one JSON line per model and case.

    python tests/e2e/neo_gguf_sampling.py <repository root> <temp folder>
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

ARCHS = ("zimage", "flux", "qwenimage")
CASES = (("Q8_0", False), ("Q4_K", True), ("Q4_K", False))


def q4_k_bytes(x):
    """``x`` (rows, n), n a multiple of 256, in GGML's Q4_K layout: per super-block of 256 values
    fp16 ``d`` and ``dmin``, 12 bytes of eight 6-bit scales and mins, 128 bytes of 4-bit quants
    (sub-block 2j in the low nibbles of a 32-byte group, 2j + 1 in the high ones), so that a value
    is ``d * scale_j * q - dmin * min_j``. A plain min / max fit (not llama.cpp's search): what the
    host reads back is all the check uses. Neither Neo's ``gguf`` package nor PyPI's can write
    K-quants (they dequantize them only). Returns uint8 (rows, n / 256 * 144)."""
    import numpy as np

    rows, n = x.shape
    sub = x.astype(np.float32).reshape(-1, 8, 32)                     # (blocks, 8 sub-blocks, 32)
    lo = np.minimum(sub.min(axis=2), 0.0)
    scale = (sub.max(axis=2) - lo) / 15.0                              # (blocks, 8)
    mins = -lo
    d = (scale.max(axis=1) / 63.0).astype(np.float16)
    dmin = (mins.max(axis=1) / 63.0).astype(np.float16)
    df, dminf = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    sc = np.clip(np.round(np.divide(scale, df, out=np.zeros_like(scale), where=df > 0)), 0, 63).astype(np.uint8)
    mn = np.clip(np.round(np.divide(mins, dminf, out=np.zeros_like(mins), where=dminf > 0)), 0, 63).astype(np.uint8)
    step = (df * sc)[:, :, None]
    q = np.clip(np.round(np.divide(sub + (dminf * mn)[:, :, None], step, out=np.zeros_like(sub), where=step > 0)),
                0, 15).astype(np.uint8)                                # (blocks, 8, 32)
    packed = np.empty((sub.shape[0], 12), np.uint8)
    packed[:, 0:4] = (sc[:, 0:4] & 0x3F) | ((sc[:, 4:8] >> 4) << 6)
    packed[:, 4:8] = (mn[:, 0:4] & 0x3F) | ((mn[:, 4:8] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((mn[:, 4:8] & 0x0F) << 4)
    qs = (q[:, 0::2, :] | (q[:, 1::2, :] << 4)).reshape(-1, 128)        # (blocks, 4 groups x 32 bytes)
    out = np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), packed, qs], axis=1)
    return out.reshape(rows, n // 256 * 144)


def write_gguf(sd: dict[str, torch.Tensor], path: Path, qtype_name: str) -> dict[str, str]:
    """``sd`` as a GGUF file (Neo's ``gguf`` package): 2-D float weights whose rows are whole
    blocks of ``qtype_name`` quantized (Q4_K by ``q4_k_bytes``, checked against the package's
    dequantization), the rest F32. Returns key -> stored type name."""
    import gguf

    qtype = gguf.GGMLQuantizationType[qtype_name]
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), "nplora-test")
    types = {}
    for key, t in sd.items():
        t = t.detach().to(torch.float32).contiguous()
        if t.dim() == 2 and t.shape[-1] % block == 0 and key.endswith(".weight"):
            if qtype_name == "Q4_K":
                data = q4_k_bytes(t.numpy())
                back = torch.from_numpy(gguf.quants.dequantize(data, qtype)).reshape(t.shape)
                err = float((back - t).abs().max() / t.abs().max())
                if err > 0.1:  # a 4-bit grid: within a sixteenth of the range, with rounding
                    raise RuntimeError(f"q4_k_bytes does not read back through gguf's dequantize ({key}: {err:.3f})")
            else:
                data = gguf.quants.quantize(t.numpy(), qtype)
            writer.add_tensor(key, data, raw_dtype=qtype)
            types[key] = qtype_name
        else:
            writer.add_tensor(key, t.numpy())
            types[key] = "F32"
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    return types


def gguf_model(arch: str, path: Path, layouts, flux):
    """The DiT from a ``.gguf`` file as Neo's loader builds it for GGUF storage, baked, in KModel."""
    import neo_sampling as ns
    from backend import memory_management
    from backend.operations import using_forge_operations
    from backend.state_dict import load_state_dict
    from backend.utils import load_torch_file

    sd = load_torch_file(str(path))
    ops = using_forge_operations(device=torch.device("cpu"), dtype=torch.float32, manual_cast_enabled=False,
                                 bnb_dtype="gguf")
    dit, cfg = ns.build_dit(arch, layouts, flux, operations=ops)
    dit = dit.to_empty(device="cpu")
    load_state_dict(dit, sd)
    kmodel, patcher = ns.wrap(dit, arch, cfg, storage_dtype="gguf", computation_dtype=torch.float32)
    memory_management.bake_gguf_model(kmodel)
    return dit, kmodel, patcher


def stored(dit) -> dict[str, torch.Tensor]:
    """Every parameter's stored tensor (GGUF bytes or floats), copied."""
    return {k: v.data.clone() for k, v in dit.named_parameters()}


def dequantized(dit) -> tuple[dict[str, torch.Tensor], dict[str, torch.dtype]]:
    """What the host's weights are to its computation: ``dequantize_tensor`` of each, as float32,
    and the dtype it gives (float16 for GGUF: its ``computation_dtype``)."""
    from backend.operations_gguf import dequantize_tensor

    values, dtypes = {}, {}
    for k, v in dit.named_parameters():
        w = dequantize_tensor(v).detach()
        values[k], dtypes[k] = w.to(torch.float32).reshape(v.shape).clone(), w.dtype
    return values, dtypes


def run(arch: str, qtype: str, online: bool, tmp: Path, layouts, flux) -> dict:
    import lora_factory as lf
    import neo_sampling as ns
    from backend.utils import get_attr_with_parent
    from safetensors.torch import load_file

    from lib_nplora.webui.hosts.forge import unmergeable_gguf

    t0 = time.monotonic()
    dit, cfg = ns.build_dit(arch, layouts, flux)
    dit = dit.to_empty(device="cpu")
    floats = {k: tuple(v.shape) for k, v in dit.state_dict().items() if v.is_floating_point()}
    raw = lf.random_weights(floats)
    del dit
    path = tmp / f"{arch}-{qtype}.gguf"
    types = write_gguf(raw, path, qtype)
    del raw
    dit, kmodel, patcher = gguf_model(arch, path, layouts, flux)
    before = stored(dit)
    host_w, host_dtype = dequantized(dit)
    rows, content_truth, style_truth, fused_state = ns.fused_pair(arch, tmp)
    row_keys = {r["name"].split(".", 1)[1] + ".weight" for r in rows}
    quantized_rows = sorted(k for k in row_keys if types.get(k) == qtype)

    out, row = {}, {"arch": arch, "qtype": qtype, "online": online, "table_weights": len(rows),
                    "quantized_table_weights": len(quantized_rows),
                    "stored": sorted({getattr(getattr(p, "gguf_cls", None), "__name__", "float")
                                      for p in dit.parameters()})}
    out["base"] = ns.sample(kmodel, arch)
    fused, unmatched, skipped, weights = ns.neo_load(patcher, fused_state, "nplora:test", online_mode=online)
    row.update(fused_unmatched=unmatched, fused_skipped=skipped, fused_weights=weights)
    keys = list(fused.lora_patches[("nplora:test", 1.0, 1.0, online)])
    bad = unmergeable_gguf(fused, keys)
    row["adapter_unmergeable"] = {name: len(v) for name, v in bad.items()}
    row["adapter_unmergeable_keys_are_the_quantized_rows"] = sorted(
        k.removeprefix("diffusion_model.") for v in bad.values() for k in v) == quantized_rows
    try:
        fused.refresh_loras()
        row["neo_refresh_error"] = None
    except NotImplementedError as e:
        row["neo_refresh_error"] = str(e)[:200]
    if row["neo_refresh_error"] is None:
        out["fused"] = ns.sample(kmodel, arch)
        stacked, *_ = ns.neo_load(patcher, load_file(str(content_truth.path)), "content", online_mode=online)
        stacked, *_ = ns.neo_load(stacked, load_file(str(style_truth.path)), "style", online_mode=online)
        stacked.refresh_loras()
        out["stacked"] = ns.sample(kmodel, arch)
    patcher.refresh_loras()  # no LoRA: Neo restores its backup
    row["restored"] = all(torch.equal(v.data, before[k]) for k, v in dit.named_parameters())
    # after Neo's error: the weights its refresh merged before the failing one, still merged
    row["left_changed"] = sum(not torch.equal(v.data, before[k]) for k, v in dit.named_parameters())
    out["base_again"] = ns.sample(kmodel, arch)
    row["base_again_equal"] = bool(torch.equal(out["base_again"], out["base"]))
    if "fused" in out:
        # W + dW: the host's dequantized weights plus the float64 formula, in a float32 model
        ref_sd = lf.reference_weights(arch, host_w, rows, content_truth, style_truth, ns.C)
        float_dit, _ = ns.build_dit(arch, layouts, flux)
        float_dit = float_dit.to_empty(device="cpu")
        float_dit.load_state_dict(ref_sd, strict=False)
        float_k, _ = ns.wrap(float_dit, arch, cfg)
        out["reference"] = ns.sample(float_k, arch)
        del float_dit, float_k
        row["fused_vs_reference"] = ns.rel(out["fused"], out["reference"])
        if not online:  # Neo's rule for a merged weight: W + dW in the dequantized dtype, quantized again
            for key in row_keys:
                _, _, w = get_attr_with_parent(dit, key)
                if getattr(w, "gguf_cls", None) is not None:
                    w.gguf_cls.quantize_pytorch(ref_sd[key].to(host_dtype[key]), w)
                else:
                    w.data.copy_(ref_sd[key])
            out["requantized"] = ns.sample(kmodel, arch)
            row["fused_vs_requantized"] = ns.rel(out["fused"], out["requantized"])
            row["requantized_vs_reference"] = ns.rel(out["requantized"], out["reference"])
        row["fused_vs_stacked"] = ns.rel(out["fused"], out["stacked"])
        row["stacked_vs_base"] = ns.rel(out["stacked"], out["base"])
    row["finite"] = all(bool(torch.isfinite(v).all()) for v in out.values())
    row["seconds"] = round(time.monotonic() - t0, 1)
    for p in (content_truth.path, style_truth.path, path):
        p.unlink()
    return row


def main() -> None:
    root, tmp = Path(sys.argv[1]), Path(sys.argv[2])
    import neo_keymaps

    layouts = neo_keymaps.neo_imports(root)  # Neo's vendored packages (its gguf) first, as Neo has them
    for arch in ARCHS:
        for qtype, online in CASES:
            try:
                row = run(arch, qtype, online, tmp, layouts, neo_keymaps.FLUX)
            except Exception as e:  # one row saying why, then the next case
                import traceback

                row = {"arch": arch, "qtype": qtype, "online": online, "error": f"{type(e).__name__}: {e}"[:400],
                       "trace": traceback.format_exc()[-2000:]}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
