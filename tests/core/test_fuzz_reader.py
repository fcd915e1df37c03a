"""Fuzzed LoRA files: random bytes, hostile headers, valid safetensors with wrong shapes, dtypes,
ranks, key names and values. Reading (and fusing what reads) ends in the project's own errors
only, and never leaves an output file behind."""

import json
import os
import struct
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import lora_factory as F
from lib_nplora.errors import NpLoraError
from lib_nplora.formats.reader import load_lora, load_pair, peek
from lib_nplora.formats.writer import save_fused
from lib_nplora.fusion.merge import fuse
from lib_nplora.params import FuseParams

SETTINGS = settings(max_examples=int(os.environ.get("NPLORA_FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow])

REAL = [F.kohya_key("sd1", r) for r in F.select("sd1", "attn", ("unet", "te"))[:6]] + \
       [F.peft_key("sdxl", r) for r in F.select("sdxl", "attn", ("unet",))[:3]] + \
       ["lora_unet_double_blocks_0_img_attn_qkv", "double_blocks.0.processor.qkv_lora1", "lora_te3_encoder_block_0_layer_0_SelfAttention_q"]
SUFFIXES = [".lora_down.weight", ".lora_up.weight", ".alpha", ".lora_A.weight", ".lora_B.weight", ".lora_mid.weight",
            ".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".hada_t1", ".lokr_w1", ".lokr_w2", ".lokr_w2_a",
            ".lokr_w2_b", ".lokr_t2", ".diff", ".diff_b", ".dora_scale", ".w_norm", ".on_input", ".weight", ".oft_blocks",
            ".scale", ".bias", ".down.weight", ".up.weight", ""]
DTYPES = [torch.float16, torch.float32, torch.bfloat16, torch.float64, torch.int8, torch.uint8, torch.bool,
          torch.int64, torch.float8_e4m3fn]


def _expect_project_error(path):
    """Read (and if it reads, fuse with itself and save); only NpLoraError may escape."""
    out_dir = Path(tempfile.mkdtemp())
    try:
        try:
            peek(path)
        except NpLoraError:
            pass
        try:
            lora = load_lora(path)
        except NpLoraError:
            return
        try:
            c, s = load_pair(path, path)
            fused = fuse(c, s, FuseParams(mu=1.0))
            save_fused(fused, out_dir / "o.safetensors")
        except NpLoraError:
            pass
        assert lora.modules
    finally:
        leftovers = [p for p in os.listdir(out_dir) if p != "o.safetensors"]
        assert not leftovers, leftovers
        for p in os.listdir(out_dir):
            os.unlink(out_dir / p)
        os.rmdir(out_dir)


@SETTINGS
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.safetensors"
        p.write_bytes(data)
        _expect_project_error(p)


@SETTINGS
@given(st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4),
                    max_leaves=20),
       st.binary(max_size=256), st.integers(0, 2**64 - 1) | st.none())
def test_hostile_headers(header, data, declared):
    raw = json.dumps(header).encode()
    n = len(raw) if declared is None else declared
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.safetensors"
        p.write_bytes(struct.pack("<Q", n) + raw + data)
        _expect_project_error(p)


@st.composite
def tensors(draw):
    shape = draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 8, 320, 768]), min_size=0, max_size=4))
    numel = 1
    for s in shape:
        numel *= s
    if numel > 300_000:
        shape = shape[:1]
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(["randn", "nan", "inf", "zeros"]))
    t = torch.randn(shape) if kind != "zeros" else torch.zeros(shape)
    if t.numel() and kind == "nan":
        t.view(-1)[0] = float("nan")
    if t.numel() and kind == "inf":
        t.view(-1)[-1] = float("inf")
    return t.to(dtype)


@SETTINGS
@given(st.dictionaries(st.tuples(st.sampled_from(REAL), st.sampled_from(SUFFIXES)), tensors(), min_size=0, max_size=8),
       st.dictionaries(st.sampled_from(["ss_base_model_version", "modelspec.architecture", "lora_adapter_metadata",
                                        "ss_v2", "x"]), st.text(max_size=30), max_size=3))
def test_valid_safetensors_with_wrong_contents(entries, metadata):
    sd = {k + s: t.contiguous() for (k, s), t in entries.items()}
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.safetensors"
        save_file(sd, str(p), metadata=metadata or None)
        _expect_project_error(p)


@SETTINGS
@given(st.integers(1, 8), st.integers(1, 8), st.sampled_from([torch.float16, torch.float32, torch.bfloat16]),
       st.booleans())
def test_plausible_loras_with_mismatched_ranks(r_down, r_up, dtype, with_alpha):
    row = F.select("sd1", "attn", ("unet",))[2]
    key = F.kohya_key("sd1", row)
    sd = {f"{key}.lora_down.weight": torch.randn(r_down, row["shape"][1]).to(dtype),
          f"{key}.lora_up.weight": torch.randn(row["shape"][0], r_up).to(dtype)}
    if with_alpha:
        sd[f"{key}.alpha"] = torch.tensor(float(r_down))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.safetensors"
        save_file(sd, str(p))
        if r_down == r_up:
            assert load_lora(p).modules[row["name"]].factors.rank == r_down
        _expect_project_error(p)
