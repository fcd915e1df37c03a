"""What ComfyUI-Manager and the Comfy registry install from this repository into a user's ComfyUI.

ComfyUI-Manager (``glob/manager_core.py``, ``execute_install_script``) runs ``pip install <line>``
for each line of ``requirements.txt`` and then ``python install.py``; the registry installs the
pack's dependencies likewise. So those lines must never name torch (it would replace the user's
build) or pin anything: only packages ComfyUI itself requires, with lower bounds it meets. The
exact pins of this project's own environments live in ``requirements-base.txt``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: ComfyUI's own requirements.txt (Comfy-Org/ComfyUI a125cd84), by name; tests/e2e checks the real file
COMFYUI_REQUIRES = {"comfyui-frontend-package", "comfyui-workflow-templates", "comfyui-embedded-docs", "torch",
                    "torchsde", "torchvision", "torchaudio", "numpy", "einops", "transformers", "tokenizers",
                    "sentencepiece", "safetensors", "aiohttp", "yarl", "pyyaml", "pillow", "scipy", "tqdm",
                    "psutil", "alembic", "sqlalchemy", "av", "kornia", "spandrel", "pydantic", "pydantic-settings"}
NAME = re.compile(r"^([A-Za-z0-9_.-]+)\s*(.*)$")


def runtime_requirements() -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    return [line for line in lines if line]


def test_requirements_name_only_what_comfyui_has_never_torch_and_pin_nothing():
    reqs = runtime_requirements()
    assert reqs
    for line in reqs:
        name, spec = NAME.match(line).groups()
        assert not line.startswith("-"), line  # no -r / --index-url: Manager passes the line to pip as it is
        assert name.lower() in COMFYUI_REQUIRES and not name.lower().startswith("torch"), line
        assert "==" not in spec and "<" not in spec and "~=" not in spec, line


def test_pyproject_dependencies_are_the_same_and_the_registry_fields_are_there():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["dependencies"] == runtime_requirements()
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", project["project"]["name"]) and "comfyui" not in \
        project["project"]["name"].lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["project"]["version"])
    assert "Repository" in project["project"]["urls"]
    assert {"PublisherId", "DisplayName", "Icon"} <= set(project["tool"]["comfy"])


def test_this_projects_environments_still_pin_torch():
    base = (ROOT / "requirements-base.txt").read_text().splitlines()
    assert "torch==2.13.0" in base and "-r requirements.txt" in base
    assert "-r requirements-base.txt" in (ROOT / "requirements-serve.txt").read_text().splitlines()
    for script in ("tools/run.sh", "tools/test.sh"):
        text = (ROOT / script).read_text()
        assert "chain" in text  # the install stamp hashes every file a requirements file includes
    assert 'install base "$here/requirements-base.txt"' in (ROOT / "tools/run.sh").read_text()
