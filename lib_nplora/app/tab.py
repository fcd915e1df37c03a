"""The "NP-LoRA" tab: pick a content and a style LoRA, see how much they interfere (Analyze),
write the fused LoRA into the LoRA folder (Fuse & save), or put the matching ``<nplora:…>`` tag
into the txt2img prompt (Copy prompt tag).

The actions that spend compute or write a file (Analyze, Fuse & save) refuse a request from a
foreign page: its ``Origin``/``Referer`` (from the ``gr.Request`` gradio passes) must be the
page's own or one the host allows (``guard.check_gradio_request``), and the request must carry
the tab's token, a random value rendered into the page (a hidden textbox) that a foreign page
cannot read. The token matters on gradio 3.41, whose ``/api/predict`` takes the request headers a
``gr.Request`` shows from the body; ``--gradio-auth`` (the host's login) covers every route.

One code path for gradio 3.41 (A1111) and 4.40 (Forge, standalone): keyword arguments only,
``gr.update``, JavaScript through ``js_event`` (``_js=`` on 3.x, ``js=`` on 4.x). Errors are shown
in the tab. The same builder serves the WebUIs (registered by the entry script) and standalone
mode (``lib_nplora.app.standalone``).
"""

from __future__ import annotations

import hmac
import html
import secrets
import traceback

from ..errors import NpLoraError, ParameterError
from ..params import UI_PARAMS, FuseParams, ui_rows
from . import block_sliders
from .chart import analysis_html
from .context import HostContext
from .guard import RequestRefused, check_gradio_request
from .request import FusionRequest
from .service import default_output_name

def js_event(gr, name: str) -> dict:
    """Keyword that attaches a JavaScript function to an event on this gradio version."""
    return {"_js": name} if int(gr.__version__.split(".")[0]) < 4 else {"js": name}


#: the tab's inputs, in the table's order (``params.UI_PARAMS``): the two LoRAs, then the parameters
FIELDS = tuple(p.name for p in UI_PARAMS)


def _request(*values) -> FusionRequest:
    """The request of the tab's input values (in ``FIELDS`` order)."""
    given = dict(zip(FIELDS, values))
    content, style = given.pop("content", None), given.pop("style", None)
    if not content or not style:
        raise ParameterError("pick a content LoRA and a style LoRA first")
    return FusionRequest(str(content), str(style), FuseParams.from_values(None, **given), source="tab")


def elem_id(param) -> str:
    """A widget's element id: ``nplora_tab_`` and the field's tag key (or its name)."""
    return f"nplora_tab_{param.tag or param.name}"


def message(text: str, kind: str = "info") -> str:
    """A status line for the tab: kind is "info", "ok" or "error"."""
    return f'<div class="nplora-status nplora-{kind}">{html.escape(text)}</div>'


def _failure(e: Exception) -> str:
    if isinstance(e, NpLoraError):
        return message(str(e), "error")
    traceback.print_exc()
    return message(f"Unexpected error: {e.__class__.__name__}: {e}", "error")


def check_action(ctx: HostContext, token, expected: str, request) -> None:
    """Refuse (``RequestRefused``) an action from a foreign page or without the tab's token."""
    check_gradio_request(request, ctx.access())
    if not isinstance(token, str) or not hmac.compare_digest(token.encode("utf-8", "replace"),
                                                             expected.encode("utf-8")):
        raise RequestRefused("this request does not come from the NP-LoRA page as it is now",
                             hint="Reload the page and try again")


def build_tab(ctx: HostContext):
    """The tab as a ``gr.Blocks``; register it with ``script_callbacks.on_ui_tabs``."""
    import gradio as gr

    d = ctx.defaults()

    def names():
        try:
            return ctx.index().names(ctx.model_arch())
        except Exception:  # the host's list can be unavailable while it loads a model
            return []

    with gr.Blocks(analytics_enabled=False) as tab:
        gr.HTML('<div class="nplora-intro">Fuse a <b>content</b> LoRA (a subject) with a <b>style</b> LoRA: '
                "NP-LoRA removes the style's principal input directions from the content update "
                "(ΔW = w<sub>s</sub>ΔW<sub>s</sub> + w<sub>c</sub>ΔW<sub>c</sub>(I − c·V<sub>k</sub>V<sub>k</sub>ᵀ), "
                "c = μ/(1+μ)). μ = 0.5 and k = full rank are the paper's settings.</div>")
        widgets: dict = {}
        refresh = None
        for row in ui_rows():
            names_row = any(p.kind == "lora" for p in row)
            with gr.Row(**({"elem_id": "nplora_tab_pick"} if names_row else {})):
                for p in row:
                    kind, kw = p.widget(d)
                    if p.kind == "lora":
                        kw.update(choices=names(), scale=4)
                    widgets[p.name] = getattr(gr, kind)(elem_id=elem_id(p), **kw)
                if names_row and refresh is None:
                    refresh = gr.Button(value="\u21bb Refresh list", elem_id="nplora_tab_refresh", size="sm",
                                        scale=1, min_width=120)
            for p in row:
                if p.kind == "blocks":  # a row of sliders that edit the per-block mu text
                    block_sliders.build(gr, widgets[p.name], lambda n: f"nplora_tab_{n}", ctx.archs())
        content, style = widgets["content"], widgets["style"]
        with gr.Row():
            analyze_btn = gr.Button(value="Analyze", elem_id="nplora_tab_analyze", scale=1)
            tag_btn = gr.Button(value="Copy prompt tag", elem_id="nplora_tab_copy", scale=1)
            tag_box = gr.Textbox(label="Prompt tag", value="", interactive=False, elem_id="nplora_tab_tag",
                                 lines=1, scale=3)
        with gr.Row():
            name = gr.Textbox(label="File name in the LoRA folder (.safetensors is added)", value="",
                              elem_id="nplora_tab_name", lines=1, scale=3)
            overwrite = gr.Checkbox(label="Overwrite if a file of that name exists", value=False,
                                    elem_id="nplora_tab_overwrite", scale=1)
            save_btn = gr.Button(value="Fuse & save", variant="primary", elem_id="nplora_tab_save", scale=1)
        status = gr.HTML(value="", elem_id="nplora_tab_status")
        secret = secrets.token_urlsafe(24)
        token = gr.Textbox(value=secret, visible=False, interactive=False, elem_id="nplora_tab_token")
        token.do_not_save_to_config = True  # the WebUIs' ui-config.json must never hold (and restore) it
        suggested = gr.State(value="")
        chart = gr.HTML(value="", elem_id="nplora_tab_chart")
        with gr.Accordion(label="Per-module numbers", open=False):
            numbers = gr.JSON(value=None, elem_id="nplora_tab_numbers")

        params = [widgets[name] for name in FIELDS]

        def do_refresh():
            try:
                ctx.index().refresh()
            except Exception:
                pass
            choices = names()
            return gr.update(choices=choices), gr.update(choices=choices)

        def suggest(*values):
            """Follow the selection with a suggested file name, unless the user typed their own."""
            *pair, current, last = values
            try:
                new = default_output_name(_request(*pair))
            except Exception:
                return gr.update(), last
            if current and current != last:
                return gr.update(), last
            return gr.update(value=new), new

        # explicit positional parameters (``FIELDS``' order): gradio passes gr.Request and gr.Progress by position
        def do_analyze(content, style, content_weight, style_weight, mu, hard, k, scope, method, block_mu, chain,
                       page_token, http_request=None, progress=gr.Progress()):
            values = (content, style, content_weight, style_weight, mu, hard, k, scope, method, block_mu, chain)
            try:
                check_action(ctx, page_token, secret, http_request)
                request = _request(*values)
                progress(0.1, desc="Analyzing")
                result = ctx.service.analyze(ctx.index(), request, device=ctx.device())
                return analysis_html(result), result.to_dict()["modules"], message(
                    f"Analyzed {len(result.modules)} paired modules "
                    f"({result.content_only} content-only, {result.style_only} style-only not paired).", "ok")
            except Exception as e:
                return gr.update(), gr.update(), _failure(e)

        def do_save(content, style, content_weight, style_weight, mu, hard, k, scope, method, block_mu, chain,
                    file_name, allow, page_token, http_request=None, progress=gr.Progress()):
            pair = (content, style, content_weight, style_weight, mu, hard, k, scope, method, block_mu, chain)
            try:
                check_action(ctx, page_token, secret, http_request)
                request = _request(*pair)

                def report(done, total):
                    progress(done / max(total, 1), desc=f"Fusing {done}/{total} modules")

                saved = ctx.service.save(ctx.index(), request, file_name or default_output_name(request),
                                         overwrite=bool(allow), device=ctx.device(), progress=report)
                from pathlib import Path

                p = Path(saved.path)
                text = (f"Saved {p.name} in the LoRA folder ({p.stat().st_size / 2**20:.1f} MiB). "
                        "It shows among the Lora cards after a refresh; use it as "
                        f"<lora:{p.stem}:1>.")
                return message(text, "ok"), gr.update(value=False)
            except Exception as e:
                return _failure(e), gr.update()

        for fn in (do_analyze, do_save):  # a real class, not a string: this module has postponed annotations
            fn.__annotations__["http_request"] = gr.Request
            if fn.__code__.co_varnames[:len(FIELDS)] != FIELDS:  # a table row added without its parameter here
                raise RuntimeError(f"{fn.__name__} must take the table's fields in order: {FIELDS}")

        def do_tag(*values):
            try:
                return _request(*values).tag(), message("Prompt tag ready.", "ok")
            except Exception as e:
                return "", _failure(e)

        refresh.click(fn=do_refresh, inputs=[], outputs=[content, style])
        for comp in params:
            comp.change(fn=suggest, inputs=params + [name, suggested], outputs=[name, suggested])
        analyze_btn.click(fn=do_analyze, inputs=params + [token], outputs=[chart, numbers, status])
        save_btn.click(fn=do_save, inputs=params + [name, overwrite, token], outputs=[status, overwrite])
        tag_btn.click(fn=do_tag, inputs=params, outputs=[tag_box, status]).then(
            fn=None, inputs=[tag_box], outputs=[], **js_event(gr, "nplora_send_tag"))
    return tab
