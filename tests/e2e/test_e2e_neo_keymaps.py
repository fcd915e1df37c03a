"""The files NP-LoRA writes for the DiTs Forge Neo runs, through Neo's own LoRA key mapping and
loading (``neo_keymaps.py``, run with Neo's Python on its model classes on the meta device: no
checkpoint, no server), and the DiTs sampled through Neo's own classes and LoRA code with the
fused LoRA against the formula (``neo_sampling.py``, random weights, one block per list). Needs
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
