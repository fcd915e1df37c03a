"""The command line: fuse, inspect, analyze; every failure is one line and leaves no file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import lora_factory as F
from lib_nplora.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pair(tmp_path):
    rows = F.select("sdxl", "attn", ("unet", "te1"), blocks=("input_blocks.4.1.", "layers.0."))
    c = F.make_lora(tmp_path / "dog.safetensors", "sdxl", rows, rank=4, alpha=4, seed=1)
    s = F.make_lora(tmp_path / "ink.safetensors", "sdxl", rows, fmt="peft", rank=8, seed=2)
    return c, s


def run(*args):
    return subprocess.run([sys.executable, "-m", "lib_nplora", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_fuse_through_the_real_entry_point(pair, tmp_path):
    c, s = pair
    out = tmp_path / "dog_ink.safetensors"
    r = run("fuse", c.path, s.path, "-o", out, "--mu", "1", "--k", "4", "--style-weight", "0.8", "--dtype", "fp32")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr and "fused" in r.stderr
    meta = json.loads(__import__("safetensors").safe_open(str(out), "pt").metadata()["nplora"])
    assert meta["mu"] == 1.0 and meta["k"] == 4 and meta["style"]["weight"] == 0.8
    assert next(iter(load_file(str(out)).values())).dtype == torch.float32
    # again without --force: refused, file unchanged
    before = out.read_bytes()
    r = run("fuse", c.path, s.path, "-o", out)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nplora: error: dog_ink.safetensors: already exists")
    assert "--force" in lines[0] and out.read_bytes() == before


@pytest.mark.parametrize("flags", [["--hard"], ["--direct"], ["--energy", "0.9"], ["--scope", "all"]])
def test_fuse_modes(pair, tmp_path, flags, capsys):
    c, s = pair
    out = tmp_path / "o.safetensors"
    assert main(["fuse", str(c.path), str(s.path), "-o", str(out), *flags]) == 0
    block = json.loads(__import__("safetensors").safe_open(str(out), "pt").metadata()["nplora"])
    if flags == ["--hard"]:
        assert block["c"] == 1.0
    if flags == ["--direct"]:
        assert block["c"] == 0.0 and block["modules"]["projected"] == 0
    if flags[0] == "--energy":
        assert block["energy"] == 0.9 and "beyond the paper" in block["k_policy"]
    if flags[0] == "--scope":
        assert block["scope"] == "all"


def _no_output(tmp_path, name="o.safetensors"):
    return not (tmp_path / name).exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_errors_are_one_line_naming_file_and_module(pair, tmp_path, capsys):
    c, s = pair
    (tmp_path / "model.ckpt").write_bytes(b"\x80\x04junk")
    sd = load_file(str(c.path))
    key = next(k for k in sd if k.endswith("lora_down.weight"))
    sd[key][0, 0] = float("inf")
    save_file(sd, str(tmp_path / "broken.safetensors"))
    sd15 = F.make_lora(tmp_path / "sd15.safetensors", "sd1", F.select("sd1", "attn", ("unet",), limit=4), rank=2)
    cases = [
        (["fuse", tmp_path / "model.ckpt", s.path], ["model.ckpt", "unpickl", ".safetensors"]),
        (["fuse", tmp_path / "broken.safetensors", s.path], ["broken.safetensors", key.rsplit(".", 2)[0], "NaN"]),
        (["fuse", sd15.path, s.path], ["sd15", "ink", "SD1", "SDXL"]),
        (["fuse", c.path, s.path, "--mu", "-1"], ["mu must be between"]),
        (["fuse", c.path, tmp_path / "missing.safetensors"], ["missing.safetensors", "not found"]),
        (["fuse", c.path, s.path, "--k", "0"], ["k must be"]),
    ]
    for argv, words in cases:
        capsys.readouterr()
        code = main(["fuse" if argv[0] == "fuse" else argv[0], *map(str, argv[1:]), "-o", str(tmp_path / "o.safetensors")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1, argv
        assert len(err) == 1 and err[0].startswith("nplora: error: "), err
        for w in words:
            assert w in err[0], (w, err[0])
        assert _no_output(tmp_path)


def test_inspect(pair, capsys):
    c, s = pair
    assert main(["inspect", str(s.path)]) == 0
    out = capsys.readouterr().out
    assert "SDXL" in out and "diffusers" in out and "ranks: 8:" in out.replace("ranks", "ranks")
    assert main(["inspect", str(c.path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "SDXL" and info["format"] == "kohya"
    assert info["modules"] == len(c.truth) and info["ranks"] == {"4": len(c.truth)}


def test_analyze_table_and_json(pair, tmp_path, capsys):
    c, s = pair
    js = tmp_path / "a.json"
    assert main(["analyze", str(c.path), str(s.path), "--json", str(js), "--k", "4"]) == 0
    out = capsys.readouterr().out
    assert "input_blocks.4" in out and "total" in out and "overlap" in out
    data = json.loads(js.read_text())
    assert len(data["modules"]) == len(c.truth)
    assert all(0 <= m["overlap"] <= 1 and m["k"] == 4 for m in data["modules"])


def test_arch_reads_files_whose_metadata_disagree_for_the_given_model(tmp_path, capsys):
    """Keys that FLUX.1 and Chroma share, metadata that names each: refused naming both and
    --arch; with --arch flux the same command fuses, and the output is a FLUX.1 file."""
    rows = [F.rows_by_name("flux")["unet.double_blocks.2.img_attn.qkv"]]
    c = F.make_lora(tmp_path / "dog.safetensors", "flux", rows, rank=2, seed=1,
                    metadata={"ss_base_model_version": "chroma"})
    s = F.make_lora(tmp_path / "ink.safetensors", "flux", rows, rank=2, seed=2,
                    metadata={"modelspec.architecture": "Flux.1-dev/lora"})
    out = tmp_path / "o.safetensors"
    assert main(["fuse", str(c.path), str(s.path), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "dog is for Chroma" in err and "ink is for FLUX" in err and "--arch" in err and not out.exists()
    assert main(["fuse", str(c.path), str(s.path), "-o", str(out), "--arch", "flux"]) == 0
    meta = __import__("safetensors").safe_open(str(out), "pt").metadata()
    # the content's "chroma" is not carried into a FLUX.1 file; the style's FLUX.1 value is
    assert meta["ss_base_model_version"] == "flux1" and meta["modelspec.architecture"] == "Flux.1-dev/lora"
    assert main(["analyze", str(c.path), str(s.path), "--arch", "chroma"]) == 0
