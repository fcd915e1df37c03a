"""The REST API on a real FastAPI app, through its test client (real HTTP semantics, in-process)."""

import json

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from safetensors import safe_open

import lora_factory as F
from lib_nplora.cache import Caches
from lib_nplora.formats.reader import load_lora
from lib_nplora.app.context import HostContext
from lib_nplora.app.index import DirectoryIndex
from lib_nplora.app.rest import register
from lib_nplora.app.service import FusionService

pytestmark = pytest.mark.ui  # also runs under gradio 3.41.2's stack (fastapi 0.94, pydantic 1)


@pytest.fixture
def client(tmp_path):
    rows = F.select("sdxl", "attn", ("unet", "te1"), blocks=("input_blocks.4.1.", "layers.0."))
    F.make_lora(tmp_path / "dog.safetensors", "sdxl", rows, rank=4, seed=1, dtype=torch.float16)
    F.make_lora(tmp_path / "ink.safetensors", "sdxl", rows, rank=8, seed=2, dtype=torch.float16,
                metadata={"ss_output_name": "Ink Wash"})
    F.make_lora(tmp_path / "sd15.safetensors", "sd1", F.select("sd1", "attn", ("unet",))[:8], rank=2)
    (tmp_path / "old.ckpt").write_bytes(b"\x80\x04junk")
    app = FastAPI()
    ctx = HostContext("standalone", index=lambda: DirectoryIndex(tmp_path), service=FusionService(Caches()))
    register(app, ctx)
    return TestClient(app), tmp_path


def test_status(client):
    c, _ = client
    r = c.get("/nplora/v1/status")
    assert r.status_code == 200
    body = r.json()
    assert body["host"] == "standalone" and body["loras"] == 3 and body["version"]
    assert set(body["cache"]) >= {"entries", "bytes", "max_bytes"}


def test_fuse_of_a_name_no_tag_can_carry_saves_and_answers_tag_null(client):
    c, folder = client
    (folder / "ink.safetensors").rename(folder / "ink=v2.safetensors")
    r = c.post("/nplora/v1/fuse", json={"content": "dog", "style": "ink=v2", "name": "dog in ink"})
    assert r.status_code == 200, r.text
    assert r.json()["tag"] is None and (folder / "dog in ink.safetensors").is_file()


def test_fuse_writes_a_file_with_metadata_and_refuses_to_overwrite(client):
    c, folder = client
    r = c.post("/nplora/v1/fuse", json={"content": "dog", "style": "Ink Wash", "mu": 1.0, "k": 4,
                                        "style_weight": 0.8, "name": "dog in ink"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["file"] == "dog in ink.safetensors" and body["tag"] == "<nplora:dog:Ink Wash:mu=1:k=4:ws=0.8>"
    path = folder / body["file"]
    assert load_lora(path).arch == "sdxl"
    with safe_open(str(path), framework="pt") as f:
        block = json.loads(f.metadata()["nplora"])
    assert block["mu"] == 1.0 and block["k"] == 4 and block["style"]["weight"] == 0.8
    assert json.loads(body["metadata"]["nplora"]) == block
    before = path.read_bytes()
    r = c.post("/nplora/v1/fuse", json={"content": "dog", "style": "ink", "name": "dog in ink"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    assert path.read_bytes() == before
    r = c.post("/nplora/v1/fuse", json={"content": "dog", "style": "ink", "name": "dog in ink", "overwrite": True})
    assert r.status_code == 200 and path.read_bytes() != before


@pytest.mark.parametrize("body,status,words", [
    ({"content": "dog", "style": "nope"}, 404, ["nope", "was found"]),
    ({"content": "../dog", "style": "ink"}, 400, ["looks like a path"]),
    ({"content": "/etc/passwd", "style": "ink"}, 400, ["looks like a path"]),
    ({"content": "dog", "style": "ink", "name": "../escape"}, 400, ["file name", "looks like a path", "without folders"]),
    ({"content": "dog", "style": "ink", "name": "/tmp/abs"}, 400, ["file name"]),
    ({"content": "dog", "style": "ink", "name": "   "}, 400, ["empty"]),
    ({"content": "dog", "style": "ink", "mu": -1}, 400, ["mu must be"]),
    ({"content": "dog", "style": "ink", "k": 0}, 400, ["k must be"]),
    ({"content": "dog", "style": "sd15"}, 422, ["SDXL", "SD1"]),
    ({"content": "dog", "style": "old"}, 404, ["old"]),
    ({"content": "dog", "style": "ink", "mu": "lots"}, 422, []),
    ({"content": "dog", "style": "ink", "bogus": 1}, 422, []),
    ({"content": "dog"}, 422, []),
    ({"content": "dog", "style": "ink", "scope": "vae"}, 422, []),
    # strict types: nothing is coerced
    ({"content": "dog", "style": "ink", "mu": "0.5"}, 422, ["mu"]),
    ({"content": "dog", "style": "ink", "mu": True}, 422, ["mu"]),
    ({"content": "dog", "style": "ink", "k": 4.0}, 422, ["k"]),
    ({"content": "dog", "style": "ink", "k": "4"}, 422, ["k"]),
    ({"content": "dog", "style": "ink", "k": True}, 422, ["k"]),
    ({"content": "dog", "style": "ink", "hard": 1}, 422, ["hard"]),
    ({"content": "dog", "style": "ink", "overwrite": "yes", "name": "x"}, 422, ["overwrite"]),
    ({"content": 5, "style": "ink"}, 422, ["content"]),
    ({"content": "dog", "style": ["ink"]}, 422, ["style"]),
    ({"content": "dog", "style": "ink", "name": 7}, 422, ["name"]),
    ({"content": "dog", "style": "ink", "style_weight": "1"}, 422, ["style_weight"]),
    ({"content": "dog", "style": "ink", "mu": float("nan")}, 400, ["mu must be a finite number"]),
    ({"content": "dog", "style": "ink", "energy": 0.9, "k": 4}, 400, ["either k or energy"]),
])
def test_bad_requests_get_clear_4xx_and_write_nothing(client, body, status, words):
    c, folder = client
    before = sorted(p.name for p in folder.iterdir())
    r = c.post("/nplora/v1/fuse", json=body)
    assert r.status_code == status, r.text
    detail = json.dumps(r.json()["detail"])
    for w in words:
        assert w in detail
    assert sorted(p.name for p in folder.iterdir()) == before


def test_a_path_as_file_name_is_not_told_to_pick_from_the_lora_list(client):
    c, _ = client
    r = c.post("/nplora/v1/fuse", json={"content": "dog", "style": "ink", "name": "sub/out"})
    assert r.status_code == 400
    assert "looks like a path" in r.json()["detail"] and "LoRA list" not in r.json()["detail"]


def test_integers_are_numbers(client):
    c, folder = client
    r = c.post("/nplora/v1/fuse", json={"content": "dog", "style": "ink", "mu": 2, "content_weight": 1,
                                        "name": "ints"})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["metadata"]["nplora"])["mu"] == 2.0


def test_analyze_returns_per_module_numbers(client):
    c, _ = client
    r = c.post("/nplora/v1/analyze", json={"content": "dog", "style": "ink", "k": 2})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["arch"] == "sdxl" and len(data["modules"]) == len(load_lora(client[1] / "dog.safetensors").modules)
    assert all(0 <= m["overlap"] <= 1 and m["k"] == 2 for m in data["modules"])
    assert {b["block"] for b in data["blocks"]} == {"input_blocks.4", "te1"}
    r = c.post("/nplora/v1/analyze", json={"content": "dog", "style": "missing"})
    assert r.status_code == 404
