"""NP-LoRA in a real WebUI's page, in headless Debian Chromium (Playwright): the accordion on
txt2img, a generation started by clicking, the host's paste button into the accordion, the NP-LoRA
tab's "Copy prompt tag".

Same setup as the HTTP suite (conftest.py); skips without the WebUI variables, Playwright or
Chromium. Set NPLORA_SCREENSHOTS=DIR to keep the pictures (the README's accordion picture:
``NPLORA_SCREENSHOTS=docs/images``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from e2e_loras import NAMES

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
ACC = "script_txt2img_nplora"  # the Script's elem_id prefix on txt2img (title "NP-LoRA")

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-test.txt)")
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def page(webui):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        ctx = browser.new_context(viewport={"width": 1400, "height": 1100})
        pg = ctx.new_page()
        pg.goto(webui.url, timeout=300_000)
        pg.wait_for_selector("#txt2img_prompt textarea", timeout=300_000)
        pg.wait_for_selector(f"#{ACC}_enabled", state="attached", timeout=60_000)
        yield pg
        ctx.close()
        browser.close()


def shot(locator, name: str) -> None:
    folder = os.environ.get("NPLORA_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        locator.screenshot(path=str(Path(folder) / name))


def choose(pg, elem_id: str, value: str) -> None:
    """Pick a value in a gradio dropdown (3.41 and 4.40 alike: type it, then take the option)."""
    box = pg.locator(f"#{elem_id} input").first
    box.click()
    box.fill(value)
    pg.locator(f"#{elem_id} ul.options li", has_text=value).first.click()
    pg.wait_for_function(f"document.querySelector('#{elem_id} input').value === {value!r}")


def set_prompt(pg, text: str) -> None:
    area = pg.locator("#txt2img_prompt textarea")
    area.fill(text)
    area.dispatch_event("input")


def generate_and_read_infotext(pg, previous: str | None = None) -> str:
    # gradio 3.41 gives the HTML component's wrapper and its body the same id: read the innermost
    pg.click("#txt2img_generate")
    pg.wait_for_function(
        "(prev) => { const all = document.querySelectorAll('#html_info_txt2img'); const e = all[all.length - 1];"
        " return e && e.innerText.includes('Steps:') && e.innerText !== prev; }",
        arg=previous or "", timeout=600_000)
    return pg.locator("#html_info_txt2img").last.inner_text()


def test_accordion_lists_the_loras_and_a_click_generation_uses_it(webui, page):
    pg = page
    pg.fill("#txt2img_steps input[type=number]", "3")
    pg.locator("#txt2img_steps input[type=number]").dispatch_event("input")
    for size in ("#txt2img_width", "#txt2img_height"):
        pg.fill(f"{size} input[type=number]", "64")
        pg.locator(f"{size} input[type=number]").dispatch_event("input")
    acc = pg.locator(f"#{ACC}_enabled")
    acc.locator(".label-wrap").first.click()  # open the accordion
    pg.wait_for_selector(f"#{ACC}_content", state="visible")
    choose(pg, f"{ACC}_content", NAMES["content"])
    choose(pg, f"{ACC}_style", NAMES["style"])
    pg.locator(f"#{ACC}_enabled-visible-checkbox").check()  # the checkbox in the accordion's title
    shot(acc, f"accordion-{webui.host}.png")
    set_prompt(pg, "a photo of a cat")
    info = generate_and_read_infotext(pg)
    assert "NP-LoRA: True" in info and f"NP-LoRA content: {NAMES['content']}" in info, info
    assert "NP-LoRA warning" not in info

    pg.locator(f"#{ACC}_enabled-visible-checkbox").uncheck()
    off = generate_and_read_infotext(pg, info)
    assert "NP-LoRA" not in off, off


def test_the_paste_button_restores_a_set_and_a_later_choice_wins(webui, page):
    """The host's paste (the prompt box's infotext, the paste button) fills the accordion's LoRA
    dropdowns with a set; a generation uses it; a LoRA chosen afterwards in the dropdown is what
    the next generation uses (not the pasted text that the dropdown's hidden text box held)."""
    pg = page
    contents = f"{NAMES['content']} + {NAMES['content2']}*0.5"
    set_prompt(pg, "a photo of a cat\nSteps: 3, Sampler: Euler, CFG scale: 5, Seed: 1234, Size: 64x64, "
                   f"NP-LoRA: True, NP-LoRA content: {contents}, NP-LoRA style: {NAMES['style']}, NP-LoRA mu: 0.8")
    pg.click("#paste")
    pg.wait_for_function(f"document.querySelector('#{ACC}_content input').value === {contents!r}", timeout=60_000)
    assert pg.locator(f"#{ACC}_style input").first.input_value() == NAMES["style"]
    assert pg.locator(f"#{ACC}_enabled-visible-checkbox").is_checked()
    assert pg.locator("#txt2img_prompt textarea").input_value() == "a photo of a cat"
    pasted = generate_and_read_infotext(pg, pg.locator("#html_info_txt2img").last.inner_text())  # after the last one
    assert f"NP-LoRA content: {contents}," in pasted and "NP-LoRA mu: 0.8" in pasted, pasted
    assert "NP-LoRA warning" not in pasted

    choose(pg, f"{ACC}_content", NAMES["content2"])
    chosen = generate_and_read_infotext(pg, pasted)
    assert f"NP-LoRA content: {NAMES['content2']}," in chosen and contents not in chosen, chosen
    pg.locator(f"#{ACC}_enabled-visible-checkbox").uncheck()


def test_tab_copy_prompt_tag_fills_the_txt2img_prompt(webui, page):
    pg = page
    set_prompt(pg, "a photo of a cat <nplora:old:tag>")  # an earlier tag, to be replaced
    pg.locator("#tabs .tab-nav button", has_text="NP-LoRA").first.click()
    pg.wait_for_selector("#nplora_tab_analyze", state="visible", timeout=60_000)
    choose(pg, "nplora_tab_content", NAMES["content"])
    choose(pg, "nplora_tab_style", NAMES["style"])
    pg.click("#nplora_tab_copy")
    pg.wait_for_function(
        "() => document.querySelector('#txt2img_prompt textarea').value.includes(%r)" % f"<nplora:{NAMES['content']}:",
        timeout=60_000)
    pg.wait_for_selector("#txt2img_prompt textarea", state="visible")  # it switched to txt2img
    prompt = pg.locator("#txt2img_prompt textarea").input_value()
    assert prompt.startswith("a photo of a cat") and "<nplora:old:tag>" not in prompt
    assert f"<nplora:{NAMES['content']}:{NAMES['style']}" in prompt
