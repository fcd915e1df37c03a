"""Standalone mode: the NP-LoRA tab and REST API without a WebUI, over a folder of LoRAs
(``python -m lib_nplora serve --lora-dir DIR``), for ComfyUI users and anyone who only wants the
fused file. Binds 127.0.0.1 unless told otherwise; needs gradio (any of 3.41 or 4.x) and uvicorn.

Every request, on every path (the tab, gradio's own routes and websockets, ``/config``, the REST
API), passes ``guard.GuardMiddleware`` first: a ``Host`` the server is not served under (DNS
rebinding) or a foreign ``Origin``/``Referer`` (a cross-site page) gets 403.
"""

from __future__ import annotations

import importlib
import shlex
import sys
from pathlib import Path

from ..cache import shared
from ..errors import MissingPackageError
from .context import HostContext
from .guard import AccessRules, GuardMiddleware, served_hosts
from .index import DirectoryIndex
from .service import FusionService

ROOT = Path(__file__).resolve().parents[2]


def _assets() -> tuple[str, str]:
    css = (ROOT / "style.css").read_text(encoding="utf-8")
    js = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "javascript").glob("*.js")))
    return css, js


def create_app(lora_dir: str | Path, host: str = "127.0.0.1"):
    """(FastAPI app serving the tab at / and the REST API at /nplora/v1, the gr.Blocks).

    ``host`` is the address the app is served on (``serve``'s ``--host``): with the loopback names,
    the only ``Host`` names the app answers (``guard.served_hosts``).
    """
    import gradio as gr
    from fastapi import FastAPI

    from .rest import register
    from .tab import build_tab

    folder = Path(lora_dir).resolve()
    index = DirectoryIndex(folder)
    rules = AccessRules(allowed_hosts=served_hosts(host))
    ctx = HostContext("standalone", index=lambda: index, service=FusionService(shared), access=lambda: rules)
    css, js = _assets()
    gradio4 = int(gr.__version__.split(".")[0]) >= 4
    kw = {"css": css, "title": "NP-LoRA", "analytics_enabled": False}
    if gradio4:
        kw["head"] = f"<script>{js}</script>"
    tab = build_tab(ctx)  # built outside the page's context, then rendered into it once
    with gr.Blocks(**kw) as demo:
        gr.HTML(f'<h2 class="nplora-title">NP-LoRA</h2><div class="nplora-intro">LoRA folder: '
                f"<code>{folder}</code></div>")
        tab.render()
        if not gradio4:  # gradio 3 has no head=: define the functions once the page loads
            demo.load(fn=None, inputs=[], outputs=[], _js=f"() => {{ {js}; window.nplora_send_tag = nplora_send_tag; }}")
    demo.queue()
    app = FastAPI(title="NP-LoRA")
    register(app, ctx)
    app = gr.mount_gradio_app(app, demo, path="/")
    app.add_middleware(GuardMiddleware, rules=rules)
    return app, demo


#: what ``serve`` imports beyond the core (uvicorn comes with gradio)
SERVE_PACKAGES = ("gradio", "fastapi", "uvicorn")


def require_packages(lora_dir: str | Path = "DIR") -> None:
    """Check that ``serve``'s packages import, before anything starts.

    Raises:
        MissingPackageError: one is missing (or one of its own dependencies is); says what to
            install and which command installs it.
    """
    missing = []
    for name in SERVE_PACKAGES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            missing.append(name if e.name in (None, name) else f"{name} (its dependency {e.name})")
    if missing:
        run_sh = ROOT / "tools" / "run.sh"
        raise MissingPackageError(
            f"serve needs {', '.join(SERVE_PACKAGES)}, and this Python ({sys.executable}) lacks "
            f"{', '.join(missing)}",
            hint=f"Run `bash {run_sh} serve --lora-dir {shlex.quote(str(lora_dir))}`, which installs them into .venv-run, or install them "
                 f"into this Python with `pip install -r {ROOT / 'requirements-serve.txt'}`")


def serve(lora_dir: str | Path, host: str = "127.0.0.1", port: int = 7870) -> None:
    """Serve until interrupted.

    Raises:
        MissingPackageError: gradio, fastapi or uvicorn is not installed (see ``require_packages``).
    """
    require_packages(lora_dir)
    import uvicorn

    folder = Path(lora_dir)
    if not folder.is_dir():
        from ..errors import ParameterError

        raise ParameterError(f"the LoRA folder {str(folder)!r} does not exist", hint="Give --lora-dir an existing folder")
    app, _ = create_app(folder, host)
    print(f"NP-LoRA: http://{host}:{port}/  (LoRA folder {folder.resolve()})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
