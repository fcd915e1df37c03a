"""Host adapters: how a fused LoRA gets into each WebUI's own LoRA machinery.

One adapter per host family, each in its own module:

* ``a1111``     AUTOMATIC1111 1.x: an in-memory ``network.Network`` appended to
                ``networks.loaded_networks`` under a name unique to the fusion;
* ``forge``     Forge (lllyasviel main, ``backend/``): patches on cloned UNet/CLIP patchers under a
                unique identifier, swapped into ``forge_objects_after_applying_lora`` and taken
                out again after the job;
* ``forge_neo`` Forge Neo (``backend/`` with per-architecture LoRA code): the same swap, the
                patches built by Neo's builtin ``load_lora_for_models`` (its Z-Image key
                conversion, its mismatch rule); Nunchaku models by file, as Neo does;
* ``forge_ldm`` old Forge, reForge and Forge Classic (``ldm_patched``): the same swap, with
                patches built by the host's own ``ldm_patched`` LoRA loader.

The host is recognised by what it can do (a Forge patcher backend importable, or the A1111
network apply path), never by a version string. Every adapter has the interface of
``HostAdapter``; the generation hooks (``webui.hooks``) talk only to that.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from ...arch import hosts_running
from ...errors import NpLoraError
from ...fused import FusedLora
from ...app.index import DirectoryIndex, LoraEntry

HOSTS = ("a1111", "forge", "forge_neo", "forge_ldm")

#: Forge Neo's per-architecture LoRA code (any one of them marks the Neo backend)
NEO_LORA_MODULES = ("backend.nn._z_lora", "backend.nn._qwen_lora", "backend.nn.svdq")


class HostError(NpLoraError, RuntimeError):
    """The host cannot take the fused LoRA (missing builtin, unknown model layout, ...)."""


@dataclass
class Applied:
    """What an adapter did with a fused LoRA for one pass.

    Attributes:
        ident: the host-side name of the fusion (network name / patch identifier).
        modules: weights patched.
        touches_text_encoder: some patched weight belongs to a text encoder.
        warnings: what the user should know (skipped modules, host limitations).
    """

    ident: str
    modules: int
    touches_text_encoder: bool
    warnings: list[str] = field(default_factory=list)


class HostLoraIndex(DirectoryIndex):
    """The host's own LoRA list (``networks.available_networks`` of the builtin Lora extension).

    Names are exactly what ``<lora:…>`` accepts there (file stems, aliases from
    ``ss_output_name``); each file's architecture comes from its header, read once per file
    version. The list is re-read from the host on every call, so a refresh in the Lora tab shows.
    """

    def __init__(self, networks, folder: str | os.PathLike, printer=None):
        super().__init__(folder, printer)
        self._networks = networks

    def refresh(self) -> None:
        self._networks.list_available_networks()
        super().refresh()

    def entries(self) -> dict[str, LoraEntry]:
        found, notes = self._scan()  # no lock held: header reads never hold up other requests
        self._set_notes(notes)
        return found

    def _scan(self) -> tuple[dict[str, LoraEntry], list[tuple[str, str]]]:
        found: dict[str, LoraEntry] = {}
        notes: list[tuple[str, str]] = []
        for name, on_disk in list(self._networks.available_networks.items()):
            filename = getattr(on_disk, "filename", None)
            if not filename:
                continue
            path = os.fsdecode(filename)
            entry = self._entry(path, os.path.basename(path), notes)
            if entry is None:  # a FIFO, socket, link loop, ... in the host's list: skipped, noted
                continue
            alias = getattr(on_disk, "alias", None)
            if not alias or alias == name:
                alias = entry.alias
            found[name] = LoraEntry(name, entry.path, alias, entry.arch, entry.arch_candidates)
        return found, notes


def model_arch(sd_model) -> str | None:
    """Architecture name of a loaded WebUI model ("sd1", "sd2", "sdxl", "flux"), None if unknown.

    Reads the flags both A1111 and Forge set on the model (``is_sdxl``, ``is_sd2``, ``is_sd1``,
    ``is_sd3``); FLUX is recognised by Forge's engine class.
    """
    if sd_model is None:
        return None
    if getattr(sd_model, "is_sd3", False):
        return None
    if getattr(sd_model, "is_sdxl", False):
        return "sdxl"
    if getattr(sd_model, "is_sd2", False):
        return "sd2"
    if getattr(sd_model, "is_sd1", False):
        return "sd1"
    if type(sd_model).__name__.lower() == "flux":
        return "flux"
    return None


def _has_module(name: str, find_spec) -> bool:
    try:
        return find_spec(name) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def detect(find_spec=importlib.util.find_spec) -> str | None:
    """Which adapter fits the running WebUI: "a1111", "forge", "forge_neo", "forge_ldm", or None.

    By capability: a Forge backend (``modules_forge``) with the ``backend.patcher.lora`` patch
    system is "forge", "forge_neo" when it also has Neo's per-architecture LoRA code
    (``NEO_LORA_MODULES``); one with ``ldm_patched``'s LoRA loader is "forge_ldm" (old Forge,
    reForge, Forge Classic); a WebUI (``modules``) without a Forge backend applies LoRAs
    through A1111's network path.
    """
    if _has_module("modules_forge", find_spec):
        if _has_module("backend.patcher.lora", find_spec):
            if any(_has_module(m, find_spec) for m in NEO_LORA_MODULES):
                return "forge_neo"
            return "forge"
        if _has_module("ldm_patched.modules.lora", find_spec):
            return "forge_ldm"
        return None
    if _has_module("modules", find_spec):
        return "a1111"
    return None


class HostAdapter:
    """Interface of a host adapter.

    Lifecycle per generation job: ``begin_job`` (from ``Script.process``), then per pass
    (first pass, each batch, hires) ``activate`` or ``deactivate`` from
    ``after_extra_networks_activate``, then ``end_job`` (``Script.postprocess``). ``forget_model``
    runs on every model load/switch and drops host objects that reference the old model.
    """

    name = "?"

    def __init__(self, networks, lora_dir: str | os.PathLike | None = None):
        self.networks = networks
        self._lora_dir = lora_dir
        self._index: HostLoraIndex | None = None

    # ------------------------------------------------------------------ the LoRA list
    def lora_dir(self) -> Path:
        if self._lora_dir is None:
            from modules import shared  # the WebUI's; imported only when running inside one

            self._lora_dir = shared.cmd_opts.lora_dir
        return Path(self._lora_dir)

    def index(self) -> HostLoraIndex:
        if self._index is None:
            self._index = HostLoraIndex(self.networks, self.lora_dir())
        return self._index

    def model_arch(self, sd_model=None) -> str | None:
        if sd_model is None:
            sd_model = self.current_model()
        return model_arch(sd_model)

    def current_model(self):
        from modules import shared

        return getattr(shared, "sd_model", None)

    # ------------------------------------------------------------------ per job / pass
    def begin_job(self, p) -> None:
        """Undo anything left over from an interrupted job."""

    def activate(self, p, fused: FusedLora) -> Applied:
        raise NotImplementedError

    def deactivate(self, p) -> None:
        """Make sure this pass runs without NP-LoRA."""

    def end_job(self, p) -> None:
        """Leave the host as it was before the job."""
        self.deactivate(p)

    def forget_model(self) -> None:
        """The model was loaded or switched: drop objects that reference the old one."""

    def runs(self, arch: str) -> bool:
        """Whether this host runs base models of ``arch`` (``arch.hosts_running``)."""
        return self.name in hosts_running(arch)


def create(name: str | None = None, **kwargs) -> HostAdapter:
    """The adapter for host ``name`` (default: ``detect()``), over the host's builtin Lora modules.

    Raises:
        HostError: no supported host, or its builtin Lora extension is not loaded.
    """
    name = name or detect()
    if name not in HOSTS:
        raise HostError("this WebUI is not one NP-LoRA knows how to patch",
                        hint="NP-LoRA supports AUTOMATIC1111 1.x, Forge, Forge Neo, Forge Classic and reForge")
    try:
        networks = kwargs.pop("networks", None) or importlib.import_module("networks")
    except ImportError:
        raise HostError("the WebUI's built-in Lora extension is not loaded",
                        hint="Enable the built-in Lora extension (Extensions tab) and restart") from None
    module = importlib.import_module(f"{__name__}.{name}")
    return module.Adapter(networks, **kwargs)
