"""The command line on a fresh machine: ``serve`` without its packages, and what a missing file's
message tells a command-line user (the path) versus a WebUI user (the LoRA list)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lora_factory as F
import pytest

from lib_nplora.api import analyze_files
from lib_nplora.app.index import DirectoryIndex
from lib_nplora.app.request import FusionRequest
from lib_nplora.app.service import FusionService
from lib_nplora.cache import Caches
from lib_nplora.errors import FormatError, MissingFileError

ROOT = Path(__file__).resolve().parents[2]

# Runs the CLI with gradio, fastapi and uvicorn hidden, as on a machine without them.
HIDDEN = textwrap.dedent("""
    import sys

    class Hide:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("gradio", "fastapi", "uvicorn"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    from lib_nplora.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def cli(*args, cwd=ROOT, prelude=None):
    cmd = [sys.executable, "-c", prelude, *map(str, args)] if prelude else \
        [sys.executable, "-m", "lib_nplora", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_serve_without_gradio_says_what_to_install(tmp_path):
    r = cli("serve", "--lora-dir", tmp_path, prelude=HIDDEN)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "ModuleNotFoundError" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nplora: error: serve needs gradio, fastapi, uvicorn")
    assert "lacks gradio, fastapi, uvicorn" in lines[0]
    assert "pip install -r" in lines[0] and "requirements-serve.txt" in lines[0]
    assert f"tools/run.sh serve --lora-dir {tmp_path}" in lines[0]


def test_missing_file_on_the_command_line_names_the_path_not_the_lora_list(tmp_path):
    r = cli("inspect", "loras/dog.safetensors", cwd=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nplora: error: dog.safetensors: file not found")
    assert "'loras/dog.safetensors'" in lines[0] and f"current folder ({tmp_path})" in lines[0]
    assert "`ls loras`" in lines[0] and "refresh" not in lines[0]


def test_missing_file_hint_for_a_path_and_for_a_listed_name(tmp_path):
    missing = tmp_path / "gone" / "style.safetensors"
    with pytest.raises(MissingFileError) as e:  # a library call with a path: the path hint
        analyze_files(missing, missing)
    assert isinstance(e.value, FormatError) and e.value.path == str(missing)
    assert f"'{missing}'" in str(e.value) and f"`ls {missing.parent}`" in str(e.value)
    assert "refresh" not in str(e.value)

    # the app (WebUI, tab, REST API): the name came from the LoRA list, which is out of date
    rows = F.select("sd1", "attn", ("unet",), limit=4)
    F.make_lora(tmp_path / "dog.safetensors", "sd1", rows, seed=1)
    F.make_lora(tmp_path / "ink.safetensors", "sd1", rows, seed=2)
    index = DirectoryIndex(tmp_path)
    assert index.names() == ["dog", "ink"]
    (tmp_path / "ink.safetensors").unlink()  # deleted after the list was read
    service = FusionService(Caches())
    for call in (lambda: service.analyze(index, FusionRequest("dog", "ink")),
                 lambda: service.fuse(index, FusionRequest("dog", "ink")),
                 lambda: service.save(index, FusionRequest("dog", "ink"), "out")):
        with pytest.raises(MissingFileError) as e:
            call()
        assert str(e.value) == "ink.safetensors: file not found. Check the name, or refresh the LoRA list"
    assert not (tmp_path / "out.safetensors").exists()
