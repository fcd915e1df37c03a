"""The layers: the core and the app import no WebUI, no ComfyUI and no UI/web stack, found by reading every
source file (imports at the top, inside functions, and ``importlib.import_module("…")`` alike),
plus one import in a fresh interpreter to check what really gets loaded."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Top-level packages only a WebUI or the UI/web stack provides.
UI_STACK = {"gradio", "fastapi", "starlette", "pydantic", "uvicorn"}
WEBUI = {"modules", "modules_forge", "backend", "ldm_patched", "networks", "network", "launch"}
#: ComfyUI's own top-level modules (its folder is on sys.path when it runs a node pack)
COMFYUI = {"comfy", "comfy_extras", "comfy_api", "comfy_execution", "folder_paths", "nodes", "server", "execution"}
FORBIDDEN = UI_STACK | WEBUI | COMFYUI

#: Who may import which of them, one line each with the reason. A folder entry covers what is below it.
ALLOWED = {
    "scripts/nplora.py": UI_STACK | WEBUI,                            # the WebUI's entry file
    "lib_nplora/webui/": UI_STACK | WEBUI,                            # the layer that is the WebUI extension
    "lib_nplora/comfy/": COMFYUI,                                     # the layer that is the ComfyUI node pack
    "lib_nplora/app/rest.py": {"fastapi", "starlette", "pydantic"},   # the /nplora/v1 routes and their bodies
    "lib_nplora/app/tab.py": {"gradio"},                              # the NP-LoRA tab
    "lib_nplora/app/standalone.py": {"gradio", "fastapi", "starlette", "uvicorn"},  # `serve`: tab + API server
}

#: Who may import the WebUI layer (``lib_nplora.webui``): only itself and the WebUI's entry file.
WEBUI_LAYER_USERS = ("scripts/nplora.py", "lib_nplora/webui/")
#: Who may import the ComfyUI layer (``lib_nplora.comfy``): only itself (and the root ``__init__.py``,
#: ComfyUI's entry, checked on its own below).
COMFY_LAYER_USERS = ("lib_nplora/comfy/",)


def _sources() -> list[Path]:
    files = sorted((ROOT / "lib_nplora").rglob("*.py")) + sorted((ROOT / "scripts").rglob("*.py"))
    assert len(files) > 30  # the scan really reads the tree
    return files


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(path: Path, module: str | None, level: int) -> str:
    """Absolute module name of ``from <level dots><module> import …`` in ``path``."""
    if level == 0:
        return module or ""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports(path: Path, source: str | None = None) -> set[str]:
    """Every module ``path`` (its text, or ``source`` read as if it stood there) imports: import
    statements anywhere, and string-literal ``importlib.import_module(…)`` / ``__import__(…)`` calls."""
    if source is None:
        source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(path, node.module, node.level)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else None
            if name in ("import_module", "__import__"):
                found.add(node.args[0].value)
    return found


def _allowed(rel: str) -> set[str]:
    out: set[str] = set()
    for key, names in ALLOWED.items():
        if rel == key or (key.endswith("/") and rel.startswith(key)):
            out |= names
    return out


def test_the_scan_sees_lazy_relative_and_dynamic_imports():
    """The scanner itself, on a probe read as if it were lib_nplora/app/probe.py."""
    code = ("import importlib\n"
            "def f():\n    import gradio as gr\n    from modules import shared\n"
            "def g():\n    return importlib.import_module('networks')\n"
            "def h():\n    return __import__('launch')\n"
            "from ..webui import hosts\n"
            "from . import index\n")
    found = imports(ROOT / "lib_nplora" / "app" / "probe.py", code)
    assert {"gradio", "modules", "networks", "launch", "lib_nplora.webui", "lib_nplora.webui.hosts",
            "lib_nplora.app.index"} <= found


def test_nothing_outside_the_webui_and_app_ui_modules_imports_a_webui_or_the_ui_stack():
    bad = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        allowed = _allowed(rel)
        for name in sorted(imports(path)):
            top = name.split(".")[0]
            if top in FORBIDDEN and top not in allowed:
                bad.append(f"{rel} imports {name}")
    assert bad == []


def _importers_of(layer: str, users: tuple[str, ...]) -> list[str]:
    """Every import of the package ``layer`` by a source file outside ``users``."""
    bad = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(users):
            continue
        bad += [f"{rel} imports {name}" for name in sorted(imports(path))
                if name == layer or name.startswith(layer + ".")]
    return bad


def test_only_the_webui_layer_imports_the_webui_layer():
    """The core, the app and the CLI never reach into ``lib_nplora.webui``."""
    assert _importers_of("lib_nplora.webui", WEBUI_LAYER_USERS) == []


def test_only_the_comfy_layer_imports_the_comfy_layer():
    """The core, the app, the CLI and the WebUI layer never reach into ``lib_nplora.comfy``."""
    assert _importers_of("lib_nplora.comfy", COMFY_LAYER_USERS) == []


def test_comfyuis_entry_imports_only_the_comfy_layer():
    """The repository's ``__init__.py`` (what ComfyUI imports) loads ``lib_nplora.comfy.nodes`` and
    ``sys``, nothing else: no WebUI, no UI stack, no other layer."""
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    assert found == {"sys", ".lib_nplora.comfy.nodes"}


def test_core_and_app_import_nothing_of_a_webui_at_runtime():
    """What a fresh interpreter has loaded after importing the core, the CLI and the app's
    non-UI modules (catches imports the scan cannot see, e.g. through a third-party package)."""
    code = (
        "import sys\n"
        "import lib_nplora, lib_nplora.api, lib_nplora.cli, lib_nplora.cache, lib_nplora.analysis\n"
        "import lib_nplora.app.index, lib_nplora.app.request, lib_nplora.app.service, lib_nplora.app.context\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r}"
        " or m.startswith(('lib_nplora.webui', 'lib_nplora.comfy')))\n"
        "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=300)
    assert out.stdout.strip() == "[]"
