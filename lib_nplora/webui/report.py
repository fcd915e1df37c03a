"""What the user is told about a job: warnings (console, the job's comments, the infotext, a UI
toast where possible), the infotext of an applied fusion, and one console line per fusion.

Any problem becomes such a warning and the pass runs without NP-LoRA; nothing here raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..app.request import INFOTEXT, FusionRequest
from ..fused import FusedLora
from .hosts import Applied

if TYPE_CHECKING:
    from .hooks import Job

LOG_PREFIX = "[NP-LoRA]"
Printer = Callable[[str], None]


def toast(text: str) -> None:
    """A toast in the browser when the job was started from the UI (API jobs: console only).

    gradio shows ``gr.Warning`` only inside an event handler; outside one (a job from the
    WebUI's own REST API) it would log an error, so the handler's context is checked first.
    """
    try:
        import gradio as gr
        from gradio import context

        local = getattr(context, "LocalContext", None)  # gradio 4
        if local is not None:
            inside = local.blocks.get() is not None
        else:  # gradio 3.41
            inside = hasattr(getattr(context, "thread_data", None), "blocks")
        if inside:
            gr.Warning(text)
    except Exception:
        pass


def clear_infotext(p) -> None:
    """No NP-LoRA infotext left from a previous X/Y/Z cell (cells share ``extra_generation_params``)."""
    params = getattr(p, "extra_generation_params", None)
    if isinstance(params, dict):
        for key in [k for k in params if str(k).startswith(INFOTEXT["enabled"])]:
            del params[key]


def warn(p, job: Job, text: str, printer: Printer = print) -> None:
    """Tell the user once per job: console, the infotext's warning entry, the job's comments, a toast."""
    if text in job.warnings:
        return
    job.warnings.append(text)
    printer(f"{LOG_PREFIX} {text}")
    params = getattr(p, "extra_generation_params", None)
    if isinstance(params, dict):
        params[INFOTEXT["warning"]] = "; ".join(job.warnings)
    comment = getattr(p, "comment", None)
    if callable(comment):
        comment(f"NP-LoRA: {text}")
    toast(f"NP-LoRA: {text}")


def applied(p, job: Job, request: FusionRequest, fused: FusedLora, result: Applied, seconds: float,
            device, printer: Printer = print) -> None:
    """The infotext of an applied fusion, the host's warnings, and (once per fusion and job) a
    console line saying what was fused, how, and where."""
    params = getattr(p, "extra_generation_params", None)
    if isinstance(params, dict):
        params.update(request.infotext())
        params[INFOTEXT["hashes"]] = ", ".join(f"{i.name}: {i.short_hash}" for i in fused.inputs)
    for w in result.warnings:
        warn(p, job, w, printer)
    if fused.digest not in job.announced:
        job.announced.add(fused.digest)
        how = fused.params.label()
        k = "full rank" if fused.params.k is None else f"k {fused.params.k}"
        printer(f"{LOG_PREFIX} {' + '.join(i.name for i in fused.inputs)} ({how}, {k}, "
                f"{fused.params.scope}): {result.modules} weights via {result.ident}; "
                f"fusion {seconds:.2f} s on {device}")
        for w in fused.warnings[:10]:
            printer(f"{LOG_PREFIX}   note: {w}")
        if len(fused.warnings) > 10:
            printer(f"{LOG_PREFIX}   ... and {len(fused.warnings) - 10} more notes")
