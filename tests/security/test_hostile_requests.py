"""Requests from where they do not belong (issue 10 §1): cross-site pages, DNS rebinding, the
WebUI's --api/--api-auth rules, the tab's actions through gradio's own HTTP API and queue.

Everything runs against the real apps: the standalone server's ``create_app`` (gradio + FastAPI),
``rest.register`` on a real FastAPI app, the WebUI callbacks with stand-ins of ``modules.*`` only,
and a real gradio Blocks holding the tab (with and without ``auth=``), through Starlette's
TestClient (real ASGI, in-process). Each attack also checks that no file was written or changed.
"""

from __future__ import annotations

import base64
import json
import sys
import types

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

import lora_factory as F
from lib_nplora.app import guard
from lib_nplora.app.context import HostContext
from lib_nplora.app.guard import AccessRules
from lib_nplora.app.index import DirectoryIndex
from lib_nplora.app.rest import register
from lib_nplora.app.service import FusionService
from lib_nplora.cache import Caches

OWN = "127.0.0.1:7870"
BODY = {"content": "dog", "style": "ink", "name": "victim", "overwrite": True}
PAIR = {"content": "dog", "style": "ink"}  # the analyze body


@pytest.fixture
def folder(tmp_path):
    rows = F.select("sd1", "attn", ("unet",))[:8]
    F.make_lora(tmp_path / "dog.safetensors", "sd1", rows, rank=2, seed=1, dtype=torch.float16)
    F.make_lora(tmp_path / "ink.safetensors", "sd1", rows, rank=2, seed=2, dtype=torch.float16)
    F.make_lora(tmp_path / "victim.safetensors", "sd1", rows, rank=2, seed=3, dtype=torch.float16)
    return tmp_path


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def rest_client(folder, rules=AccessRules()):
    app = FastAPI()
    register(app, HostContext("a1111", index=lambda: DirectoryIndex(folder), service=FusionService(Caches()),
                              access=lambda: rules))
    return TestClient(app, base_url=f"http://{OWN}")


@pytest.fixture(params=["rest", pytest.param("standalone", marks=pytest.mark.ui)])
def client(request, folder):
    """The REST routes as the WebUI adds them, and the standalone server (tab + REST + middleware)."""
    if request.param == "rest":
        return rest_client(folder)
    from lib_nplora.app.standalone import create_app

    app, _ = create_app(folder)
    return TestClient(app, base_url=f"http://{OWN}")


# ------------------------------------------------------------------ cross-site requests (REST)


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain;charset=UTF-8"])
@pytest.mark.parametrize("origin", [{"origin": "http://evil.example"}, {"referer": "http://evil.example/page.html"},
                                    {"origin": "null"}])
def test_cross_site_simple_post_cannot_overwrite_a_lora(client, folder, content_type, origin):
    """What a foreign page can send without a preflight: a JSON body with no (or a text/plain)
    content type and overwrite true. Refused; the existing file is byte-identical."""
    before = snapshot(folder)
    headers = dict(origin, **({"content-type": content_type} if content_type else {}))
    for path in ("/nplora/v1/fuse", "/nplora/v1/analyze"):
        r = client.post(path, content=json.dumps(BODY).encode(), headers=headers)
        assert r.status_code == 403, r.text
        assert "own page" in r.json()["detail"]
    assert snapshot(folder) == before


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/json-patch+json",
                                          "application/jsonx", "application/json; charset=latin-1", "json"])
def test_json_routes_need_the_json_content_type(client, folder, content_type):
    before = snapshot(folder)
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/nplora/v1/fuse", content=json.dumps(BODY).encode(), headers=headers)
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    r = client.post("/nplora/v1/analyze", content=json.dumps(BODY).encode(), headers=headers)
    assert r.status_code == 415
    assert snapshot(folder) == before


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF-8"])
def test_json_content_type_with_or_without_charset_is_accepted(client, content_type):
    r = client.post("/nplora/v1/analyze", content=json.dumps({"content": "dog", "style": "ink"}).encode(),
                    headers={"content-type": content_type})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("headers", [{"origin": "http://evil.example"}, {"origin": "http://127.0.0.1:9999"},
                                     {"origin": "https://127.0.0.1:7870"}, {"origin": "http://localhost:7870"},
                                     {"origin": "garbage"}, {"origin": "http://127.0.0.1:7870@evil.example"},
                                     {"referer": "http://evil.example/x"}, {"referer": "not a url"},
                                     {"origin": "http://evil.example", "referer": f"http://{OWN}/"}])
def test_foreign_origin_or_referer_is_refused(client, folder, headers):
    before = snapshot(folder)
    r = client.post("/nplora/v1/fuse", json=BODY, headers=headers)
    assert r.status_code == 403, r.text
    assert snapshot(folder) == before


@pytest.mark.parametrize("headers", [{}, {"origin": f"http://{OWN}"}, {"referer": f"http://{OWN}/?__theme=dark"},
                                     {"origin": f"HTTP://{OWN.upper()}"}])
def test_same_origin_and_header_less_requests_work(client, folder, headers):
    before = (folder / "victim.safetensors").read_bytes()
    r = client.post("/nplora/v1/fuse", json=BODY, headers=headers)
    assert r.status_code == 200, r.text
    assert (folder / "victim.safetensors").read_bytes() != before  # overwrite: true, asked for by the page itself


def test_a_link_from_another_site_still_opens_status(client):
    """A GET that follows a link carries a foreign Referer but no Origin: a navigation, allowed; a
    foreign page's fetch carries Origin: refused."""
    assert client.get("/nplora/v1/status", headers={"referer": "https://github.com/x"}).status_code == 200
    assert client.get("/nplora/v1/status", headers={"origin": "https://evil.example"}).status_code == 403


def test_origins_the_host_allows_may_act(folder):
    c = rest_client(folder, AccessRules(allowed_origins=("https://proxy.example",),
                                        allowed_origin_regex=r"https://[a-z]+\.gpu\.example"))
    for origin in ("https://proxy.example", "https://proxy.example:443", "https://box.gpu.example"):
        assert c.post("/nplora/v1/analyze", json=PAIR, headers={"origin": origin}).status_code == 200
    for origin in ("http://proxy.example", "https://proxy.example.evil", "https://box.gpu.example.evil",
                   "https://a.b.gpu.example"):
        assert c.post("/nplora/v1/analyze", json=PAIR, headers={"origin": origin}).status_code == 403


def test_an_opaque_origin_is_never_allowed_even_by_a_wildcard_host():
    with pytest.raises(guard.RequestRefused):
        guard.check_origin({"origin": "null", "host": OWN}, "http", AccessRules(allowed_origins=("*",)))
    guard.check_origin({"origin": "http://anything.example", "host": OWN}, "http", AccessRules(allowed_origins=("*",)))


# ------------------------------------------------------------------ DNS rebinding (standalone)


def _standalone(folder, host="127.0.0.1"):
    from lib_nplora.app.standalone import create_app

    app, demo = create_app(folder, host)
    return TestClient(app), demo


@pytest.mark.ui
def test_foreign_host_gets_403_on_every_path(folder):
    c, _ = _standalone(folder)
    before = snapshot(folder)
    for path in ("/", "/config", "/nplora/v1/status", "/info", "/theme.css", "/docs", "/openapi.json"):
        r = c.get(path, headers={"host": "evil.example:7870"})
        assert r.status_code == 403, (path, r.status_code)
        assert str(folder) not in r.text and "dog" not in r.text
    r = c.post("/nplora/v1/fuse", json=BODY, headers={"host": "evil.example"})
    assert r.status_code == 403
    r = c.post("/api/predict", json={"data": [], "fn_index": 0}, headers={"host": "evil.example"})
    assert r.status_code == 403
    assert snapshot(folder) == before


@pytest.mark.ui
@pytest.mark.parametrize("host", ["127.0.0.1", OWN, "localhost", "localhost:7870", "LocalHost:1", "[::1]",
                                  "[::1]:7870"])
def test_loopback_host_names_with_or_without_port_are_served(folder, host):
    c, _ = _standalone(folder)
    for path in ("/", "/config", "/nplora/v1/status"):
        assert c.get(path, headers={"host": host}).status_code == 200, (host, path)


@pytest.mark.ui
@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "localhost.evil.example", "",
                                  "127.0.0.1@evil.example", "127.0.0.1/x", "10.0.0.5:7870"])
def test_other_host_names_are_refused(folder, host):
    c, _ = _standalone(folder)
    assert c.get("/config", headers={"host": host}).status_code == 403


@pytest.mark.ui
def test_the_name_given_to_host_is_served_and_a_wildcard_bind_serves_ip_literals(folder):
    c, _ = _standalone(folder, "nplora.lan")
    assert c.get("/config", headers={"host": "nplora.lan:7870"}).status_code == 200
    assert c.get("/config", headers={"host": "evil.example"}).status_code == 403
    c, _ = _standalone(folder, "0.0.0.0")
    assert c.get("/config", headers={"host": "192.168.1.5:7870"}).status_code == 200
    assert c.get("/config", headers={"host": "[fe80::1]:7870"}).status_code == 200
    assert c.get("/config", headers={"host": "evil.example:7870"}).status_code == 403


@pytest.mark.ui
def test_a_foreign_page_cannot_read_the_folder_path_or_lora_names(folder):
    """gradio 3.41 answers every origin with ``Access-Control-Allow-Origin: *``; the server refuses first."""
    c, _ = _standalone(folder)
    r = c.get("/config", headers={"host": OWN, "origin": "http://evil.example"})
    assert r.status_code == 403 and str(folder) not in r.text
    assert c.get("/config", headers={"host": OWN}).status_code == 200


@pytest.mark.ui
def test_websockets_from_a_foreign_origin_or_host_are_closed(folder):
    from starlette.websockets import WebSocketDisconnect

    c, _ = _standalone(folder)
    for headers in ({"host": OWN, "origin": "http://evil.example"}, {"host": "evil.example", "origin": "http://evil.example"}):
        with pytest.raises(WebSocketDisconnect) as e:
            with c.websocket_connect("/queue/join", headers=headers) as ws:
                ws.receive_json()
        assert e.value.code == 1008


@pytest.mark.ui
def test_gradio3_queue_websocket_from_the_page_itself_is_served(folder):
    import gradio as gr

    if int(gr.__version__.split(".")[0]) >= 4:
        pytest.skip("gradio 4 has no queue websocket (POST /queue/join, checked by the REST-like tests)")
    from lib_nplora.app.standalone import create_app

    app, _ = create_app(folder)
    with TestClient(app) as c:  # started (lifespan), as uvicorn runs it
        with c.websocket_connect("/queue/join", headers={"host": OWN, "origin": f"http://{OWN}"}) as ws:
            assert ws.receive_json()["msg"] == "send_hash"


# ------------------------------------------------------------------ the WebUI's own rules


@pytest.fixture
def webui(monkeypatch):
    """Stand-in ``modules`` with ``shared.cmd_opts``; returns a function that starts our routes on
    a real FastAPI app as ``app_started`` does, for a WebUI command line."""
    from lib_nplora.webui import callbacks as callbacks_mod, runtime as runtime_mod
    from webui.standins.webui_modules import StandInScriptCallbacks, standin_cmd_opts, standin_shared_module

    shared = standin_shared_module()
    modules = types.ModuleType("modules")
    modules.__path__ = []
    modules.shared = shared
    monkeypatch.setitem(sys.modules, "modules", modules)
    monkeypatch.setitem(sys.modules, "modules.shared", shared)

    def start(folder, *argv):
        shared.cmd_opts = standin_cmd_opts(*argv)
        rt = runtime_mod.Runtime(adapter_factory=lambda: None, service=FusionService(Caches()), opts=lambda: None,
                                 host_device=lambda: None, printer=lambda s: None)
        rt.index = lambda: DirectoryIndex(folder)
        callbacks = StandInScriptCallbacks()
        callbacks_mod.register_callbacks(callbacks, get_runtime=lambda: rt)
        app = FastAPI()
        callbacks.callbacks["app_started"][0](None, app)
        return TestClient(app, base_url=f"http://{OWN}"), callbacks, rt

    return start


def _basic(user, password):
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_api_auth_guards_our_routes_like_sdapi(webui, folder):
    c, _, _ = webui(folder, "--api", "--api-auth", "nplora:secret,other:pa:ss")
    before = snapshot(folder)
    for headers in ({}, _basic("nplora", "wrong"), _basic("nobody", "secret"), _basic("nplora", ""),
                    {"authorization": "Bearer secret"}, {"authorization": "Basic !!!"},
                    _basic("nplora", "secret ")):
        for method, path in (("get", "/nplora/v1/status"), ("post", "/nplora/v1/fuse"), ("post", "/nplora/v1/analyze")):
            r = getattr(c, method)(path, **({"json": BODY} if method == "post" else {}), headers=headers)
            assert r.status_code == 401, (headers, path, r.status_code)
            assert r.headers["www-authenticate"] == "Basic"
    assert snapshot(folder) == before
    assert c.get("/nplora/v1/status", headers=_basic("nplora", "secret")).status_code == 200
    assert c.get("/nplora/v1/status", headers=_basic("other", "pa:ss")).status_code == 200  # split at the first ':'
    r = c.post("/nplora/v1/fuse", json=BODY, headers=_basic("nplora", "secret"))
    assert r.status_code == 200 and snapshot(folder)["victim.safetensors"] != before["victim.safetensors"]


def test_credentials_do_not_excuse_a_foreign_origin(webui, folder):
    c, _, _ = webui(folder, "--api", "--api-auth", "nplora:secret")
    r = c.post("/nplora/v1/fuse", json=BODY, headers=dict(_basic("nplora", "secret"), origin="http://evil.example"))
    assert r.status_code == 403


def test_no_routes_without_the_hosts_api(webui, folder):
    c, _, _ = webui(folder)
    assert not [r for r in c.app.routes if getattr(r, "path", "").startswith("/nplora")]
    assert c.get("/nplora/v1/status").status_code == 404
    assert c.post("/nplora/v1/fuse", json=BODY).status_code == 404
    for argv in (("--api",), ("--nowebui",)):
        c, _, _ = webui(folder, *argv)
        assert c.get("/nplora/v1/status").status_code == 200, argv


def test_cors_allow_origins_of_the_host_may_act(webui, folder):
    c, _, _ = webui(folder, "--api", "--cors-allow-origins", "https://proxy.example,https://other.example",
                    "--cors-allow-origins-regex", r"https://.*\.ngrok\.example")
    for origin in ("https://proxy.example", "https://other.example", "https://a1.ngrok.example"):
        assert c.post("/nplora/v1/analyze", json=PAIR, headers={"origin": origin}).status_code == 200, origin
    assert c.post("/nplora/v1/analyze", json=PAIR, headers={"origin": "https://evil.example"}).status_code == 403


def test_an_api_auth_without_a_valid_pair_refuses_everyone():
    from lib_nplora.webui import host_auth

    rules = host_auth.read(types.SimpleNamespace(api=True, api_auth="nocolon"))
    assert rules.credentials == {}
    with pytest.raises(guard.RequestRefused) as e:
        guard.check_basic_auth(_basic("nocolon", ""), rules.access())
    assert e.value.status == 401
    assert host_auth.read(None) == host_auth.HostRules()  # unreadable command line: no API, no extra origins


# ------------------------------------------------------------------ the tab's actions through gradio


def _tab_app(folder, ctx_access=AccessRules, auth=None):
    """A real gradio Blocks holding the tab (as a WebUI renders it), its real gradio app."""
    import gradio as gr
    from gradio.routes import App

    from lib_nplora.app.tab import build_tab

    ctx = HostContext("a1111", index=lambda: DirectoryIndex(folder), service=FusionService(Caches()),
                      access=ctx_access)
    with gr.Blocks() as demo:
        build_tab(ctx)
    demo.queue()
    if auth:
        demo.auth = auth
    return demo, App.create_app(demo)


def _fn(demo, name):
    fns = demo.fns if isinstance(demo.fns, list) else list(demo.fns.values())
    i = next(i for i, f in enumerate(fns) if getattr(f.fn, "__name__", "") == name)
    return getattr(fns[i], "_id", i)


def _token(demo):
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "nplora_tab_token").value


#: the tab's parameter widgets' values (``params.UI_PARAMS`` order; per-block mu and chain last)
_PARAM_VALUES = ["dog", "ink", 1.0, 1.0, 0.5, False, "full", "unet", "nplora", "", False]


def _save_data(token, name="victim", overwrite=True):
    return _PARAM_VALUES + [name, overwrite, token]


def _status_of(response):
    assert response.status_code == 200, response.text
    return response.json()["data"][0]


@pytest.mark.ui
@pytest.mark.parametrize("headers", [{"origin": "http://evil.example"}, {"referer": "http://evil.example/"},
                                     {"origin": "null"}])
def test_tab_fuse_and_save_refuses_a_foreign_page(folder, headers):
    demo, app = _tab_app(folder)
    before = snapshot(folder)
    with TestClient(app, base_url=f"http://{OWN}") as c:
        for fn, data, at in (("do_save", _save_data(_token(demo)), 0),  # outputs: status, overwrite
                             ("do_analyze", _PARAM_VALUES + [_token(demo)], 2)):  # chart, numbers, status
            r = c.post("/api/predict", json={"data": data, "fn_index": _fn(demo, fn), "session_hash": "s"},
                       headers=headers)
            assert r.status_code == 200, r.text
            status = r.json()["data"][at]
            assert "nplora-error" in status and "own page" in status
    assert snapshot(folder) == before


@pytest.mark.ui
def test_tab_fuse_and_save_works_from_its_own_page(folder):
    demo, app = _tab_app(folder)
    before = snapshot(folder)
    with TestClient(app, base_url=f"http://{OWN}") as c:
        status = _status_of(c.post("/api/predict", json={"data": _save_data(_token(demo), "new"),
                                                          "fn_index": _fn(demo, "do_save"), "session_hash": "s"},
                                   headers={"origin": f"http://{OWN}"}))
    assert "Saved new.safetensors" in status
    assert set(snapshot(folder)) == set(before) | {"new.safetensors"}


@pytest.mark.ui
def test_tab_refuses_a_request_without_the_pages_token(folder):
    """gradio 3.41's /api/predict takes the headers a gr.Request shows from the body: a foreign page
    can claim any Origin there. Only the page's token (which it cannot read) stops it."""
    import gradio as gr

    demo, app = _tab_app(folder)
    before = snapshot(folder)
    forged = {"headers": {"origin": f"http://{OWN}", "host": OWN}, "url": f"ws://{OWN}/queue/join",
              "query_params": {}, "path_params": {}, "client": {"host": "127.0.0.1", "port": 1}}
    with TestClient(app, base_url=f"http://{OWN}") as c:
        for token in ("guess", "", None, _token(demo)[:-1]):
            body = {"data": _save_data(token), "fn_index": _fn(demo, "do_save"), "session_hash": "s"}
            if int(gr.__version__.split(".")[0]) < 4:
                body["request"] = forged
            r = c.post("/api/predict", content=json.dumps(body).encode(), headers={"origin": "http://evil.example"}
                       if int(gr.__version__.split(".")[0]) < 4 else {})
            assert "nplora-error" in _status_of(r) and "Reload the page" in _status_of(r)
    assert snapshot(folder) == before


@pytest.mark.ui
def test_tab_token_is_not_saved_into_the_webuis_ui_config(folder):
    demo, _ = _tab_app(folder)
    box = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "nplora_tab_token")
    assert box.do_not_save_to_config is True and box.visible is False and len(box.value) >= 24
    demo2, _ = _tab_app(folder)
    assert _token(demo2) != _token(demo)


@pytest.mark.ui
def test_tab_honours_the_hosts_allowed_origins(folder):
    demo, app = _tab_app(folder, lambda: AccessRules(allowed_origins=("https://proxy.example",)))
    with TestClient(app, base_url=f"http://{OWN}") as c:
        status = _status_of(c.post("/api/predict", json={"data": _save_data(_token(demo), "via proxy"),
                                                          "fn_index": _fn(demo, "do_save"), "session_hash": "s"},
                                   headers={"origin": "https://proxy.example"}))
    assert "Saved via proxy.safetensors" in status


@pytest.mark.ui
def test_gradio_auth_covers_the_tabs_actions(folder):
    """``--gradio-auth`` becomes gradio's ``auth=``: without its login cookie no route of the tab
    acts (direct calls 401; gradio 4's queue 401; gradio 3.41's queue websocket closed)."""
    import gradio as gr
    from starlette.websockets import WebSocketDisconnect

    demo, app = _tab_app(folder, auth=[("nplora", "secret")])
    before = snapshot(folder)
    body = {"data": _save_data(_token(demo), "new"), "fn_index": _fn(demo, "do_save"), "session_hash": "s"}
    gradio4 = int(gr.__version__.split(".")[0]) >= 4
    with TestClient(app, base_url=f"http://{OWN}") as c:
        assert c.post("/api/predict", json=body).status_code == 401
        assert c.get("/config").status_code == 401
        if gradio4:
            assert c.post("/queue/join", json=body).status_code == 401
        else:
            with pytest.raises(WebSocketDisconnect):
                with c.websocket_connect("/queue/join") as ws:
                    ws.receive_json()
        assert snapshot(folder) == before
        assert c.post("/login", data={"username": "nplora", "password": "wrong"}).status_code == 400
        assert c.post("/api/predict", json=body).status_code == 401
        assert c.post("/login", data={"username": "nplora", "password": "secret"}).status_code == 200
        assert "Saved new.safetensors" in _status_of(c.post("/api/predict", json=body))


@pytest.mark.ui
def test_gradio4_queue_carries_the_real_origin(folder):
    """Through gradio 4's real queue (POST /queue/join, then the /queue/data event stream), after
    logging in: a foreign Origin is refused in the tab, the page's own is served."""
    import gradio as gr

    if int(gr.__version__.split(".")[0]) < 4:
        pytest.skip("gradio 3.41's queue posts to its own server over HTTP: covered by /api/predict above")
    demo, app = _tab_app(folder, auth=[("nplora", "secret")])
    before = snapshot(folder)

    def run(c, origin, name):
        body = {"data": _save_data(_token(demo), name), "fn_index": _fn(demo, "do_save"), "session_hash": name}
        assert c.post("/queue/join", json=body, headers={"origin": origin}).status_code == 200
        with c.stream("GET", "/queue/data", params={"session_hash": name}) as s:
            for line in s.iter_lines():
                if line.startswith("data:") and json.loads(line[5:])["msg"] == "process_completed":
                    return json.loads(line[5:])["output"]["data"][0]
        raise AssertionError("the queue ended without completing the event")

    with TestClient(app, base_url=f"http://{OWN}") as c:
        c.get("/startup-events")  # what launch() does: starts the queue
        assert c.post("/login", data={"username": "nplora", "password": "secret"}).status_code == 200
        assert "own page" in run(c, "http://evil.example", "evil")
        assert snapshot(folder) == before
        assert "Saved own.safetensors" in run(c, f"http://{OWN}", "own")


# ------------------------------------------------------------------ the checks themselves, on any header


from hypothesis import given, settings, strategies as st  # noqa: E402

_ORIGINS = st.one_of(st.text(max_size=80),
                     st.builds(lambda s, h, p: f"{s}://{h}{p}", st.sampled_from(["http", "https", "ws", "HTTP", "ftp", ""]),
                               st.sampled_from(["127.0.0.1", "localhost", "[::1]", "evil.example", "127.0.0.1.evil",
                                                "user@127.0.0.1", "127.0.0.1@evil", ""]),
                               st.sampled_from(["", ":7870", ":80", ":7871", ":99999", ":x", "/path?q"])))


@settings(max_examples=400, deadline=None)
@given(origin=_ORIGINS, referer=st.one_of(st.none(), _ORIGINS))
def test_any_origin_is_accepted_only_when_it_is_the_request_own(origin, referer):
    """Whatever a page claims, the check either refuses with RequestRefused or the claim parses to
    exactly the request's own scheme, host and port."""
    headers = {"origin": origin, "host": OWN}
    if referer is not None:
        headers["referer"] = referer
    try:
        guard.check_origin(headers, "http", AccessRules())
    except guard.RequestRefused as e:
        assert e.status == 403
    else:
        assert guard.parse_origin(origin) == ("http", "127.0.0.1", 7870)


@settings(max_examples=300, deadline=None)
@given(host=st.text(max_size=60))
def test_any_host_header_is_served_only_under_the_served_names(host):
    rules = AccessRules(allowed_hosts=guard.served_hosts("127.0.0.1"))
    try:
        guard.check_host({"host": host}, rules)
    except guard.RequestRefused as e:
        assert e.status == 403
    else:
        assert guard.parse_host(host)[0] in ("127.0.0.1", "localhost", "::1")
