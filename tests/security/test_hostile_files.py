"""Hostile LoRA files (issue 10, section 2): file content never chooses a regex's cost or a
recursion depth, memory for reading stays within the documented bound, malformed headers and
metadata end in the project's FormatError naming the file, messages never echo a file's bytes,
and a result that overflows is an error naming the module, never a written file.

Hang detection: reads that used to hang run in a subprocess with a generous timeout (a hang
detector, not a timing assertion). Memory: the peak RSS of a subprocess that reads a bomb file
is compared with the bound documented in ``lib_nplora.formats.convert``.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import lora_factory as F
from lib_nplora.api import fuse_files
from lib_nplora.errors import FormatError
from lib_nplora.formats import convert
from lib_nplora.formats import safetensors_file as sf
from lib_nplora.formats.reader import load_lora, pattern_value
from lib_nplora.formats.untrusted import MAX_METADATA_DEPTH, UntrustedJSONError, json_depth_ok, loads_json, show
from lib_nplora.params import FuseParams

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = settings(max_examples=int(os.environ.get("NPLORA_FUZZ_EXAMPLES", "40")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _child(code: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with the worktree and tests/ importable."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(ROOT))


def _row(arch: str, shape: tuple[int, int]) -> dict:
    return next(r for r in F.select(arch, "attn", ("unet",)) if tuple(r["shape"]) == shape)


def _raw_file(path: Path, header: bytes | str | dict, data: bytes = b"") -> Path:
    if isinstance(header, dict):
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


# --------------------------------------------------------------------------- 1. regexes


def _peft_file(tmp_path: Path, adapter_metadata: str, name: str = "peft.safetensors") -> tuple[Path, list[dict]]:
    rows = F.select("sdxl", "attn", ("unet",), limit=3)
    made = F.make_lora(tmp_path / name, "sdxl", rows, fmt="peft", rank=4)
    sd = load_file(str(made.path))
    save_file(sd, str(made.path), metadata={"format": "pt", "lora_adapter_metadata": adapter_metadata})
    return made.path, rows


def test_catastrophic_alpha_pattern_is_refused_quickly(tmp_path):
    """A nested-quantifier pattern against a real module path (exponential in re.match) ends in
    a FormatError; the subprocess timeout only detects a hang."""
    evil = "(.*)*(.*)*(.*)*(.*)*(.*)*(.*)*z"
    path, _ = _peft_file(tmp_path, json.dumps({"unet.lora_alpha": 4, "unet.r": 4,
                                               "unet.alpha_pattern": {evil: 8}}))
    proc = _child(f"""
        from lib_nplora.errors import FormatError
        from lib_nplora.formats.reader import load_lora
        try:
            load_lora({str(path)!r})
        except FormatError as e:
            print("ERR", e)
    """, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ERR peft.safetensors: ") and "regular expression" in proc.stdout


_SEG = st.text(alphabet="abcxy019_", min_size=1, max_size=3)


@SETTINGS
@given(st.lists(_SEG, min_size=1, max_size=6), st.lists(st.lists(_SEG, min_size=1, max_size=4), max_size=6),
       st.lists(st.floats(1, 64), min_size=6, max_size=6))
def test_literal_patterns_follow_peft_first_match(path_segs, key_segs, values):
    """Ours == PEFT's get_pattern_key rule (first key in order with
    re.match(rf"(.*\\.)?({key})$", path)) for literal keys (escaped, as a literal name means)."""
    path = ".".join(path_segs)
    keys = [".".join(k) for k in key_segs]
    # some keys are real suffixes of the path
    keys += [".".join(path_segs[i:]) for i in range(0, len(path_segs), 2)]
    patterns = {}
    for i, k in enumerate(keys):
        patterns.setdefault(k, (len(patterns), values[i % len(values)]))
    expected = next((patterns[k][1] for k in patterns if re.match(rf"(.*\.)?({re.escape(k)})$", path)), None)
    assert pattern_value(patterns, path) == expected


def test_real_module_names_match_like_peft_unescaped():
    """For diffusers module names (what trainers write), PEFT's unescaped regex and the literal
    suffix match pick the same key."""
    names = [F.peft_key("sdxl", r).split(".", 1)[1] for r in F.select("sdxl", "attn", ("unet",))[:40]]
    keys = sorted({n.split(".", k)[-1] for n in names for k in (0, 3, 5)} | {"to_q", "attn1.to_k", "to_out.0"})
    patterns = {k: (i, float(i)) for i, k in enumerate(keys)}
    for n in names:
        peft = next((patterns[k][1] for k in keys if re.match(rf"(.*\.)?({k})$", n)), None)
        assert pattern_value(patterns, n) == peft


def test_peft_alpha_pattern_literal_suffix_is_applied(tmp_path):
    rows = F.select("sdxl", "attn", ("unet",), limit=3)
    target = F.peft_key("sdxl", rows[1]).split(".", 1)[1]
    suffix = ".".join(target.split(".")[-3:])
    path, _ = _peft_file(tmp_path, json.dumps({"unet.lora_alpha": 2, "unet.r": 4,
                                               "unet.alpha_pattern": {suffix: 8, target: 16}}))
    lora = load_lora(path)
    scales = [lora.modules[r["name"]].factors.scale for r in rows]
    assert scales == [0.5, 2.0, 0.5]  # the first key in the file's order wins, as in PEFT


@pytest.mark.parametrize("meta,needle", [
    ("[1, 2]", "not a JSON object"),
    ('{"unet.lora_alpha": "8"}', "'unet.lora_alpha' is a string"),
    ('{"unet.lora_alpha": null}', "'unet.lora_alpha' is null"),
    ('{"unet.lora_alpha": NaN}', "'unet.lora_alpha' is NaN"),
    ('{"unet.lora_alpha": Infinity}', "'unet.lora_alpha' is infinite"),
    ('{"unet.lora_alpha": 1e999}', "'unet.lora_alpha' is infinite"),
    ('{"unet.lora_alpha": true}', "'unet.lora_alpha' is a boolean"),
    ('{"unet.lora_alpha": [8]}', "'unet.lora_alpha' is a list"),
    ('{"unet.lora_alpha": 8, "unet.alpha_pattern": ["to_q"]}', "'unet.alpha_pattern' is a list"),
    ('{"unet.lora_alpha": 8, "unet.alpha_pattern": {"to_q": "8"}}', "gives 'to_q' a string"),
    ('{"unet.lora_alpha": 8, "unet.alpha_pattern": {"to_q": NaN}}', "gives 'to_q' NaN"),
    ('{"unet.lora_alpha": 8, "unet.rank_pattern": {"to_q": 2.5}}', "gives 'to_q' 2.5"),
    ('{"unet.lora_alpha": 8, "unet.r": "4"}', "'unet.r' is a string"),
    ('{"unet.lora_alpha": 8, "unet.use_rslora": "yes"}', "'unet.use_rslora' is a string"),
    ('{"unet.lora_alpha": 8, "unet.lora_alpha": 2}', "'unet.lora_alpha' twice"),
    ('{"unet.lora_alpha": ', "not valid JSON"),
    ("[" * 10000 + "]" * 10000, "nested deeper"),
])
def test_malformed_peft_metadata_is_refused(tmp_path, meta, needle):
    path, _ = _peft_file(tmp_path, meta)
    with pytest.raises(FormatError) as e:
        load_lora(path)
    msg = str(e.value)
    assert msg.startswith("peft.safetensors: ") and needle in msg and "lora_adapter_metadata" in msg
    assert e.value.hint  # says what to do


def test_huge_peft_alpha_is_refused_naming_the_module(tmp_path):
    path, rows = _peft_file(tmp_path, json.dumps({"unet.lora_alpha": 1e300, "unet.r": 4}))
    with pytest.raises(FormatError, match="not a finite float32") as e:
        load_lora(path)
    assert str(e.value).startswith("peft.safetensors: module unet.")


# --------------------------------------------------------------------------- 2. memory bombs

_RSS_CHILD = """
    import resource, sys, torch
    from lib_nplora.formats.reader import load_lora
    from lib_nplora.formats import convert
    # warm up what the conversion uses (LAPACK, allocator), so that the baseline includes it
    a = torch.randn(300, 40)
    torch.linalg.svd(a, full_matrices=False); torch.linalg.qr(a); torch.kron(a[:4], a[:3])
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    before = rss()
    lora = load_lora(sys.argv[1])
    # VmHWM (this process image's peak), not ru_maxrss: that keeps a forked parent's peak
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    out = sum(m.factors.up.numel() + m.factors.down.numel() for m in lora.modules.values()) * 4
    m = next(iter(lora.modules.values()))
    print(peak - before, out, m.factors.rank, m.lossy, m.note)
"""


def _measure(path: Path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_RSS_CHILD), str(path)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    used, out, rank, lossy, note = proc.stdout.split(" ", 4)
    return int(used), int(out), int(rank), lossy == "True", note


def _bound(path: Path, out_bytes: int) -> int:
    """The documented bound (formats/convert.py docstring): file + 20 x header + 3 x output + a
    constant for one module's work (row blocks, SVD workspace) and allocator slack."""
    size = path.stat().st_size
    header = sf.read_header(path).data_offset
    return size + 20 * header + 3 * out_bytes + 48 * 2 ** 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_loha_bomb_reads_within_the_memory_bound(tmp_path):
    """640 KiB of LoHa factors (rank 128 x 128 on a 640x640 layer): its rank-16384 factors
    would take ~170 MiB (and ~4x that in QR work); the read stays within the bound."""
    row = _row("sd1", (640, 640))
    key = F.kohya_key("sd1", row)
    g = torch.Generator().manual_seed(0)
    r = 128
    sd = {f"{key}.hada_w{i}_{ab}": (torch.randn(640, r, generator=g) if ab == "a" else torch.randn(r, 640, generator=g))
          .div(8).half() for i in (1, 2) for ab in ("a", "b")}
    path = tmp_path / "loha_bomb.safetensors"
    save_file(sd, str(path))
    assert path.stat().st_size < 700 * 1024
    used, out, rank, lossy, note = _measure(path)
    assert rank == convert.MAX_CONVERTED_RANK and lossy and "randomized SVD" in note
    assert used <= _bound(path, out), (used, _bound(path, out))
    assert used < 640 * r * r * 4  # not even one of the rank-r*r factors was formed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_lokr_bomb_reads_within_the_memory_bound(tmp_path):
    """~350 KiB of LoKr factors of inner rank 1000 each (8x8 by 80x80 blocks): kron of the
    factors would be 640 x 10^6 (2.4 GiB); the Kronecker SVD needs only the output."""
    row = _row("sd1", (640, 640))
    key = F.kohya_key("sd1", row)
    g = torch.Generator().manual_seed(1)
    big = 1000
    sd = {f"{key}.lokr_w1_a": torch.randn(8, big, generator=g).half(),
          f"{key}.lokr_w1_b": torch.randn(big, 8, generator=g).half(),
          f"{key}.lokr_w2_a": torch.randn(80, big, generator=g).div(30).half(),
          f"{key}.lokr_w2_b": torch.randn(big, 80, generator=g).div(30).half()}
    path = tmp_path / "lokr_bomb.safetensors"
    save_file(sd, str(path))
    used, out, rank, lossy, note = _measure(path)
    assert rank == convert.MAX_CONVERTED_RANK and lossy and "Kronecker" in note
    assert used <= _bound(path, out), (used, _bound(path, out))


def _hadamard(t):
    return (t["hada_w1_a"].double() @ t["hada_w1_b"].double()) * (t["hada_w2_a"].double() @ t["hada_w2_b"].double())


@pytest.mark.parametrize("m,n,r,cap,how", [
    (40, 30, 3, 8, "exact rank-9"),            # r1*r2 <= 4 * cap: the factors, exact as before
    (40, 30, 8, 8, "by SVD"),                  # small layer: full SVD of the dense product
    (200, 150, 8, 8, "by randomized SVD"),     # large layer: randomized SVD from row blocks
    (120, 120, 6, 8, "by randomized SVD"),     # product rank 36 but true rank 6 <= cap: exact
])
def test_loha_truncation_against_the_dense_formula(m, n, r, cap, how):
    g = torch.Generator().manual_seed(m + r)
    t = {"hada_w1_a": torch.randn(m, r, generator=g), "hada_w1_b": torch.randn(r, n, generator=g),
         "hada_w2_a": torch.randn(m, r, generator=g), "hada_w2_b": torch.randn(r, n, generator=g)}
    if m == 120:  # the second term has rank 1 (stored at rank 6), so dW has rank 6
        t["hada_w2_a"] = t["hada_w2_a"][:, :1].repeat(1, r)
        t["hada_w2_b"] = t["hada_w2_b"][:1].repeat(r, 1) / r
    conv = convert.loha(t, cap)
    dense = _hadamard(t)
    got = conv.factors.up.double() @ conv.factors.down.double() * conv.factors.scale
    s = torch.linalg.svdvals(dense)
    k = conv.factors.rank
    assert how in conv.note and k == min(cap, int((s > s[0] * 1e-5).sum()))
    optimal = float(s[k:].norm())
    err = float((got - dense).norm())
    if optimal < 1e-6 * float(s.norm()):
        assert err < 1e-4 * float(s.norm()) and not conv.lossy   # exact
    else:
        assert conv.lossy and err <= 1.02 * optimal               # near the best rank-k error
        best = float((s[:k] ** 2).sum() / (s ** 2).sum())
        reported = float(re.search(r"\(([0-9.]+)% of its energy kept", conv.note).group(1)) / 100
        assert best - 0.01 <= reported <= best + 1e-4   # the energy really kept, at most the optimum


@pytest.mark.parametrize("full1,full2,r2,cap", [(True, True, None, 16), (True, False, 3, 8), (False, False, 5, 12)])
def test_lokr_kronecker_svd_is_the_exact_truncation(full1, full2, r2, cap):
    g = torch.Generator().manual_seed(cap)
    t, w = {}, []
    for i, (full, p, q, r) in enumerate(((full1, 4, 6, 3), (full2, 10, 8, r2)), start=1):
        if full:
            t[f"lokr_w{i}"] = torch.randn(p, q, generator=g)
            w.append(t[f"lokr_w{i}"].double())
        else:
            t[f"lokr_w{i}_a"], t[f"lokr_w{i}_b"] = torch.randn(p, r, generator=g), torch.randn(r, q, generator=g)
            w.append(t[f"lokr_w{i}_a"].double() @ t[f"lokr_w{i}_b"].double())
    conv = convert.lokr(t, cap)
    dense = torch.kron(w[0], w[1])
    got = conv.factors.up.double() @ conv.factors.down.double() * conv.factors.scale
    s = torch.linalg.svdvals(dense)
    k = conv.factors.rank
    assert k == min(cap, int((s > s[0] * 1e-5).sum())) and "Kronecker" in conv.note
    assert abs(float((got - dense).norm()) - float(s[k:].norm())) < 1e-4 * float(s.norm())


def test_lokr_within_the_cap_keeps_its_exact_factors():
    g = torch.Generator().manual_seed(3)
    t = {"lokr_w1": torch.randn(4, 4, generator=g), "lokr_w2_a": torch.randn(10, 2, generator=g),
         "lokr_w2_b": torch.randn(2, 8, generator=g)}
    conv = convert.lokr(t, 256)
    dense = torch.kron(t["lokr_w1"].double(), t["lokr_w2_a"].double() @ t["lokr_w2_b"].double())
    got = conv.factors.up.double() @ conv.factors.down.double()
    assert conv.factors.rank == 8 and not conv.lossy and "exact rank-8" in conv.note
    assert torch.allclose(got, dense, atol=1e-5)


# --------------------------------------------------------------------------- 3. headers

_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("header,data,needle", [
    ('{"w": {"dtype": "F32", "shape": [Infinity], "data_offsets": [0, 8]}}', b"\0" * 8, "malformed"),
    ('{"w": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 8]}}', b"\0" * 8, "malformed"),
    ('{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, Infinity]}}', b"\0" * 8, "malformed"),
    ('{"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}', b"\0" * 8, "malformed"),
    ('{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0.0, 8]}}', b"\0" * 8, "malformed"),
    ('{"w": {"dtype": "F32", "shape": [true, 2], "data_offsets": [0, 8]}}', b"\0" * 8, "malformed"),
    ('{"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}', b"\0" * 8, "malformed"),
    ('{"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}', b"\0" * 8, "malformed"),
    ('{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 16]}}', b"\0" * 16, "malformed"),
    ('{"w": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}}', b"\0" * 8, "malformed"),
    ('{"w": {"dtype": ["F32"], "shape": [2], "data_offsets": [0, 8]}}', b"\0" * 8, "malformed"),
    ('{"w": {"dtype": "F32", "shape": [1,1,1,1,1,1,1,1,1,2], "data_offsets": [0, 8]}}', b"\0" * 8, "malformed"),
    ('{"w": {"dtype": "F32", "shape": [0, 1000000000000000000000000000000], "data_offsets": [0, 0]}}', b"",
     "over 1099511627776 elements"),
    ('{"w": {"dtype": "F32", "shape": [0, 4294967296, 4294967296], "data_offsets": [0, 0]}}', b"",
     "elements"),
    ('{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
     '"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}', b"\0" * 16, "'w' twice"),
    ('{"w": {"dtype": "F32", "shape": [2], "shape": [2], "data_offsets": [0, 8]}}', b"\0" * 8, "'shape' twice"),
    ('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
     '"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', b"\0" * 8, "overlap"),
    ('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}', b"\0" * 8, "outside the file"),
    ('{"__metadata__": {"a": "b"}, "__metadata__": {}}', b"", "'__metadata__' twice"),
    ('{"__metadata__": ["a"]}', b"", "map of strings"),
    ('{"__metadata__": {"ss_tag_frequency": {"a": 1}}}', b"", "map of strings"),
    ('{"w": ' + "[" * 100_000 + "]" * 100_000 + "}", b"", "nested deeper"),
    ('{"w": ' + "{\"a\":" * 5000 + "1" + "}" * 5000 + "}", b"", "nested deeper"),
    ('{"w": [}', b"", "damaged header"),
    ('{"w": 1' + "0" * 5000 + "}", b"", "damaged header"),
])
def test_hostile_headers_end_in_format_errors(tmp_path, header, data, needle):
    path = _raw_file(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(FormatError) as e:
        sf.read_file(path)
    assert str(e.value).startswith("bad.safetensors: ") and needle in str(e.value)
    with pytest.raises(FormatError):
        load_lora(path)


@SETTINGS
@given(st.integers(9, 20_000), st.sampled_from(["[", '{"a":']), st.booleans())
def test_random_nesting_depths(tmp_path_factory, depth, opener, in_metadata_string):
    """Any depth over the limit ends in FormatError (never RecursionError); a deeply nested
    value inside a metadata *string* is fine for the header (it is a string there)."""
    closer = "]" if opener == "[" else "}"
    nested = opener * depth + "1" + closer * depth if opener != "[" else "[" * depth + "]" * depth
    path = tmp_path_factory.mktemp("n") / "deep.safetensors"
    if in_metadata_string:
        header = json.dumps({"__metadata__": {"ss_tag_frequency": nested}, "w": _ENTRY})
        _raw_file(path, header, b"\0" * 8)
        header_read = sf.read_header(path)
        assert header_read.metadata["ss_tag_frequency"] == nested
        if depth > MAX_METADATA_DEPTH:
            with pytest.raises(UntrustedJSONError, match="nested deeper"):
                loads_json(nested, max_depth=MAX_METADATA_DEPTH)
        else:
            assert loads_json(nested, max_depth=MAX_METADATA_DEPTH) == json.loads(nested)
    else:
        _raw_file(path, '{"w": ' + nested + "}")
        with pytest.raises(FormatError, match="deep.safetensors: has a damaged header: it is nested deeper"):
            sf.read_file(path)


@SETTINGS
@given(st.recursive(st.none() | st.integers(-5, 5) | st.text(alphabet='ab"\\[]{}', max_size=6),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(alphabet='ab"[]{}', max_size=4),
                                                                        c, max_size=3), max_leaves=30))
def test_depth_check_agrees_with_the_parser(value):
    text = json.dumps(value)

    def depth(v):
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0
    d = depth(value)
    assert json_depth_ok(text, d) and (d == 0 or not json_depth_ok(text, d - 1))
    assert loads_json(text, max_depth=max(d, 1)) == value


def test_deep_tag_frequency_does_not_break_a_fusion(tmp_path):
    """ss_tag_frequency is json-parsed when the fused file's metadata is merged."""
    rows = F.select("sd1", "attn", ("unet",), limit=2)
    deep = "[" * 50_000 + "]" * 50_000
    content = F.make_lora(tmp_path / "c.safetensors", "sd1", rows, metadata={"ss_tag_frequency": deep}).path
    style = F.make_lora(tmp_path / "s.safetensors", "sd1", rows, seed=1,
                        metadata={"ss_tag_frequency": json.dumps({"set": {"tag": 2}})}).path
    fuse_files(content, style, tmp_path / "out.safetensors", FuseParams(), device="cpu")
    from safetensors import safe_open
    with safe_open(str(tmp_path / "out.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["ss_tag_frequency"]) == {"style: set": {"tag": 2}}


# --------------------------------------------------------------------------- 4. no byte echo


@SETTINGS
@given(st.binary(min_size=8, max_size=8), st.binary(max_size=64))
def test_header_length_field_is_never_echoed(tmp_path_factory, head, rest):
    n = struct.unpack("<Q", head)[0]
    path = tmp_path_factory.mktemp("e") / "x.safetensors"
    path.write_bytes(head + rest)
    try:
        sf.read_file(path)
    except FormatError as e:
        msg = str(e)
        assert head.hex() not in msg
        if n >= 10 ** 5:  # short numbers occur in any message ("character 0")
            assert str(n) not in msg
        if n > sf.MAX_HEADER_BYTES or 8 + n > len(head + rest):
            assert "header length field out of range" in msg
    except Exception as e:  # UnsafeFileError (pickle-looking bytes) is a project error too
        from lib_nplora.errors import NpLoraError
        assert isinstance(e, NpLoraError)


def test_non_lora_bytes_get_a_plain_message(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_bytes(b"Dear diary, today I " + b"x" * 100)
    with pytest.raises(FormatError) as e:
        sf.read_file(path)
    assert str(e.value) == ("notes.safetensors: is not a safetensors file (header length field out of range: "
                            f"over the {sf.MAX_HEADER_BYTES}-byte limit)")


@pytest.mark.parametrize("key", ["\x1b[2J\x1b[31mpwned" + "a" * 5000 + ".lora_down.weight",
                                 "evil\nline\r" + "b" * 3000, "x" * 100_000])
def test_keys_from_a_file_are_escaped_and_capped(tmp_path, key):
    path = tmp_path / "keys.safetensors"
    save_file({key: torch.zeros(2), "ok.lora_up.weight": torch.zeros(2, 1)}, str(path))
    with pytest.raises(FormatError) as e:
        load_lora(path)
    msg = str(e.value)
    assert len(msg) < 600 and "\x1b" not in msg and "\n" not in msg and "\r" not in msg
    assert show(key) in msg or "keys.safetensors" in msg


def test_show_caps_and_escapes():
    assert show("a" * 10) == "'aaaaaaaaaa'"
    s = show("\x1b" + "z" * 500)
    assert "\x1b" not in s and len(s) < 120 and "(501 characters)" in s


# --------------------------------------------------------------------------- 5. overflow


def _kohya(tmp_path, name, alpha, up_scale=1.0, seed=0):
    rows = F.select("sd1", "attn", ("unet",), limit=2)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for r in rows:
        key = F.kohya_key("sd1", r)
        out, inn = r["shape"]
        sd[f"{key}.lora_down.weight"] = torch.randn(4, inn, generator=g) / 30
        sd[f"{key}.lora_up.weight"] = torch.randn(out, 4, generator=g) * up_scale / 30
        sd[f"{key}.alpha"] = torch.tensor(float(alpha))
    path = tmp_path / name
    save_file(sd, str(path))
    return path, rows


@pytest.mark.parametrize("alpha,up_scale,dtype,needle", [
    (1e38, 1.0, "fp16", "does not fit float16"),
    (1e38, 1.0, "bf16", None),                    # bf16 has float32's range: fine
    (3e38, 1e20, "fp32", "not finite even in float32"),
    (3e38, 1e20, "fp16", "not finite even in float32"),
])
def test_overflowing_fusion_is_an_error_and_writes_nothing(tmp_path, alpha, up_scale, dtype, needle):
    content, rows = _kohya(tmp_path, "content.safetensors", alpha, up_scale)
    style, _ = _kohya(tmp_path, "style.safetensors", 4, seed=1)
    out = tmp_path / "out.safetensors"
    before = sorted(os.listdir(tmp_path))
    if needle is None:
        fuse_files(content, style, out, FuseParams(), dtype=dtype, device="cpu")
        state = load_file(str(out))
        assert all(torch.isfinite(t.float()).all() for t in state.values())
        return
    with pytest.raises(FormatError) as e:
        fuse_files(content, style, out, FuseParams(), dtype=dtype, device="cpu")
    msg = str(e.value)
    assert needle in msg and msg.startswith("content.safetensors: module unet.") and e.value.module in \
        {r["name"] for r in rows}
    assert sorted(os.listdir(tmp_path)) == before  # no output, no temporary file


def test_overflow_in_a_content_only_module_names_it(tmp_path):
    content, rows = _kohya(tmp_path, "content.safetensors", 1e38)
    style, _ = _kohya(tmp_path, "style.safetensors", 4, seed=1)
    # the style touches other modules only: the content's modules pass through, weighted
    other = F.select("sd1", "attn", ("unet",))[5]
    key = F.kohya_key("sd1", other)
    moved = {f"{key}.lora_down.weight": torch.randn(4, other["shape"][1]) / 30,
             f"{key}.lora_up.weight": torch.randn(other["shape"][0], 4) / 30}
    save_file(moved, str(style))
    with pytest.raises(FormatError, match="does not fit float16") as e:
        fuse_files(content, style, tmp_path / "o.safetensors", FuseParams(), dtype="fp16", device="cpu")
    assert e.value.module in {r["name"] for r in rows} and e.value.path.endswith("content.safetensors")
    assert not (tmp_path / "o.safetensors").exists()
    assert math.isfinite(load_lora(content).modules[rows[0]["name"]].factors.scale)


def test_the_writer_refuses_a_cast_that_overflows_and_writes_nothing(tmp_path):
    """A fusion made in float32 fits there; writing it as fp16 would overflow: the writer's own
    check (after its casts) names the module and leaves no file."""
    from lib_nplora.formats.reader import load_lora as read
    from lib_nplora.formats.writer import save_fused
    from lib_nplora.fusion.merge import fuse

    content, rows = _kohya(tmp_path, "content.safetensors", 1e38, 1.0)
    style, _ = _kohya(tmp_path, "style.safetensors", 4, seed=1)
    fused = fuse(read(content), read(style), FuseParams(), dtype=torch.float32, device="cpu")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(FormatError, match="not finite") as e:
        save_fused(fused, tmp_path / "out.safetensors", dtype=torch.float16)
    assert e.value.module in {r["name"] for r in rows}
    assert sorted(os.listdir(tmp_path)) == before
