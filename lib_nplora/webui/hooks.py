"""The generation hooks: per job (``Script.process`` .. ``Script.postprocess``) and per pass
(first pass, every batch, hires; from ``after_extra_networks_activate``).

Per pass: take the request the pass asks for (``precedence``), resolve the names through the
host's LoRA list, check both files fit the loaded model, fuse through the ``FusionService``
caches on the fusion device (a new mu only re-projects), give the result to the host adapter,
give the job fresh conditioning caches when the fusion touches a text encoder (the WebUI's cond
cache key does not know about NP-LoRA), and write the infotext (``report``). Any problem becomes
a visible warning and the pass runs without NP-LoRA; other LoRAs are never touched.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field

import torch

from ..app.request import FusionRequest
from ..errors import NpLoraError
from . import report, settings as settings_mod, xyz
from .accordion import UiValues
from .hosts import Applied, HostAdapter
from .precedence import request_for_pass, tag_items
from .runtime import Runtime, check_fits

JOB_ATTR = "nplora_job"


@dataclass
class Job:
    """What one generation job (one ``process_images``) knows about NP-LoRA."""

    ui: UiValues = field(default_factory=UiValues)
    warnings: list[str] = field(default_factory=list)
    cond_digest: str | None = None   # the fusion the job's cond caches were made fresh for
    announced: set = field(default_factory=set)
    applied: str | None = None       # host ident of the fusion of the last pass


def fresh_cond_caches(p) -> None:
    """Give the job its own empty conditioning caches (the class-level ones stay untouched)."""
    for name in ("cached_c", "cached_uc", "cached_hr_c", "cached_hr_uc"):
        current = getattr(p, name, None)
        if isinstance(current, list):
            setattr(p, name, [None] * len(current))


def begin_job(rt: Runtime, p, ui: UiValues) -> Job:
    """``Script.process``: a fresh job record, no NP-LoRA infotext left from a previous X/Y/Z
    cell, the settings' cache size applied, nothing of NP-LoRA left in the host."""
    job = Job(ui=ui)
    setattr(p, JOB_ATTR, job)
    report.clear_infotext(p)
    settings_mod.apply(rt.settings(), rt.service.caches)
    adapter = rt.adapter
    if adapter is not None:
        adapter.begin_job(p)
    return job


def on_pass(rt: Runtime, p, extra_network_data) -> Applied | None:
    """``after_extra_networks_activate``: apply the pass's fusion, or make sure none is."""
    job = getattr(p, JOB_ATTR, None)
    if job is None:
        job = Job()
        setattr(p, JOB_ATTR, job)
    adapter = rt.adapter
    try:
        request, notes = request_for_pass(job.ui, tag_items(extra_network_data), xyz.overrides(p), rt.defaults())
    except NpLoraError as e:
        _off(rt, p, job, adapter, f"{e}; the image is generated without NP-LoRA")
        return None
    for note in notes:
        report.warn(p, job, note, rt.print)
    if request is None:
        _off(rt, p, job, adapter, None)
        return None
    if adapter is None:
        _off(rt, p, job, adapter, f"{rt.adapter_error}; the image is generated without NP-LoRA")
        return None
    try:
        fused, applied, seconds = _apply(rt, p, job, adapter, request)
    except NpLoraError as e:
        _off(rt, p, job, adapter, f"{e}; the image is generated without NP-LoRA")
        return None
    except Exception as e:  # a bug or a host surprise: report it, generate without NP-LoRA
        traceback.print_exc()
        _off(rt, p, job, adapter, f"fusion failed ({type(e).__name__}: {e}); the image is generated "
                                  "without NP-LoRA")
        return None
    report.applied(p, job, request, fused, applied, seconds, rt.device(), rt.print)
    return applied


def end_job(rt: Runtime, p) -> None:
    """``Script.postprocess``: leave the host without NP-LoRA."""
    adapter = rt.adapter
    if adapter is not None:
        try:
            adapter.end_job(p)
        except Exception:
            traceback.print_exc()


def _off(rt: Runtime, p, job: Job, adapter: HostAdapter | None, warning: str | None) -> None:
    if warning:
        report.warn(p, job, warning, rt.print)
    job.applied = None
    if adapter is not None:
        try:
            adapter.deactivate(p)
        except Exception:
            traceback.print_exc()


def _apply(rt: Runtime, p, job: Job, adapter: HostAdapter, request: FusionRequest):
    sd_model = getattr(p, "sd_model", None)
    arch = adapter.model_arch(sd_model) if sd_model is not None else adapter.model_arch()
    index = adapter.index()
    contents, styles = rt.service.entries(index, request)
    for side, entries in (("content", contents), ("style", styles)):
        for entry in entries:
            check_fits(entry, side, arch)
    device = rt.device()
    t0 = time.perf_counter()
    # Forge runs this hook under inference_mode: build the (cached, reused) factors as normal
    # tensors so the tab, the API and the host can all use them later.
    with torch.inference_mode(False), torch.no_grad():
        fused = rt.service.fuse(index, request, device=device, dtype=settings_mod.fusion_dtype(device), arch=arch)
    seconds = time.perf_counter() - t0
    applied = adapter.activate(p, fused)
    job.applied = applied.ident
    if applied.touches_text_encoder and job.cond_digest != fused.digest:
        fresh_cond_caches(p)
        job.cond_digest = fused.digest
    return fused, applied, seconds
