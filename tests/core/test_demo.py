"""``python -m lib_nplora demo``: the first run with nothing but the checkout.

Run through the real entry point (a subprocess); the files it writes are checked with the
library's reader and, for one module, with safetensors and the dense formula directly.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import lora_factory as F
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lib_nplora.formats.reader import load_lora

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^(\S+)\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$")


def demo(*args, cwd=ROOT):
    # timeout: a hang detector only (the demo takes seconds)
    return subprocess.run([sys.executable, "-m", "lib_nplora", "demo", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def blocks(stdout: str) -> dict[str, tuple[int, float, float]]:
    """The per-block table: block -> (modules, overlap, max cos)."""
    out = {}
    for line in stdout.splitlines():
        m = ROW.match(line)
        if m:
            out[m[1]] = (int(m[2]), float(m[3]), float(m[4]))
    return out


def test_demo_builds_analyzes_fuses_and_verifies(tmp_path):
    folder = tmp_path / "first run"
    r = demo("--out", folder)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr

    # the files: a real SD1.5 kohya pair (kohya's 192 UNet + 72 text-encoder targets) and the fusion
    content = load_lora(folder / "demo_content.safetensors")
    style = load_lora(folder / "demo_style.safetensors")
    fused = load_lora(folder / "fused.safetensors")
    for lora in (content, style):
        assert (lora.arch, lora.format, len(lora.modules)) == ("sd1", "kohya", 264)
        assert set(lora.ranks().values()) == {8}
        assert sum(n.startswith("te.") for n in lora.modules) == 72
    assert set(fused.modules) == set(content.modules)
    assert set(fused.ranks().values()) == {16}
    with safe_open(str(folder / "fused.safetensors"), "pt") as f:
        block = json.loads(f.metadata()["nplora"])
        assert f.get_tensor(next(k for k in f.keys() if k.endswith("lora_down.weight"))).dtype == torch.float16
    assert block["content"]["file"] == "demo_content.safetensors" and block["c"] == 1 / 3

    # the verification line, with an error bound the fp16 file can meet
    line = next(x for x in r.stdout.splitlines() if x.startswith("[4/4] verified:"))
    assert re.search(r"verified: 7 sampled modules .*\(5 projected, 2 text-encoder\)", line)
    assert float(re.search(r"within ([0-9.e+-]+) relative error", line)[1]) < 5e-3

    # the overlap is substantial, as in real pairs: far above what unrelated rank-8 LoRAs give
    # (about sqrt(8 / in) = 0.10 - 0.16 here) and far from identical subspaces (1)
    table = blocks(r.stdout)
    assert len(table) == 18 and table["total"][0] == 264 and table["te"][0] == 72
    for name, (_, overlap, max_cos) in table.items():
        assert 0.3 < overlap < 0.8, (name, overlap)
        assert 0.5 < max_cos < 0.99, (name, max_cos)

    # one module checked here independently: raw tensors, alpha/rank, the dense formula
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    sd = {role: load_file(str(folder / f"{name}.safetensors"))
          for role, name in (("c", "demo_content"), ("s", "demo_style"), ("f", "fused"))}
    dense = {role: (t[f"{key}.alpha"].double() / t[f"{key}.lora_down.weight"].shape[0])
             * t[f"{key}.lora_up.weight"].double() @ t[f"{key}.lora_down.weight"].double()
             for role, t in sd.items()}
    truth_s = F.Truth(dense["s"], torch.eye(320, dtype=torch.float64), 1.0)
    truth_c = F.Truth(dense["c"], torch.eye(320, dtype=torch.float64), 1.0)
    expected = F.dense_fused(truth_s, truth_c, 1.0, 1.0, 1 / 3)
    assert float((dense["f"] - expected).norm() / expected.norm()) < 5e-3
    assert float((dense["f"] - dense["s"] - dense["c"]).norm() / expected.norm()) > 0.05  # it did project

    # what to do next
    assert "serve --lora-dir" in r.stdout and "<nplora:demo_content:demo_style>" in r.stdout
    assert "inspect" in r.stdout and "--hard" in r.stdout

    # again into the same folder: its own files are replaced, with the same bytes (seeded)
    before = (folder / "demo_content.safetensors").read_bytes()
    r = demo("--out", folder)
    assert r.returncode == 0, r.stderr
    assert (folder / "demo_content.safetensors").read_bytes() == before


def test_demo_default_folder_and_refusal_of_foreign_files(tmp_path):
    # somebody's own LoRA where the demo would write its style file: refused, nothing written
    rows = F.select("sd1", "attn", ("unet",), limit=4)
    (tmp_path / "nplora-demo").mkdir()
    theirs = F.make_lora(tmp_path / "nplora-demo" / "demo_style.safetensors", "sd1", rows, seed=3)
    before = theirs.path.read_bytes()
    r = demo(cwd=tmp_path)  # default folder: ./nplora-demo
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nplora: error: demo_style.safetensors: already exists")
    assert "was not written by the demo" in lines[0] and "--out" in lines[0]
    assert theirs.path.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "nplora-demo").iterdir()) == ["demo_style.safetensors"]

    # --out naming a file, not a folder
    (tmp_path / "file").write_text("x")
    r = demo("--out", tmp_path / "file")
    assert r.returncode == 1 and "is not a folder" in r.stderr and "Traceback" not in r.stderr
