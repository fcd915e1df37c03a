"""The NP-LoRA tab in a real browser: headless Debian Chromium (Playwright) against the standalone
server (``python -m lib_nplora serve``) over generated LoRA files.

Set NPLORA_SCREENSHOTS=DIR to keep the screenshots (the README's pictures come from here:
NPLORA_SCREENSHOTS=docs/images bash tools/test.sh tests/browser).
"""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import lora_factory as F
from lib_nplora.formats.reader import load_lora

from standalone_server import CHROMIUM, FLAGS, start, stop

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-test.txt)")
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (tools/test.sh installs it when run as root)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    rows = F.select("sdxl", "attn", ("unet", "te1"), blocks=("input_blocks.4.1.", "output_blocks.3.1.", "layers.0."))
    F.make_lora(folder / "dog.safetensors", "sdxl", rows, rank=4, alpha=4, seed=1, dtype=torch.float16)
    F.make_lora(folder / "ink.safetensors", "sdxl", rows, rank=8, seed=2, dtype=torch.float16,
                metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    proc, url = start(folder)
    yield url, folder
    stop(proc)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    url, _ = server
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = ctx.new_page()
    pg.goto(url)
    pg.wait_for_selector("#nplora_tab_analyze", timeout=60000)
    yield pg
    ctx.close()


def shot(pg, name):
    folder = os.environ.get("NPLORA_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(Path(folder) / name), full_page=True)


def pick(pg, elem_id, value):
    pg.click(f"#{elem_id} input")
    pg.click(f"#{elem_id} ul.options li[aria-label='{value}']")
    pg.wait_for_function(f"document.querySelector('#{elem_id} input').value === '{value}'")


def pick_pair(pg, content="dog", style="ink"):
    """Choose both LoRAs and wait until the suggested file name has followed."""
    pick(pg, "nplora_tab_content", content)
    pick(pg, "nplora_tab_style", style)
    pg.wait_for_function(f"document.querySelector('#nplora_tab_name textarea').value.startsWith('{content}+{style}_')")


def set_number(pg, elem_id, value):
    box = pg.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def status(pg, kind, timeout=60000):
    """Wait for a new status line of this kind (after ``mark_status``) and return its text."""
    pg.wait_for_function(
        "kind => { const el = document.querySelector('#nplora_tab_status .nplora-status');"
        " return el && el.classList.contains('nplora-' + kind) && el.innerText !== window.__npl_prev; }",
        arg=kind, timeout=timeout)
    return pg.inner_text("#nplora_tab_status")


def mark_status(pg):
    """Remember the current status line, so that ``status`` waits for the next one."""
    pg.evaluate("window.__npl_prev = (document.querySelector('#nplora_tab_status .nplora-status') || {}).innerText")


def save_as(pg, name, overwrite=False):
    pg.fill("#nplora_tab_name textarea", name)
    if overwrite:
        pg.check("#nplora_tab_overwrite input")
    mark_status(pg)
    pg.wait_for_timeout(300)  # let the name reach the server before the click
    pg.click("#nplora_tab_save")


def test_pick_and_analyze_renders_the_chart(page, server):
    pick(page, "nplora_tab_content", "dog")
    pick(page, "nplora_tab_style", "ink")
    mark_status(page)
    page.click("#nplora_tab_analyze")
    page.wait_for_selector("#nplora_tab_chart svg.nplora-chart", timeout=60000)
    assert "Analyzed" in status(page, "ok")
    blocks = page.locator("#nplora_tab_chart table tbody tr").all_inner_texts()
    assert [b.split("\t")[0] for b in blocks] == ["input_blocks.4", "output_blocks.3", "te1", "all blocks"]
    bars = page.locator("#nplora_tab_chart svg rect.nplora-bar-overlap").count()
    assert bars == 4 and page.locator("#nplora_tab_chart svg rect.nplora-bar-kept").count() == 4
    width = float(page.locator("#nplora_tab_chart svg rect.nplora-bar-kept").first.get_attribute("width"))
    assert width > 300  # full rank keeps all of the style's energy: a full bar
    assert page.input_value("#nplora_tab_name textarea") == "dog+ink_nplora_mu0.5"
    shot(page, "tab-analyze-light.png")


def test_fuse_and_save_writes_a_file_recording_the_parameters(page, server):
    _, folder = server
    pick(page, "nplora_tab_content", "dog")
    pick(page, "nplora_tab_style", "ink")
    set_number(page, "nplora_tab_mu", 1)
    pick(page, "nplora_tab_k", "4")
    page.wait_for_function("document.querySelector('#nplora_tab_name textarea').value === 'dog+ink_nplora_mu1_k4'")
    save_as(page, "dog in ink")
    assert "Saved dog in ink.safetensors" in status(page, "ok")
    # a name the user typed survives later changes of the selection
    set_number(page, "nplora_tab_mu", 2)
    page.wait_for_timeout(1500)
    assert page.input_value("#nplora_tab_name textarea") == "dog in ink"
    set_number(page, "nplora_tab_mu", 1)
    path = folder / "dog in ink.safetensors"
    lora = load_lora(path)
    assert lora.arch == "sdxl"
    with safe_open(str(path), framework="pt") as f:
        block = json.loads(f.metadata()["nplora"])
    assert block["mu"] == 1.0 and block["k"] == 4 and block["content"]["name"] == "dog"
    assert not page.is_checked("#nplora_tab_overwrite input")
    page.click("#nplora_tab_copy")
    page.wait_for_function("document.querySelector('#nplora_tab_tag textarea').value.startsWith('<nplora:')")
    assert page.input_value("#nplora_tab_tag textarea") == "<nplora:dog:ink:mu=1:k=4>"


@pytest.mark.parametrize("name", ["../x", "   ", "/tmp/nplora-abs", "..", "sub/dir"])
def test_hostile_file_names_are_refused(page, server, name):
    _, folder = server
    before = sorted(p.name for p in folder.iterdir())
    pick_pair(page)
    save_as(page, name)
    text = status(page, "error")
    assert "file name" in text
    assert sorted(p.name for p in folder.iterdir()) == before
    assert not Path("/tmp/nplora-abs.safetensors").exists() and not (folder.parent / "x.safetensors").exists()


def test_existing_file_is_not_overwritten_without_confirmation(page, server):
    _, folder = server
    pick_pair(page)
    save_as(page, "dup")
    assert "Saved dup.safetensors" in status(page, "ok")
    first = (folder / "dup.safetensors").read_bytes()
    set_number(page, "nplora_tab_mu", 3)
    save_as(page, "dup")
    assert "already exists" in status(page, "error")
    assert (folder / "dup.safetensors").read_bytes() == first
    save_as(page, "dup", overwrite=True)
    assert "Saved dup.safetensors" in status(page, "ok")
    with safe_open(str(folder / "dup.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["nplora"])["mu"] == 3.0
    assert not page.is_checked("#nplora_tab_overwrite input")


def test_errors_show_in_the_tab(page, server):
    mark_status(page)
    page.click("#nplora_tab_analyze")
    assert "pick a content LoRA and a style LoRA" in status(page, "error")
    page.fill("#nplora_tab_content input", "missing")
    page.press("#nplora_tab_content input", "Enter")
    pick(page, "nplora_tab_style", "ink")
    mark_status(page)
    page.click("#nplora_tab_analyze")
    assert "no LoRA named 'missing'" in status(page, "error")


CONTRAST_JS = """
(sel) => {
  const parse = c => { const m = c.match(/[\\d.]+/g).map(Number); return {r: m[0], g: m[1], b: m[2], a: m.length > 3 ? m[3] : 1}; };
  const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
                     return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const el = document.querySelector(sel);
  const cs = getComputedStyle(el);
  const fg = parse(el instanceof SVGElement ? cs.fill : cs.color);
  let node = el, bg = null;
  while (node && node.nodeType === 1) { const b = parse(getComputedStyle(node).backgroundColor); if (b.a > 0.5) { bg = b; break; } node = node.parentElement; }
  if (!bg) bg = parse(getComputedStyle(document.body).backgroundColor);
  const l1 = lum(fg), l2 = lum(bg);
  return (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
}
"""


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_text_is_readable_in_both_themes(browser, server, theme):
    url, _ = server
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000}, color_scheme=theme)
    pg = ctx.new_page()
    pg.goto(url + f"?__theme={theme}")
    pg.wait_for_selector("#nplora_tab_analyze", timeout=60000)
    dark = pg.evaluate("document.body.classList.contains('dark') || document.querySelector('.dark') !== null")
    assert dark == (theme == "dark")
    pick(pg, "nplora_tab_content", "dog")
    pick(pg, "nplora_tab_style", "ink")
    pg.click("#nplora_tab_analyze")
    pg.wait_for_selector("#nplora_tab_chart svg.nplora-chart", timeout=60000)
    for sel in ("#nplora_tab_chart svg text.nplora-label", "#nplora_tab_chart .nplora-table td",
                "#nplora_tab_status .nplora-status", "#nplora_tab_chart .nplora-caption",
                "#nplora_tab_chart .nplora-legend"):
        ratio = pg.evaluate(CONTRAST_JS, sel)
        assert ratio >= 4.5, (theme, sel, ratio)
    shot(pg, f"tab-analyze-{theme}.png")
    ctx.close()
