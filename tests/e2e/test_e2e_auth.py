"""NP-LoRA's routes on a real WebUI started with ``--api --api-auth nplora:secret``: they require
exactly what the host's own ``/sdapi/v1/*`` routes require, and a request refused writes nothing.

Same environment as the rest of the end-to-end suite (``conftest.py``: ``NPLORA_WEBUI_A1111`` /
``NPLORA_WEBUI_FORGE``, ``NPLORA_WEBUI_ARGS``, ...); skips cleanly without it. The WebUI is
started once per host for this module, on its own port, with the suite's usual flags plus
``--api-auth``.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from e2e_loras import NAMES
from e2e_server import HOST_VARS, WebUI, webui_folder

USER, PASSWORD = "nplora", "secret"


def _basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class AuthWebUI(WebUI):
    """The suite's WebUI with ``--api-auth``; its own calls (the start-up wait) carry the credentials."""

    def command(self) -> list[str]:
        return super().command() + ["--api-auth", f"{USER}:{PASSWORD}"]

    def get(self, path: str, timeout: float = 600):
        req = urllib.request.Request(self.url + path, headers=_basic(USER, PASSWORD))
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
             timeout: float = 1800) -> tuple[int, dict, bytes]:
        """(status, response headers, body) without raising on 4xx."""
        req = urllib.request.Request(self.url + path, data=body, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module", params=sorted(HOST_VARS))
def auth_webui(request, tmp_path_factory):
    from e2e_loras import write_loras

    folder = webui_folder(request.param)
    work = tmp_path_factory.mktemp(f"e2e-auth-{request.param}")
    lora_dir = work / "Lora"
    write_loras(lora_dir)
    server = AuthWebUI(request.param, folder, lora_dir, work / "webui.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


FUSE = {"content": NAMES["content"], "style": NAMES["style"], "name": "nplora_e2e_auth", "overwrite": True}
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("path", ["/sdapi/v1/options", "/nplora/v1/status"])
def test_get_routes_need_the_api_auth_credentials(auth_webui, path):
    for headers in ({}, _basic(USER, "wrong"), _basic("someone", PASSWORD)):
        status, response_headers, _ = auth_webui.call("GET", path, headers=headers)
        assert status == 401, (path, headers, status)
        challenge = {k.lower(): v for k, v in response_headers.items()}.get("www-authenticate")
        # ours always asks for Basic; A1111 1.10.1's own api_middleware rebuilds every HTTPException
        # as plain JSON and drops that header from /sdapi/v1/* (Forge keeps it)
        if path.startswith("/nplora/"):
            assert challenge == "Basic", (path, response_headers)
    status, _, body = auth_webui.call("GET", path, headers=_basic(USER, PASSWORD))
    assert status == 200, body[:500]
    if path == "/nplora/v1/status":
        assert json.loads(body)["host"] == auth_webui.adapter


def test_a_fuse_without_credentials_writes_nothing(auth_webui):
    folder = auth_webui.lora_dir
    before = _files(folder)
    for headers in ({}, _basic(USER, "wrong")):
        status, _, _ = auth_webui.call("POST", "/nplora/v1/fuse", json.dumps(FUSE).encode(), dict(JSON, **headers))
        assert status == 401
    assert _files(folder) == before
    # with the credentials but from a foreign page, or without the JSON content type: refused too
    status, _, _ = auth_webui.call("POST", "/nplora/v1/fuse", json.dumps(FUSE).encode(),
                                   dict(JSON, Origin="http://evil.example", **_basic(USER, PASSWORD)))
    assert status == 403
    status, _, _ = auth_webui.call("POST", "/nplora/v1/fuse", json.dumps(FUSE).encode(),
                                   {"Content-Type": "text/plain", **_basic(USER, PASSWORD)})
    assert status == 415
    assert _files(folder) == before


def test_a_fuse_with_credentials_writes_the_file(auth_webui):
    folder = auth_webui.lora_dir
    status, _, body = auth_webui.call("POST", "/nplora/v1/fuse", json.dumps(FUSE).encode(),
                                      dict(JSON, **_basic(USER, PASSWORD)))
    assert status == 200, body[:2000]
    assert (folder / "nplora_e2e_auth.safetensors").is_file()
    (folder / "nplora_e2e_auth.safetensors").unlink()
