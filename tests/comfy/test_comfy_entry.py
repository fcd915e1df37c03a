"""The repository root as ComfyUI loads a custom node pack, and as everything else sees it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"

# a package spec from the folder's __init__.py, as ComfyUI's nodes.load_custom_node does
LOAD = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('nplora_pack', {init!r}, submodule_search_locations=[{root!r}])\n"
    "mod = importlib.util.module_from_spec(spec); sys.modules['nplora_pack'] = mod; spec.loader.exec_module(mod)\n"
    "print(sorted(mod.NODE_CLASS_MAPPINGS), sorted(mod.NODE_DISPLAY_NAME_MAPPINGS.values()))\n"
    "print(sorted(m for m in sys.modules if m.split('.')[0] in ('comfy', 'folder_paths', 'gradio', 'modules')))\n")


def _run(extra_path: list[str], first: str = "") -> list[str]:
    code = (f"import sys; sys.path[:0] = {extra_path!r}\n{first}"
            + LOAD.format(init=str(ROOT / "__init__.py"), root=str(ROOT)))
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_without_comfyui_the_root_package_imports_and_registers_nothing():
    nodes, loaded = _run([])
    assert nodes == "[] []"
    assert loaded == "[]"  # nothing of ComfyUI, gradio or a WebUI was imported


def test_with_comfyuis_modules_importable_but_not_loading_it_registers_nothing():
    """pytest collects the repository root as a package (its ``__init__.py``) with the stand-ins on
    the path: that must not import the nodes."""
    nodes, loaded = _run([str(STANDINS)])
    assert nodes == "[] []" and loaded == "[]"


def test_inside_comfyui_the_root_package_registers_the_four_nodes():
    nodes, loaded = _run([str(STANDINS)], first="import folder_paths, nodes\n")
    assert nodes == ("['NpLoraAnalyze', 'NpLoraLoader', 'NpLoraSave', 'NpLoraSet'] "
                     "['NP-LoRA Analyze', 'NP-LoRA Loader (content + style)', 'NP-LoRA Save', 'NP-LoRA Set']")
    assert "gradio" not in loaded and "modules" not in loaded
