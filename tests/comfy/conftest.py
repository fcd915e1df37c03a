"""The ComfyUI-layer tests run ``lib_nplora/comfy/`` against stand-ins of ComfyUI's modules
(``standins/``, first on ``sys.path`` for this folder's tests) with real LoRA files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

STANDINS = str(Path(__file__).resolve().parent / "standins")
if STANDINS not in sys.path:
    sys.path.insert(0, STANDINS)
import comfy  # noqa: E402,F401  the stand-in, before pytest imports a checkout folder named "comfy" as a package


@pytest.fixture
def loras(tmp_path):
    """An empty ComfyUI ``loras`` folder, registered with the stand-in ``folder_paths``."""
    import folder_paths

    folder = tmp_path / "models" / "loras"
    folder.mkdir(parents=True)
    saved = folder_paths.folder_names_and_paths["loras"]
    folder_paths.folder_names_and_paths["loras"] = ([str(folder)], saved[1])
    yield folder
    folder_paths.folder_names_and_paths["loras"] = saved


@pytest.fixture(autouse=True)
def fresh_caches():
    """Each test starts with empty engine caches (the nodes use the shared ones)."""
    from lib_nplora.cache import shared

    shared.clear()
    yield
    shared.clear()
