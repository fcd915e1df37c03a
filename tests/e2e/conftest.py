"""End-to-end suite against a real WebUI: starts AUTOMATIC1111 or Forge on CPU (127.0.0.1 only)
with this extension installed, and drives it over its HTTP API.

Environment (each suite skips cleanly when its variable is unset):

* ``NPLORA_WEBUI_A1111`` / ``NPLORA_WEBUI_FORGE`` / ``NPLORA_WEBUI_FORGE_NEO`` /
  ``NPLORA_WEBUI_FORGE_CLASSIC``: the WebUI checkout (the folder with ``launch.py``), with its
  Python environment ready (``venv/`` inside it, or ``NPLORA_WEBUI_PYTHON``) and the model
  repositories it needs in place: it is started with ``--skip-prepare-environment`` and offline.
* ``NPLORA_WEBUI_CKPT``: the checkpoint to load (default: the first ``*.safetensors`` /
  ``*.ckpt`` in ``<webui>/models/Stable-diffusion``); a random-weight one in the real key layout
  is enough.
* ``NPLORA_E2E_MODEL``: that checkpoint's base model, ``sd1`` (default) or ``sdxl``: the test
  LoRAs are made for it (``e2e_loras.py``).
* ``NPLORA_WEBUI_ARGS``: extra command-line arguments (e.g. ``--ckpt-dir``, ``--vae-dir``).
* ``NPLORA_WEBUI_START_TIMEOUT``: seconds to wait for the API (default 900).

The extension is linked into ``<webui>/extensions/`` for the run (and unlinked after, if the
suite linked it); the test LoRAs are written to a temporary folder passed as ``--lora-dir``.
Timings are reported at the end of the run, never asserted.
"""

from __future__ import annotations


import pytest

from e2e_server import HOST_VARS, REPORT, WebUI, webui_folder


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("NP-LoRA end-to-end report (measured, not asserted)")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module", params=sorted(HOST_VARS))
def webui(request, tmp_path_factory):
    from e2e_loras import write_loras

    folder = webui_folder(request.param)
    work = tmp_path_factory.mktemp(f"e2e-{request.param}")
    lora_dir = work / "Lora"
    write_loras(lora_dir)
    server = WebUI(request.param, folder, lora_dir, work / "webui.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
