"""The files NP-LoRA writes for the DiTs Forge Neo runs, through Neo's own LoRA key mapping and
loading (``neo_keymaps.py``, run with Neo's Python on its model classes on the meta device: no
checkpoint, no server). Needs ``NPLORA_WEBUI_FORGE_NEO`` (a prepared Neo folder, ``venv/`` inside
or ``NPLORA_WEBUI_PYTHON``); skipped without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARCHS = {"flux", "chroma", "zimage", "qwenimage", "lumina2", "wan14b", "wan1b"}


def test_every_module_of_a_fused_dit_file_patches_a_weight_of_neos_model(tmp_path):
    folder = os.environ.get("NPLORA_WEBUI_FORGE_NEO")
    if not folder:
        pytest.skip("set NPLORA_WEBUI_FORGE_NEO to a prepared Forge Neo folder")
    python = os.environ.get("NPLORA_WEBUI_PYTHON") or str(Path(folder) / "venv" / "bin" / "python")
    if not Path(python).exists():
        pytest.skip(f"no Python environment in {folder}/venv; set NPLORA_WEBUI_PYTHON")
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
