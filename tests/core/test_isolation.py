"""The core library imports and runs without any WebUI and without gradio."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_core_imports_nothing_of_a_webui():
    code = (
        "import sys\n"
        "import lib_nplora, lib_nplora.api, lib_nplora.cli, lib_nplora.cache, lib_nplora.analysis\n"
        "import lib_nplora.app.index, lib_nplora.app.request, lib_nplora.app.service, lib_nplora.app.context\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'modules', 'fastapi', 'modules_forge',"
        " 'backend', 'ldm_patched', 'networks', 'network', 'launch'))\n"
        "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
