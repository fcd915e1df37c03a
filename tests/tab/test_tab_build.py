"""The tab and the standalone app build on both gradio versions (3.41.2 for A1111, 4.40.0 for Forge)."""

import pytest
import torch

import lora_factory as F
from lib_nplora.cache import Caches
from lib_nplora.app.context import HostContext
from lib_nplora.app.index import DirectoryIndex
from lib_nplora.app.service import FusionService

pytestmark = pytest.mark.ui

IDS = {"nplora_tab_content", "nplora_tab_style", "nplora_tab_refresh", "nplora_tab_wc", "nplora_tab_ws",
       "nplora_tab_mu", "nplora_tab_hard", "nplora_tab_k", "nplora_tab_scope", "nplora_tab_method",
       "nplora_tab_analyze", "nplora_tab_copy", "nplora_tab_tag", "nplora_tab_name", "nplora_tab_overwrite",
       "nplora_tab_save", "nplora_tab_status", "nplora_tab_chart", "nplora_tab_numbers"}


@pytest.fixture
def folder(tmp_path):
    rows = F.select("sd1", "attn", ("unet",))[:8]
    F.make_lora(tmp_path / "dog.safetensors", "sd1", rows, rank=2, seed=1, dtype=torch.float16)
    F.make_lora(tmp_path / "ink.safetensors", "sd1", rows, rank=2, seed=2, dtype=torch.float16)
    F.make_lora(tmp_path / "xl.safetensors", "sdxl", F.select("sdxl", "attn", ("unet",))[:8], rank=2)
    return tmp_path


def test_tab_builds_and_lists_the_loras_that_fit_the_model(folder):
    import gradio as gr

    from lib_nplora.app.tab import build_tab

    ctx = HostContext("standalone", index=lambda: DirectoryIndex(folder), service=FusionService(Caches()),
                      model_arch=lambda: "sd1")
    blocks = build_tab(ctx)
    assert isinstance(blocks, gr.Blocks)
    comps = {getattr(b, "elem_id", None): b for b in blocks.blocks.values()}
    assert IDS <= set(comps)
    assert [c[0] if isinstance(c, (list, tuple)) else c for c in comps["nplora_tab_content"].choices] == ["dog", "ink"]


def test_standalone_app_serves_status_and_page(folder):
    from fastapi.testclient import TestClient

    from lib_nplora.app.standalone import create_app

    app, _ = create_app(folder)
    client = TestClient(app, base_url="http://127.0.0.1:7870")  # a Host name the server is served under
    assert client.get("/nplora/v1/status").json()["loras"] == 3
    page = client.get("/")
    assert page.status_code == 200 and "NP-LoRA" in page.text
