"""Building the accordion and the Script's UI under the gradio of each host (4.40 here, 3.41 in
.venv-gradio3), and restoring it from pasted infotext."""

from __future__ import annotations

import pytest
import torch

from lib_nplora.cache import Caches
from lib_nplora.params import FuseParams
from lib_nplora.webui import accordion
from lib_nplora.webui.accordion import ARG_NAMES, UiValues
from lib_nplora.app.index import LoraNameError
from lib_nplora.app.request import FusionRequest
from lib_nplora.webui.precedence import request_for_pass
from lib_nplora.webui.runtime import Runtime
from lib_nplora.webui.script import make_script_class
from lib_nplora.app.service import FusionService
from webui.standins.webui_modules import StandInOptions, standin_scripts_module, standin_ui_components

gr = pytest.importorskip("gradio")
pytestmark = pytest.mark.ui


class ListRuntime(Runtime):
    """A Runtime whose LoRA list is a plain list (no host needed to build the UI)."""

    def __init__(self, names, adapter=None):
        super().__init__(adapter=adapter or object(), service=FusionService(Caches()), opts=lambda: StandInOptions(),
                         host_device=lambda: torch.device("cpu"), printer=lambda s: None)
        self.names = list(names)
        self.refreshed = 0

    def lora_names(self):
        return list(self.names)

    def refresh(self):
        self.refreshed += 1


def paste(fields, params: dict) -> list:
    """What the WebUI's paste does per field (infotext_utils.connect_paste): a callable's result or
    the label's value, converted with the type of the component's current value; None = unchanged."""
    out = []
    for component, key in fields:
        v = key(params) if callable(key) else params.get(key)
        if v is None:
            out.append(None)
        elif isinstance(v, dict):  # gr.update(...)
            out.append(v.get("value"))
        else:
            valtype = type(component.value)
            if valtype is bool and v == "False":
                out.append(False)
            else:
                try:
                    out.append(valtype(v))
                except Exception:
                    out.append(None)
    return out


def build_script(rt, is_img2img=False, with_blocks=False):
    Script = make_script_class(standin_scripts_module(), get_runtime=lambda: rt, gr=gr,
                               ui_components=standin_ui_components(gr))
    script = Script()
    script.is_img2img = is_img2img
    with gr.Blocks() as blocks:
        inputs = script.ui(is_img2img)
    return (script, inputs, blocks) if with_blocks else (script, inputs)


def events_of(blocks, component) -> list[tuple]:
    """(trigger, fn, input ids, output ids) of every event the Blocks registered on ``component``
    (gradio 3.41 lists its functions and gives targets as ids; 4.40 keys them by index and gives
    (id, trigger) pairs)."""
    fns = blocks.fns if isinstance(blocks.fns, list) else [blocks.fns[i] for i in sorted(blocks.fns)]
    out = []
    for fn, dep in zip(fns, blocks.config["dependencies"]):
        for target in dep["targets"]:
            target_id, trigger = target if isinstance(target, (tuple, list)) else (target, dep.get("trigger"))
            if target_id == component._id:
                out.append((trigger, fn.fn, list(dep["inputs"]), list(dep["outputs"])))
    return out


def test_script_ui_returns_the_inputs_in_argument_order():
    rt = ListRuntime(["content", "style"])
    script, inputs = build_script(rt)
    assert script.title() == "NP-LoRA"
    # the per-block mu box and chain were appended, then the LoRA dropdowns' hidden texts (issue 14)
    assert len(inputs) == len(ARG_NAMES) == 14
    enabled, content, style, cw, sw, mu, hard, k, scope, method, block_mu, chain, content_text, style_text = inputs
    assert isinstance(block_mu, gr.Textbox) and block_mu.value == "" and chain.value is False
    for text, name in ((content_text, "content"), (style_text, "style")):
        assert isinstance(text, gr.Textbox) and text.value == "" and text.visible is False
        assert text.elem_id == f"script_txt2img_nplora_{name}_text" and text.do_not_save_to_config
    assert isinstance(enabled, gr.Checkbox) and enabled.value is False
    assert isinstance(content, gr.Dropdown) and isinstance(style, gr.Dropdown)
    assert (cw.value, sw.value, mu.value, hard.value, k.value, scope.value, method.value) == (
        1.0, 1.0, 0.5, False, "full", "unet", "nplora")
    assert [c.elem_id for c in inputs][1] == "script_txt2img_nplora_content"
    assert len(script.infotext_fields) == 14 and len(script.paste_field_names) == 12  # a text shares its label
    # the defaults, as the hooks receive them, ask for nothing
    ui = UiValues.from_args([c.value for c in inputs])
    assert request_for_pass(ui, [], {}, FuseParams()) == (None, [])


def test_img2img_ids_differ_from_txt2img():
    rt = ListRuntime([])
    _, t = build_script(rt, False)
    _, i = build_script(rt, True)
    assert {c.elem_id for c in t}.isdisjoint({c.elem_id for c in i})


def test_settings_defaults_are_the_starting_values():
    rt = ListRuntime([])
    rt._opts = lambda: StandInOptions({"nplora_default_mu": 12.5, "nplora_default_k": 24, "nplora_project_te": True})
    _, inputs = build_script(rt)
    mu, k, scope = inputs[5], inputs[7], inputs[8]
    assert (mu.value, k.value, scope.value) == (12.5, "24", "all")
    assert mu.maximum >= 12.5 and "24" in [c[0] if isinstance(c, tuple) else c for c in k.choices]


def test_refresh_rescans_and_offers_the_new_names():
    rt = ListRuntime(["a"])
    with gr.Blocks():
        built = accordion.build(gr, standin_ui_components(gr), lambda s: "x_" + s, rt.lora_names, rt.refresh,
                                FuseParams())
    rt.names = ["a", "b"]
    content_update, style_update = built.on_refresh()
    assert rt.refreshed == 1
    for update in (content_update, style_update):
        choices = [c[0] if isinstance(c, (tuple, list)) else c for c in update["choices"]]
        assert choices == ["a", "b"]


@pytest.mark.parametrize("params", [FuseParams(mu=0.75, k=8, content_weight=0.6, style_weight=1.3),
                                    FuseParams(hard=True, scope="all"), FuseParams(method="direct")])
def test_pasted_infotext_restores_the_accordion(params):
    rt = ListRuntime(["content", "style"])
    script, inputs = build_script(rt)
    request = FusionRequest("content", "style", params)
    values = paste(script.infotext_fields, {"Steps": "20", **request.infotext()})
    current = [c.value for c in inputs]
    ui = UiValues.from_args([v if v is not None else cur for v, cur in zip(values, current)])
    # the dropdowns themselves are restored (and their texts with them)
    assert (ui.content, ui.style, ui.content_text, ui.style_text) == ("content", "style", "content", "style")
    restored, _ = request_for_pass(ui, [], {}, FuseParams())
    assert ui.enabled and (restored.content, restored.style) == ("content", "style")
    if params.method == "nplora" and not params.hard:
        assert restored.params == params
    else:  # mu is not written for hard/direct: the accordion keeps its mu, the result is the same
        assert restored.params.c == params.c and restored.params.method == params.method


def api_paste(fields, params: dict) -> list:
    """What the HTTP API's ``infotext`` paste does per Script field (A1111 1.10.1 / Forge Neo
    ``modules/api/api.py``, ``Api.apply_infotext``'s ``get_field_value``): a callable's result, or
    the label's value; skipped when None or when the component's value is None; a gradio 3
    ``generic_update`` unwrapped (gradio 4's ``update`` is not); else converted with the type of
    the component's value."""
    out = []
    for component, key in fields:
        value = key(params) if callable(key) else params.get(key)
        target_type = type(component.value)
        if value is None or target_type is type(None):
            out.append(None)
            continue
        if isinstance(value, dict) and value.get("__type__") == "generic_update":
            value = value.get("value")
        out.append(value if isinstance(value, target_type) else target_type(value))
    return out


def api_script_args(inputs, pasted: list, request_args: list | None = None) -> list:
    """The job's arguments as the API builds them (``Api.init_script_args``): the defaults (the
    components' values), then the fields pasted from the infotext, then the request's own
    ``alwayson_scripts`` arguments by position."""
    args = [c.value for c in inputs]
    for i, value in enumerate(pasted):
        if value is not None:
            args[i] = value
    for i, value in enumerate(request_args or []):
        args[i] = value
    return args


SET = FusionRequest("c1 + c2*0.5", "s1", FuseParams(mu=0.8, block_mu="IN:0.2,OUT:hard", chain=True))


def test_the_apis_infotext_paste_restores_a_set_and_a_preset():
    rt = ListRuntime(["c1", "c2", "s1"])
    script, inputs = build_script(rt)
    values = api_paste(script.infotext_fields, {"Steps": "20", **SET.infotext()})
    # every field is pasted but the LoRA dropdowns (their value is None); their texts carry the names
    skipped = {ARG_NAMES[i] for i, v in enumerate(values) if v is None}
    assert skipped == {"content", "style"}, values
    assert (values[ARG_NAMES.index("content_text")], values[ARG_NAMES.index("style_text")]) == (SET.content, SET.style)
    ui = UiValues.from_args(api_script_args(inputs, values))
    restored, _ = request_for_pass(ui, [], {}, FuseParams())
    assert (restored.content, restored.style, restored.params) == (SET.content, SET.style, SET.params)


def test_a_dropdown_choice_after_a_paste_beats_the_pasted_text():
    rt = ListRuntime(["c1", "c2", "s1"])
    script, inputs, blocks = build_script(rt, with_blocks=True)
    comps = dict(zip(ARG_NAMES, inputs))
    # the browser's paste restores the dropdowns and their texts
    values = paste(script.infotext_fields, {"Steps": "20", **SET.infotext()})
    args = [v if v is not None else c.value for v, c in zip(values, inputs)]
    assert args[ARG_NAMES.index("content")] == args[ARG_NAMES.index("content_text")] == SET.content
    # the user then picks c2: the dropdown's change event writes it into the hidden text
    for name in ("content", "style"):
        (trigger, fn, ins, outs), = events_of(blocks, comps[name])
        assert trigger == "change" and ins == [comps[name]._id] and outs == [comps[name + "_text"]._id]
    (_, follow, _, _), = events_of(blocks, comps["content"])
    args[ARG_NAMES.index("content")] = "c2"
    stale = list(args)  # the job may start before the event came back: the dropdown still wins
    args[ARG_NAMES.index("content_text")] = follow("c2")
    for job_args in (args, stale):
        restored, _ = request_for_pass(UiValues.from_args(job_args), [], {}, FuseParams())
        assert (restored.content, restored.style) == ("c2", SET.style)
    # clearing the dropdown clears its text: NP-LoRA is then on without a content LoRA
    args[ARG_NAMES.index("content")] = None
    args[ARG_NAMES.index("content_text")] = follow(None)
    with pytest.raises(LoraNameError, match="not chosen"):
        request_for_pass(UiValues.from_args(args), [], {}, FuseParams())
    # through the API, the request's own arguments beat its pasted infotext
    pasted = api_paste(script.infotext_fields, {"Steps": "20", **SET.infotext()})
    ui = UiValues.from_args(api_script_args(inputs, pasted, request_args=[True, "c2"]))
    restored, _ = request_for_pass(ui, [], {}, FuseParams())
    assert (restored.content, restored.style, restored.params) == ("c2", SET.style, SET.params)


def test_pasting_an_image_without_np_lora_turns_it_off():
    rt = ListRuntime([])
    script, _ = build_script(rt)
    values = paste(script.infotext_fields, {"Steps": "20", "Prompt": "a cat"})
    assert values[0] is False and all(v is None for v in values[1:])


def test_ui_values_tolerate_short_argument_lists():
    assert UiValues.from_args([True, "c", "s"]) == UiValues(enabled=True, content="c", style="s")
    assert UiValues.from_args(UiValues(mu=2.0).to_args()) == UiValues(mu=2.0)
    # an older request's 12 arguments: the dropdowns' values, no texts
    old = [True, "c", "s", 1.0, 1.0, 0.5, False, "full", "unet", "nplora", "", False]
    assert UiValues.from_args(old).lora("content") == "c" and UiValues.from_args(old[:3] + [None] * 11).lora("style") == "s"


@pytest.mark.parametrize("module,groups", [
    ("a1111", ("IN", "MID", "OUT")),
    ("forge_ldm", ("IN", "MID", "OUT")),  # Forge Classic, reForge: the SD family
    ("forge", ("IN", "MID", "OUT", "DOUBLE", "SINGLE")),
    ("forge_neo", ("IN", "MID", "OUT", "DOUBLE", "SINGLE", "NOISE", "CONTEXT", "LAYERS", "BLOCKS")),
])
def test_the_accordions_block_sliders_are_the_groups_of_the_models_the_host_runs(module, groups):
    import importlib

    cls = importlib.import_module(f"lib_nplora.webui.hosts.{module}").Adapter
    rt = ListRuntime([], adapter=cls.__new__(cls))  # its class's name and runs(); nothing of a WebUI needed
    _, _, blocks = build_script(rt, with_blocks=True)
    ids = [c.elem_id for c in blocks.blocks.values() if (c.elem_id or "").startswith("script_txt2img_nplora_mub_")]
    assert tuple(i.rsplit("_", 1)[1] for i in ids) == groups
