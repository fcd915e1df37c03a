"""The generation hook: which fusion a job asks for, fusing it, handing it to the host adapter,
and writing what happened into the image's parameters.

Where a request comes from, strongest first:

1. X/Y/Z axis values on the cell's processing object (``p.nplora_mu`` ...), over whatever
   request they modify; an NP-LoRA axis turns NP-LoRA on for the plot;
2. the first ``<nplora:CONTENT:STYLE:…>`` tag of the pass's prompt (arguments it leaves out come
   from the settings' defaults);
3. the accordion, when enabled.

Per pass (first pass, every batch, hires), from ``after_extra_networks_activate``: resolve the
names through the host's LoRA list, check both files fit the loaded model, fuse through the
``FusionService`` caches on the fusion device (a new mu only re-projects), give the result to the
host adapter, give the job fresh conditioning caches when the fusion touches a text encoder (the
WebUI's cond cache key does not know about NP-LoRA), and write the infotext. Any problem becomes
a visible warning (console, the job's comments, the infotext, a UI toast where possible) and the
pass runs without NP-LoRA; other LoRAs are never touched.

State lives here, per process (``runtime()``), and on each job's processing object; never on
Script instances (one per tab, recreated on "Reload UI").
"""

from __future__ import annotations

import importlib
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..arch import ARCH_LABELS
from ..errors import ArchitectureError, NpLoraError, ParameterError
from ..fused import FusedLora
from ..params import FuseParams
from . import accordion, host_auth, settings as settings_mod, xyz
from .accordion import UiValues, parse_k
from ..app.context import HostContext
from .hosts import Applied, HostAdapter, HostError
from ..app.index import LoraEntry, LoraIndex, LoraNameError
from ..app.request import INFOTEXT, TAG, FusionRequest, parse_items
from ..app.service import FusionService

TITLE = "NP-LoRA"
LOG_PREFIX = "[NP-LoRA]"
JOB_ATTR = "nplora_job"


@dataclass
class Job:
    """What one generation job (one ``process_images``) knows about NP-LoRA."""

    ui: UiValues = field(default_factory=UiValues)
    warnings: list[str] = field(default_factory=list)
    cond_digest: str | None = None   # the fusion the job's cond caches were made fresh for
    announced: set = field(default_factory=set)
    applied: str | None = None       # host ident of the fusion of the last pass


def _tag_items(extra_network_data) -> list[list[str]]:
    """Items of the pass's ``<nplora:…>`` tags (the WebUI's ``ExtraNetworkParams`` per tag)."""
    params_list = (extra_network_data or {}).get(TAG) or []
    return [list(getattr(params, "items", params)) for params in params_list]


def request_for_pass(ui: UiValues, tag_items: list[list[str]], overrides: dict,
                     defaults: FuseParams) -> tuple[FusionRequest | None, list[str]]:
    """The fusion a pass asks for (None: none), and notes for the user.

    Raises:
        PromptTagError, ParameterError, LoraNameError: a malformed tag, value or name.
    """
    notes: list[str] = []
    request: FusionRequest | None = None
    if tag_items:
        if len(tag_items) > 1:
            notes.append(f"the prompt has {len(tag_items)} <{TAG}:…> tags; only the first is used")
        request = parse_items(tag_items[0], defaults=defaults)
    elif ui.enabled or overrides:
        if (not ui.content and "nplora_content" not in overrides) or (
                not ui.style and "nplora_style" not in overrides):
            raise LoraNameError("NP-LoRA is on but the content or the style LoRA is not chosen",
                                hint="Pick both in the NP-LoRA accordion")
        params = FuseParams(mu=float(ui.mu), hard=bool(ui.hard), k=parse_k(ui.k),
                            content_weight=float(ui.content_weight), style_weight=float(ui.style_weight),
                            scope=str(ui.scope), method=str(ui.method))
        request = FusionRequest(str(ui.content or ""), str(ui.style or ""), params, source="ui")
    if request is None:
        return None, notes
    if overrides:
        changes = xyz.param_changes(overrides)
        try:
            params = request.params.with_(**changes)
        except ParameterError as e:
            raise ParameterError(f"X/Y/Z plot: {e.problem}", hint=e.hint) from None
        request = FusionRequest(str(overrides.get("nplora_content", request.content)),
                                str(overrides.get("nplora_style", request.style)), params, source="xyz")
    return request, notes


def _label(arch: str | None) -> str:
    return ARCH_LABELS.get(arch, arch or "an unknown model")


def check_fits(entry: LoraEntry, role: str, arch: str | None) -> None:
    """Raise a clear error when a LoRA was not made for the loaded model's architecture."""
    if arch is None or entry.arch is None or entry.fits(arch):
        return
    raise ArchitectureError(
        f"the {role} LoRA {entry.name!r} is for {_label(entry.arch)}, but the loaded model is {_label(arch)}",
        hint="Pick LoRAs made for the loaded checkpoint, or load a matching checkpoint")


def fresh_cond_caches(p) -> None:
    """Give the job its own empty conditioning caches (the class-level ones stay untouched)."""
    for name in ("cached_c", "cached_uc", "cached_hr_c", "cached_hr_uc"):
        current = getattr(p, name, None)
        if isinstance(current, list):
            setattr(p, name, [None] * len(current))


def _gr_warning(text: str) -> None:
    """A toast in the browser when the job was started from the UI (API jobs: console only)."""
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


class Runtime:
    """NP-LoRA's per-process state inside a WebUI: the host adapter, the fusion service, settings.

    Args:
        adapter: a host adapter (default: ``hosts.create()`` on first use).
        service: the fusion service (default: over the process-wide caches).
        opts: returns the WebUI's ``shared.opts`` (None: defaults only).
        host_device: returns the WebUI's compute device (``modules.devices.device``).
        printer: console output.
    """

    def __init__(self, adapter: HostAdapter | None = None, adapter_factory: Callable[[], HostAdapter] | None = None,
                 service: FusionService | None = None, opts: Callable[[], object] | None = None,
                 host_device: Callable[[], object] | None = None, printer: Callable[[str], None] = print):
        self._adapter = adapter
        self._adapter_error: NpLoraError | None = None
        self._factory = adapter_factory
        self.service = service or FusionService()
        self._opts = opts or (lambda: _webui_attr("modules.shared", "opts"))
        self._host_device = host_device or (lambda: _webui_attr("modules.devices", "device"))
        self.print = printer
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ host
    @property
    def adapter(self) -> HostAdapter | None:
        if self._adapter is None and self._adapter_error is None:
            with self._lock:
                if self._adapter is None and self._adapter_error is None:
                    try:
                        from . import hosts

                        self._adapter = (self._factory or hosts.create)()
                    except NpLoraError as e:
                        self._adapter_error = e
                        self.print(f"{LOG_PREFIX} {e}")
        return self._adapter

    def require_adapter(self) -> HostAdapter:
        adapter = self.adapter
        if adapter is None:
            raise self._adapter_error or HostError("no host adapter")
        return adapter

    def settings(self) -> settings_mod.Settings:
        try:
            return settings_mod.read(self._opts())
        except Exception:
            return settings_mod.DEFAULTS

    def device(self) -> torch.device:
        try:
            host = self._host_device()
        except Exception:
            host = None
        return settings_mod.fusion_device(self.settings(), host)

    def index(self) -> LoraIndex:
        return self.require_adapter().index()

    def model_arch(self) -> str | None:
        adapter = self.adapter
        return adapter.model_arch() if adapter is not None else None

    def lora_names(self) -> list[str]:
        """Names for the accordion's and the X/Y/Z axes' lists: the LoRAs fitting the loaded model."""
        adapter = self.adapter
        if adapter is None:
            return []
        try:
            return adapter.index().names(adapter.model_arch())
        except Exception as e:  # a broken host list must not break the UI
            self.print(f"{LOG_PREFIX} could not list LoRAs: {e}")
            return []

    def refresh(self) -> None:
        adapter = self.adapter
        if adapter is not None:
            adapter.index().refresh()

    def check_lora(self, name: str, role: str) -> LoraEntry:
        """Resolve a name for the X/Y/Z axes' check: exists and fits the loaded model."""
        entry = self.index().resolve(name, f"{role} LoRA")
        check_fits(entry, role, self.model_arch())
        return entry

    def context(self) -> HostContext:
        """The HostContext for the NP-LoRA tab and REST API (issue #5's entry points)."""
        adapter = self.adapter
        return HostContext(
            host=adapter.name if adapter is not None else "unknown",
            index=self.index,
            service=self.service,
            model_arch=self.model_arch,
            device=self.device,
            defaults=lambda: self.settings().defaults(),
            access=lambda: host_auth.current().access(),  # --api-auth, --cors-allow-origins
        )

    def forget_model(self, sd_model=None) -> None:
        """``on_model_loaded``: drop host objects referencing the old model (fused results are
        model-independent and stay cached)."""
        adapter = self.adapter
        if adapter is not None:
            adapter.forget_model()

    # ------------------------------------------------------------------ job hooks
    def begin_job(self, p, ui: UiValues) -> Job:
        """``Script.process``: a fresh job record, no NP-LoRA infotext left from a previous X/Y/Z
        cell (cells share ``extra_generation_params``), nothing of NP-LoRA left in the host."""
        job = Job(ui=ui)
        setattr(p, JOB_ATTR, job)
        params = getattr(p, "extra_generation_params", None)
        if isinstance(params, dict):
            for key in [k for k in params if str(k).startswith(INFOTEXT["enabled"])]:
                del params[key]
        settings_mod.apply(self.settings(), self.service.caches)
        adapter = self.adapter
        if adapter is not None:
            adapter.begin_job(p)
        return job

    def warn(self, p, job: Job, text: str) -> None:
        if text in job.warnings:
            return
        job.warnings.append(text)
        self.print(f"{LOG_PREFIX} {text}")
        params = getattr(p, "extra_generation_params", None)
        if isinstance(params, dict):
            params[INFOTEXT["warning"]] = "; ".join(job.warnings)
        comment = getattr(p, "comment", None)
        if callable(comment):
            comment(f"NP-LoRA: {text}")
        _gr_warning(f"NP-LoRA: {text}")

    def on_pass(self, p, extra_network_data) -> Applied | None:
        """``after_extra_networks_activate``: apply the pass's fusion, or make sure none is."""
        job = getattr(p, JOB_ATTR, None)
        if job is None:
            job = Job()
            setattr(p, JOB_ATTR, job)
        adapter = self.adapter
        try:
            request, notes = request_for_pass(job.ui, _tag_items(extra_network_data), xyz.overrides(p),
                                              self.settings().defaults())
        except NpLoraError as e:
            self._off(p, job, adapter, f"{e}; the image is generated without NP-LoRA")
            return None
        for note in notes:
            self.warn(p, job, note)
        if request is None:
            self._off(p, job, adapter, None)
            return None
        if adapter is None:
            self._off(p, job, adapter, f"{self._adapter_error}; the image is generated without NP-LoRA")
            return None
        try:
            fused, applied, seconds = self._apply(p, job, adapter, request)
        except NpLoraError as e:
            self._off(p, job, adapter, f"{e}; the image is generated without NP-LoRA")
            return None
        except Exception as e:  # a bug or a host surprise: report it, generate without NP-LoRA
            traceback.print_exc()
            self._off(p, job, adapter, f"fusion failed ({type(e).__name__}: {e}); the image is generated "
                                       "without NP-LoRA")
            return None
        self._report(p, job, request, fused, applied, seconds)
        return applied

    def _off(self, p, job: Job, adapter: HostAdapter | None, warning: str | None) -> None:
        if warning:
            self.warn(p, job, warning)
        job.applied = None
        if adapter is not None:
            try:
                adapter.deactivate(p)
            except Exception:
                traceback.print_exc()

    def _apply(self, p, job: Job, adapter: HostAdapter, request: FusionRequest):
        sd_model = getattr(p, "sd_model", None)
        arch = adapter.model_arch(sd_model) if sd_model is not None else adapter.model_arch()
        index = adapter.index()
        content = index.resolve(request.content, "content LoRA")
        style = index.resolve(request.style, "style LoRA")
        check_fits(content, "content", arch)
        check_fits(style, "style", arch)
        device = self.device()
        t0 = time.perf_counter()
        # Forge runs this hook under inference_mode: build the (cached, reused) factors as normal
        # tensors so the tab, the API and the host can all use them later.
        with torch.inference_mode(False), torch.no_grad():
            fused = self.service.fuse(index, request, device=device, dtype=settings_mod.fusion_dtype(device),
                                      arch=arch)
        seconds = time.perf_counter() - t0
        applied = adapter.activate(p, fused)
        job.applied = applied.ident
        if applied.touches_text_encoder and job.cond_digest != fused.digest:
            fresh_cond_caches(p)
            job.cond_digest = fused.digest
        return fused, applied, seconds

    def _report(self, p, job: Job, request: FusionRequest, fused: FusedLora, applied: Applied,
                seconds: float) -> None:
        params = getattr(p, "extra_generation_params", None)
        if isinstance(params, dict):
            params.update(request.infotext())
            params[INFOTEXT["hashes"]] = (f"{fused.content.name}: {fused.content.short_hash}, "
                                          f"{fused.style.name}: {fused.style.short_hash}")
        for w in applied.warnings:
            self.warn(p, job, w)
        if fused.digest not in job.announced:
            job.announced.add(fused.digest)
            how = "direct merge" if fused.params.method == "direct" else (
                "hard projection" if fused.params.hard else f"mu {fused.params.mu:g}")
            k = "full rank" if fused.params.k is None else f"k {fused.params.k}"
            self.print(f"{LOG_PREFIX} {fused.content.name} + {fused.style.name} ({how}, {k}, "
                       f"{fused.params.scope}): {applied.modules} weights via {applied.ident}; "
                       f"fusion {seconds:.2f} s on {self.device()}")
            for w in fused.warnings[:10]:
                self.print(f"{LOG_PREFIX}   note: {w}")
            if len(fused.warnings) > 10:
                self.print(f"{LOG_PREFIX}   ... and {len(fused.warnings) - 10} more notes")

    def end_job(self, p) -> None:
        """``Script.postprocess``: leave the host without NP-LoRA."""
        adapter = self.adapter
        if adapter is not None:
            try:
                adapter.end_job(p)
            except Exception:
                traceback.print_exc()


def _webui_attr(module: str, attr: str):
    return getattr(importlib.import_module(module), attr)


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    """The process-wide Runtime (created on first use)."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = Runtime()
    return _runtime


def make_script_class(scripts_module, get_runtime: Callable[[], Runtime] = runtime, gr=None, ui_components=None):
    """The WebUI ``Script`` class (a subclass of the host's ``scripts.Script``).

    Args:
        scripts_module: the WebUI's ``modules.scripts``.
        get_runtime: the Runtime to use (tests pass their own).
        gr, ui_components: gradio and ``modules.ui_components`` (default: imported on ``ui()``).
    """

    class Script(scripts_module.Script):
        sorting_priority = 15  # Forge: where the accordion sits among the others

        def title(self):
            return TITLE

        def show(self, is_img2img):
            return scripts_module.AlwaysVisible

        def ui(self, is_img2img):
            rt = get_runtime()
            gradio = gr or importlib.import_module("gradio")
            components = ui_components or importlib.import_module("modules.ui_components")
            built = accordion.build(gradio, components, self.elem_id, rt.lora_names, rt.refresh,
                                    rt.settings().defaults())
            self.infotext_fields = built.infotext_fields(gradio)
            self.paste_field_names = built.paste_field_names()
            return built.inputs

        def process(self, p, *args):
            get_runtime().begin_job(p, UiValues.from_args(args))

        def after_extra_networks_activate(self, p, *args, **kwargs):
            data = kwargs.get("extra_network_data")
            if data is None:  # a host that does not pass it: what the <nplora:…> extra network recorded
                data = {TAG: getattr(p, "nplora_prompt_items", None) or []}
            get_runtime().on_pass(p, data)

        def postprocess(self, p, processed, *args):
            get_runtime().end_job(p)

    return Script


def register_callbacks(script_callbacks, get_runtime: Callable[[], Runtime] = runtime) -> None:
    """Hook NP-LoRA into the WebUI's callbacks (called at import of ``scripts/nplora.py``)."""

    def before_ui():
        rt = get_runtime()
        try:
            from modules import extra_networks, scripts

            from . import extra_network

            extra_network.register(extra_networks)
            added = xyz.register(scripts.scripts_data, rt.lora_names, rt.check_lora)
            if added:
                rt.print(f"{LOG_PREFIX} added {added} X/Y/Z plot axes")
        except Exception:
            traceback.print_exc()

    def ui_settings():
        from modules import shared

        import gradio as gr

        settings_mod.register(shared, gr)

    def model_loaded(sd_model):
        get_runtime().forget_model(sd_model)

    script_callbacks.on_before_ui(before_ui)
    script_callbacks.on_ui_settings(ui_settings)
    script_callbacks.on_model_loaded(model_loaded)

    from ..app import rest, tab

    def ui_tabs():
        return [(tab.build_tab(get_runtime().context()), TITLE, "nplora_tab")]

    def app_started(demo, app):
        if not host_auth.current().serves_api:  # the host's own rule: no API without --api/--nowebui
            get_runtime().print(f"{LOG_PREFIX} REST API not added: the WebUI runs without --api")
            return
        rest.register(app, get_runtime().context())

    script_callbacks.on_ui_tabs(ui_tabs)
    script_callbacks.on_app_started(app_started)


