"""The files NP-LoRA writes for the DiTs Forge Neo runs, through Neo's own LoRA key mapping and
loading (``neo_keymaps.py``, run with Neo's Python on its model classes on the meta device: no
checkpoint, no server), and the DiTs sampled through Neo's own classes and LoRA code with the
fused LoRA against the formula (``neo_sampling.py``, random weights, one block per list), and as
GGUF models (``neo_gguf_sampling.py``: Neo's GGUF loading, baking, offline and online LoRA). Needs
``NPLORA_WEBUI_FORGE_NEO`` (a prepared Neo folder, ``venv/`` inside or ``NPLORA_WEBUI_PYTHON``);
skipped without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARCHS = {"flux", "chroma", "zimage", "qwenimage", "lumina2", "wan14b", "wan1b"}


def _neo() -> tuple[str, str]:
    """The prepared Neo folder and its Python (skips without)."""
    folder = os.environ.get("NPLORA_WEBUI_FORGE_NEO")
    if not folder:
        pytest.skip("set NPLORA_WEBUI_FORGE_NEO to a prepared Forge Neo folder")
    python = os.environ.get("NPLORA_WEBUI_PYTHON") or str(Path(folder) / "venv" / "bin" / "python")
    if not Path(python).exists():
        pytest.skip(f"no Python environment in {folder}/venv; set NPLORA_WEBUI_PYTHON")
    return folder, python


def test_every_module_of_a_fused_dit_file_patches_a_weight_of_neos_model(tmp_path):
    folder, python = _neo()
    run = subprocess.run([python, str(ROOT / "tests" / "e2e" / "neo_keymaps.py"), str(ROOT), str(tmp_path)],
                         cwd=folder, capture_output=True, text=True, timeout=1800,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {r["arch"]: r for r in (json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"arch"'))}
    assert set(rows) == ARCHS, run.stdout[-2000:]
    for arch, r in rows.items():
        sys.stdout.write(json.dumps(r) + "\n")
        assert r["unmatched_count"] == 0 and not r["bad_targets"], r
        assert r["patches"] > 0 and r["keys"] == 3 * r["patches"], r  # up, down, alpha of each weight, all used
        # Neo runs its Z-Image conversion on every model with ``final_layer.adaLN_modulation.1``
        # (FLUX.1 and Lumina 2 too): reported in the row; all keys still land


#: the DiTs sampled through Neo's own classes (``neo_sampling.py``)
SAMPLED = ("zimage", "qwenimage", "chroma", "lumina2", "wan1b", "flux")


def test_the_dits_sample_through_neos_models_and_lora_code_as_the_formula_says(tmp_path):
    """``neo_sampling.py`` with Neo's Python: Z-Image, Qwen-Image, Chroma, Lumina 2, Wan 1.3B and
    FLUX.1 as Neo's own classes at their real width (one block per list), random weights, in Neo's
    ``KModel``; the state dict the Forge Neo adapter hands Neo goes through what its
    ``load_lora_for_models`` does and Neo's ``LoraLoader.refresh`` merges it. Every key is used
    and every table weight patched; three Euler steps of ``apply_model`` give what the same
    weights with W + dW give, dW the NP-LoRA formula in float64, to float32 rounding, while the
    two stacked inputs give another image; a refresh without patches restores every weight bit
    for bit and the base image again."""
    folder, python = _neo()
    run = subprocess.run([python, str(ROOT / "tests" / "e2e" / "neo_sampling.py"), str(ROOT), str(tmp_path)],
                         cwd=folder, capture_output=True, text=True, timeout=3600,
                         env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2")))
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"arch"')]
    assert [r["arch"] for r in rows] == list(SAMPLED), run.stdout[-2000:]
    for r in rows:
        sys.stdout.write(json.dumps(r) + "\n")
        assert r["fused_unmatched"] == r["fused_skipped"] == 0 and r["fused_weights"] == r["table_weights"] > 0, r
        assert r["finite"] and r["restored"] and r["base_again_equal"], r
        assert r["stacked_vs_base"] > 0.1 and r["fused_vs_stacked"] > 1e-3, r  # the LoRAs and the projection show
        assert r["fused_vs_reference"] < 1e-5 and r["fused_vs_reference"] < r["fused_vs_stacked"] / 1000, r


#: (arch, GGUF type, online) as ``neo_gguf_sampling.py`` runs them
GGUF_CASES = [(a, q, o) for a in ("zimage", "flux", "qwenimage") for q, o in (("Q8_0", False), ("Q4_K", True),
                                                                             ("Q4_K", False))]


def test_gguf_dits_take_the_fused_lora_by_neos_rule_or_the_adapter_says_they_cannot(tmp_path):
    """``neo_gguf_sampling.py`` with Neo's Python: Z-Image, FLUX.1 and Qwen-Image (reduced as above)
    written as ``.gguf`` files by Neo's ``gguf`` package, read by its ``load_torch_file`` and built
    and baked as its loader does for GGUF storage. Q8_0 offline (merged, quantized again by Neo) and
    Q4_K online ("(fp16 LoRA)": applied at every forward) take the fused LoRA through Neo's own LoRA
    code: every key used, the online image is the host's dequantized weights plus the float64
    formula to float32 rounding, the offline one is Neo's requantization of that (to a few
    quantization flips, no farther from W + dW than that requantization), and both differ from the
    stacked inputs by the projection; a refresh without patches restores every stored GGUF tensor
    bit for bit. Q4_K offline: Neo's refresh raises NotImplementedError, and the Forge adapters'
    ``unmergeable_gguf`` names exactly the Q4_K table weights (so NP-LoRA reports it and generates
    without)."""
    folder, python = _neo()
    if not (Path(folder) / "backend" / "operations_gguf.py").is_file():
        pytest.skip(f"the Neo at {folder} has no GGUF operations")
    run = subprocess.run([python, str(ROOT / "tests" / "e2e" / "neo_gguf_sampling.py"), str(ROOT), str(tmp_path)],
                         cwd=folder, capture_output=True, text=True, timeout=3600,
                         env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2")))
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"arch"')]
    assert [(r["arch"], r["qtype"], r["online"]) for r in rows] == GGUF_CASES, run.stdout[-2000:]
    for r in rows:
        sys.stdout.write(json.dumps(r) + "\n")
        assert "error" not in r, r
        assert r["fused_unmatched"] == r["fused_skipped"] == 0 and r["fused_weights"] == r["table_weights"] > 0, r
        assert r["quantized_table_weights"] > r["table_weights"] // 2 and r["qtype"] in "".join(r["stored"]), r
        assert r["finite"], r
        if r["qtype"] == "Q4_K":  # the weights Neo cannot quantize again, named exactly (online: not consulted)
            assert r["adapter_unmergeable"] == {"Q4_K": r["quantized_table_weights"]}, r
            assert r["adapter_unmergeable_keys_are_the_quantized_rows"], r
        else:
            assert r["adapter_unmergeable"] == {}, r
        if r["qtype"] == "Q4_K" and not r["online"]:
            assert r["neo_refresh_error"] and "not implemented" in r["neo_refresh_error"], r
            continue  # what a stock LoRA meets there; NP-LoRA hands over nothing (test_webui_host_forge_neo)
        assert r["neo_refresh_error"] is None and r["restored"] and r["base_again_equal"], r
        assert r["stacked_vs_base"] > 0.1 and r["fused_vs_stacked"] > 1e-3, r
        if r["online"]:  # the host's dequantized W + the formula's dW at every forward
            assert r["fused_vs_reference"] < 1e-5 and r["fused_vs_reference"] < r["fused_vs_stacked"] / 1000, r
        else:  # Neo's requantization of W + dW, and as far from W + dW as that requantization is
            assert r["fused_vs_requantized"] < r["fused_vs_stacked"] / 100, r
            assert r["fused_vs_reference"] < 1.1 * r["requantized_vs_reference"], r
