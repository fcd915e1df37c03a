"""Several LoRAs and per-block mu in a real AUTOMATIC1111 / Forge, over the HTTP API (see
conftest.py for the setup; the README's "Several LoRAs and per-block μ" for the syntax).

Images are compared as decoded pixels: "equal" means every pixel is equal.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from e2e_loras import NAMES
from e2e_server import ROOT, report
from test_e2e_webui import PROMPT, diff, keep_picture, one, warning_of
from lib_nplora.webui.xyz import LORA_SET_LABEL

C, S, C2, S2 = NAMES["content"], NAMES["style"], NAMES["content2"], NAMES["style2"]
PAIR = f"<nplora:{C}:{S}>"
TWO_ONE = f"<nplora:{C} + {C2}*0.5:{S}>"                    # two contents, one style
TWO_TWO = f"<nplora:{C} + {C2}*0.5:{S} + {S2}*0.7>"         # two contents, two styles
PRESET = "IN:0,OUT:hard"
WITH_PRESET = f"<nplora:{C} + {C2}*0.5:{S}:mu=0.5:mub={PRESET}>"
#: every SD1 UNet group at the global mu: the same c in every module as no preset
ALL_AT_GLOBAL = f"<nplora:{C} + {C2}*0.5:{S}:mu=0.5:mub=IN:0.5,MID:0.5,OUT:0.5>"
ALWAYSON = "np-lora"


def set_args(content, style, mu=0.5, block_mu="", chain=False):
    """The accordion's values in the Script's argument order (``accordion.ARG_NAMES``)."""
    return {ALWAYSON: {"args": [True, content, style, 1.0, 1.0, mu, False, "full", "unet", "nplora",
                                block_mu, chain]}}


@pytest.fixture(scope="module")
def shots(webui):
    cache = {}

    def shot(prompt, **kw):
        key = (prompt, repr(sorted(kw.items())))
        if key not in cache:
            image, info, _ = one(webui, prompt, **kw)
            cache[key] = (image, info)
        return cache[key]

    return shot


def params_of(info) -> dict:
    return info["extra_generation_params"]


def test_the_webui_loads_this_checkout_with_its_comfyui_entry(webui):
    """One clone works as both: the folder the WebUI loads is this checkout, whose root
    ``__init__.py`` is ComfyUI's entry, and the only NP-LoRA among its extensions."""
    assert "NODE_CLASS_MAPPINGS" in (ROOT / "__init__.py").read_text()
    ours = [e.name for e in (webui.folder / "extensions").iterdir() if e.resolve() == ROOT]
    copies = [e.name for e in (webui.folder / "extensions").iterdir() if (e / "scripts" / "nplora.py").is_file()]
    assert len(ours) == 1 and copies == ours, (ours, copies)
    # (/sdapi/v1/extensions lists only extensions with a git remote: not a local clone)
    assert ALWAYSON in [s.lower() for s in webui.get("/sdapi/v1/scripts")["txt2img"]]
    # no error report about this extension (the host's own scripts may report theirs)
    assert webui.our_errors() == []


def test_the_second_content_and_style_are_listed(webui):
    loras = {x["name"] for x in webui.get("/sdapi/v1/loras")}
    assert {C, S, C2, S2} <= loras


@pytest.mark.parametrize("tag", [TWO_ONE, TWO_TWO], ids=["two-contents-one-style", "two-contents-two-styles"])
def test_a_set_generates_reproducibly_and_differs_from_the_pair_and_no_lora(webui, shots, tag):
    base, _ = shots(PROMPT)
    pair, _ = shots(f"{PROMPT} {PAIR}")
    image, info = shots(f"{PROMPT} {tag}")
    again, _, _ = one(webui, f"{PROMPT} {tag}")
    report(f"{webui.host}: {tag}: mean |pixel diff| vs base {diff(image, base):.2f}, vs the one-pair tag "
           f"{diff(image, pair):.2f}")
    assert np.array_equal(image, again)
    assert not np.array_equal(image, base) and not np.array_equal(image, pair)
    params = params_of(info)
    assert "NP-LoRA warning" not in params, params
    assert params["NP-LoRA"] == "True" and params["NP-LoRA content"] == f"{C} + {C2}*0.5"
    assert params["NP-LoRA style"] == (S if tag == TWO_ONE else f"{S} + {S2}*0.7")
    hashes = params["NP-LoRA hashes"]
    for name in (C, C2, S) + ((S2,) if tag == TWO_TWO else ()):
        assert f"{name}: " in hashes, hashes
    keep_picture(image, f"set-{'2x1' if tag == TWO_ONE else '2x2'}-{webui.host}.png")


def test_two_styles_differ_from_one_style(webui, shots):
    one_style, _ = shots(f"{PROMPT} {TWO_ONE}")
    two_styles, _ = shots(f"{PROMPT} {TWO_TWO}")
    assert not np.array_equal(one_style, two_styles)


def test_a_block_preset_changes_the_image_and_is_in_the_infotext(webui, shots):
    plain, _ = shots(f"{PROMPT} {TWO_ONE}")
    preset, info = shots(f"{PROMPT} {WITH_PRESET}")
    report(f"{webui.host}: mub={PRESET} vs the same set without it: mean |pixel diff| {diff(plain, preset):.3f}")
    assert not np.array_equal(plain, preset)
    params = params_of(info)
    assert "NP-LoRA warning" not in params, params
    assert params["NP-LoRA block mu"] == PRESET and params["NP-LoRA content"] == f"{C} + {C2}*0.5"
    assert f"NP-LoRA block mu: \"{PRESET}\"" in info["infotexts"][0] or \
        f"NP-LoRA block mu: {PRESET}" in info["infotexts"][0], info["infotexts"][0]


def test_every_group_at_the_global_mu_equals_the_plain_tag(webui, shots):
    plain, _ = shots(f"{PROMPT} {TWO_ONE}")
    same, info = shots(f"{PROMPT} {ALL_AT_GLOBAL}")
    assert "NP-LoRA warning" not in params_of(info), params_of(info)
    assert np.array_equal(plain, same)


def png_info(webui, infotext: str) -> dict:
    from PIL import PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", infotext)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=meta)
    encoded = base64.b64encode(buf.getvalue()).decode()
    return webui.post("/sdapi/v1/png-info", {"image": "data:image/png;base64," + encoded}).get("parameters") or {}


def test_png_info_reads_the_set_and_the_preset_back(webui, shots):
    _, info = shots(f"{PROMPT} {TWO_TWO[:-1]}:mub={PRESET}>")
    params = png_info(webui, info["infotexts"][0])
    assert params.get("NP-LoRA content") == f"{C} + {C2}*0.5"
    assert params.get("NP-LoRA style") == f"{S} + {S2}*0.7"
    assert params.get("NP-LoRA block mu") == PRESET


def test_pasting_the_infotext_back_gives_the_same_image(webui, shots):
    """An image made with a set and a preset in its tag, then its infotext alone sent back as the
    API's ``infotext`` (the host's own paste: PNG Info's fields into the request): the same image,
    the same set and preset in the new infotext."""
    tag = f"<nplora:{C} + {C2}*0.5:{S} + {S2}*0.7:mub={PRESET}>"
    made, info = shots(f"{PROMPT} {tag}")
    again, pasted = paste_back(webui, info)
    assert again["prompt"] == f"{PROMPT} {tag}" and again["seed"] == info["seed"]
    assert params_of(again).get("NP-LoRA content") == f"{C} + {C2}*0.5", params_of(again)
    assert params_of(again).get("NP-LoRA style") == f"{S} + {S2}*0.7"
    assert params_of(again).get("NP-LoRA block mu") == PRESET
    assert np.array_equal(pasted, made)


def paste_back(webui, info, **kw):
    """(info, image) of a job that sends an image's infotext back as the API's ``infotext``: the
    host fills every field the request leaves unset from it (``Api.apply_infotext``; "styles" is
    given: Forge Neo's styles paste field returns gr.skip(), which its API cannot type-check)."""
    r = webui.post("/sdapi/v1/txt2img", {"infotext": info["infotexts"][0], "styles": [], "send_images": True,
                                         "save_images": False, **kw})
    return json.loads(r["info"]), np.asarray(Image.open(io.BytesIO(base64.b64decode(r["images"][0]))).convert("RGB"))


def test_pasting_an_accordion_images_infotext_back_restores_the_accordion(webui, shots):
    """The same for an image made by the accordion (no tag in the prompt): the host pastes the
    accordion's fields, the LoRA sets by their hidden texts (the dropdowns start empty, which the
    API's paste skips). A request's own accordion arguments beat its pasted infotext."""
    contents, styles = f"{C} + {C2}*0.5", f"{S} + {S2}*0.7"
    made, info = shots(PROMPT, alwayson_scripts=set_args(contents, styles, mu=0.8, block_mu=PRESET, chain=True))
    assert params_of(info).get("NP-LoRA content") == contents and "NP-LoRA warning" not in params_of(info)
    again, pasted = paste_back(webui, info)
    assert again["prompt"] == PROMPT and again["seed"] == info["seed"]
    for label, value in (("content", contents), ("style", styles), ("block mu", PRESET), ("mu", "0.8"),
                         ("chain", "True")):
        assert params_of(again).get(f"NP-LoRA {label}") == value, (label, params_of(again))
    assert np.array_equal(pasted, made)
    # the request names its own content (the first two arguments): the style and the rest are pasted
    own, _ = shots(PROMPT, alwayson_scripts=set_args(C, styles, mu=0.8, block_mu=PRESET, chain=True))
    mixed_info, mixed = paste_back(webui, info, alwayson_scripts={ALWAYSON: {"args": [True, C]}})
    assert params_of(mixed_info).get("NP-LoRA content") == C and params_of(mixed_info).get("NP-LoRA style") == styles
    assert np.array_equal(mixed, own) and not np.array_equal(mixed, made)


def xyz_args(webui, axis_label: str, values: str):
    info = webui.get("/sdapi/v1/script-info")
    xyz = next(s for s in info if s["name"] == "x/y/z plot" and not s["is_img2img"])
    args = [a.get("value") for a in xyz["args"]]
    labels = [a.get("label") for a in xyz["args"]]
    choices = [c[0] if isinstance(c, (list, tuple)) else c for c in xyz["args"][0]["choices"]]
    assert axis_label in choices, choices
    args[labels.index("X type")] = choices.index(axis_label)  # the type dropdowns take indices
    args[labels.index("Y type")] = args[labels.index("Z type")] = 0  # "Nothing"
    args[1] = values
    args[labels.index("Include Sub Images")] = True
    return args


def test_the_lora_set_axis_sweeps_two_cells(webui, shots):
    cells_asked = [f"{C} | {S}", f"{C} + {C2}*0.5 | {S} + {S2}*0.7"]
    args = xyz_args(webui, LORA_SET_LABEL, ", ".join(cells_asked))
    images, result, _ = webui.txt2img(PROMPT, script_name="x/y/z plot", script_args=args,
                                      alwayson_scripts=set_args(C, S))
    grid, cells = images[0], images[1:]
    assert len(cells) == 2 and grid.shape[1] >= 2 * 64
    keep_picture(grid, f"xyz-lora-set-{webui.host}.png")
    pair, _ = shots(f"{PROMPT} {PAIR}")
    two_two, _ = shots(f"{PROMPT} {TWO_TWO}")
    assert np.array_equal(cells[0], pair) and np.array_equal(cells[1], two_two)
    infotexts = result["infotexts"][1:]
    assert f"NP-LoRA content: {C}," in infotexts[0] and f"NP-LoRA content: {C} + {C2}*0.5," in infotexts[1]
    assert f"NP-LoRA style: {S} + {S2}*0.7," in infotexts[1]
    report(f"{webui.host}: X/Y/Z LoRA-set axis: grid {grid.shape[1]}x{grid.shape[0]}, 2 cells, each equal to its tag")


HOSTILE = {
    "a path in a set": (f"<nplora:{C} + ../{C2}:{S}>", "looks like a path"),
    "a name given twice": (f"<nplora:{C} + {C}*0.5:{S}>", "is given twice"),
    "too many names": (f"<nplora:{C}:" + " + ".join(f"{S}_{i}" for i in range(9)) + ">", "at most 8 LoRAs a side"),
}


@pytest.mark.parametrize("what", list(HOSTILE))
def test_a_hostile_set_warns_generates_and_the_server_keeps_serving(webui, shots, what):
    tag, message = HOSTILE[what]
    base, _ = shots(PROMPT)
    image, info, _ = one(webui, f"{PROMPT} {tag}")
    assert message in warning_of(info), warning_of(info)
    assert np.array_equal(image, base)
    assert "NP-LoRA: True" not in info["infotexts"][0]
    again, info2, _ = one(webui, f"{PROMPT} {TWO_ONE}")  # the next job still fuses
    assert np.array_equal(again, shots(f"{PROMPT} {TWO_ONE}")[0]) and "NP-LoRA warning" not in params_of(info2)
