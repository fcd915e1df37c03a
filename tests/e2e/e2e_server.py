"""A WebUI process started by the end-to-end suite, its HTTP API, and the run's report."""

from __future__ import annotations

import base64
import io
import json
import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOST_VARS = {"a1111": "NPLORA_WEBUI_A1111", "forge": "NPLORA_WEBUI_FORGE",
             "forge_neo": "NPLORA_WEBUI_FORGE_NEO", "forge_classic": "NPLORA_WEBUI_FORGE_CLASSIC"}
#: the host adapter NP-LoRA picks on each (what /nplora/v1/status reports as its host)
ADAPTERS = {"a1111": "a1111", "forge": "forge", "forge_neo": "forge_neo", "forge_classic": "forge_ldm"}
REPORT: list[str] = []


def report(line: str) -> None:
    REPORT.append(line)
    out = os.environ.get("NPLORA_E2E_REPORT")
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def webui_folder(host: str) -> Path:
    """The WebUI checkout named by the host's variable; skips the test when it is unset or is no
    WebUI checkout (no ``launch.py``)."""
    value = os.environ.get(HOST_VARS[host])
    if not value:
        pytest.skip(f"{HOST_VARS[host]} is not set: no real {host} WebUI to test against")
    folder = Path(value)
    if not (folder / "launch.py").is_file():
        pytest.skip(f"{HOST_VARS[host]}={value} is not a WebUI checkout (no launch.py)")
    return folder


def errors_naming(log: str, names: list[str]) -> list[str]:
    """The host's error reports (a ``*** Error ...`` line and the indented traceback under it, as
    A1111 and every Forge print them) that name any of ``names`` (our script files, our folder).
    Reports about the host's own scripts are left out: Forge main ``dfdcbab`` itself logs
    ``*** Error loading script: soft_inpainting.py`` (its requirements lack ``joblib``)."""
    reports, block = [], None
    for line in log.splitlines():
        if line.startswith("*** Error"):
            block = [line]
            reports.append(block)
        elif block is not None and (not line.strip() or line[:1] in (" ", "\t")):
            block.append(line)  # (the host indents the traceback but leaves its blank lines empty)
        else:
            block = None
    return ["\n".join(b) for b in reports if any(n in "\n".join(b) for n in names)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebUI:
    """A WebUI process started by the suite, and its API."""

    def __init__(self, host: str, folder: Path, lora_dir: Path, log: Path):
        self.host, self.folder, self.lora_dir, self.log = host, folder, lora_dir, log
        self.adapter = ADAPTERS[host]
        #: a Forge of any kind (its command-line flags, its API's hires-module choice)
        self.forge = host.startswith("forge")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.linked: Path | None = None
        #: CPU seconds of the last ``txt2img`` (see ``cpu_seconds``)
        self.last_cpu_seconds: float | None = None

    # ------------------------------------------------------------------ process
    def python(self) -> str:
        explicit = os.environ.get("NPLORA_WEBUI_PYTHON")
        if explicit:
            return explicit
        for candidate in (self.folder / "venv" / "bin" / "python", self.folder / "venv" / "Scripts" / "python.exe"):
            if candidate.exists():
                return str(candidate)
        pytest.skip(f"no Python environment in {self.folder}/venv; set NPLORA_WEBUI_PYTHON")

    def checkpoint(self) -> Path:
        explicit = os.environ.get("NPLORA_WEBUI_CKPT")
        if explicit:
            return Path(explicit)
        models = self.folder / "models" / "Stable-diffusion"
        found = sorted(p for p in models.glob("*") if p.suffix in (".safetensors", ".ckpt")) if models.is_dir() else []
        if not found:
            pytest.skip(f"no checkpoint in {models}; set NPLORA_WEBUI_CKPT")
        return found[0]

    def install_extension(self) -> None:
        ext = self.folder / "extensions"
        ext.mkdir(exist_ok=True)
        for entry in ext.iterdir():
            if entry.resolve() == ROOT:
                return  # already installed (linked or this very checkout)
        link = ext / "nplora-e2e"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(ROOT, target_is_directory=True)
        self.linked = link

    def host_flags(self) -> str:
        """The text of the host's command-line definitions (flags differ between Forge variants)."""
        text = ""
        for rel in ("modules/cmd_args.py", "backend/args.py", "ldm_patched/modules/args_parser.py",
                    "modules_forge/cmd_args.py"):
            f = self.folder / rel
            if f.is_file():
                text += f.read_text(errors="replace")
        return text

    def command(self) -> list[str]:
        flags = self.host_flags()

        def known(*names):  # only flags the host defines: its parser refuses the others
            return [n for n in names if f'"{n}"' in flags or f"'{n}'" in flags]

        ckpt = self.checkpoint()
        args = [self.python(), "launch.py", "--api", "--port", str(self.port),
                *known("--skip-prepare-environment", "--skip-install", "--skip-torch-cuda-test",
                       "--skip-version-check", "--no-download-sd-model"),
                "--lora-dir", str(self.lora_dir)]
        if known("--ckpt"):
            args += ["--ckpt", str(ckpt)]
        else:  # Forge Neo: no --ckpt; it loads the first checkpoint of its folders (give one only)
            default = (self.folder / "models" / "Stable-diffusion").resolve()
            if ckpt.resolve().parent != default:
                args += ["--ckpt-dirs", str(ckpt.resolve().parent)]
        args += [*known("--always-cpu"), *known("--disable-gpu-warning")] if self.forge else \
            ["--use-cpu", "all", "--no-half", "--precision", "full"]
        return args + shlex.split(os.environ.get("NPLORA_WEBUI_ARGS", ""))

    def spawn(self) -> list[str]:
        """Start the process (extension linked in) without waiting for it; returns the command."""
        self.install_extension()
        env = dict(os.environ)
        env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DIFFUSERS_OFFLINE": "1",
                    "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                    "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""})
        cmd = self.command()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return cmd

    def start(self) -> None:
        cmd = self.spawn()
        limit = float(os.environ.get("NPLORA_WEBUI_START_TIMEOUT", "900"))
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.host} exited with {self.proc.returncode}; log: {self.log}\n{self.tail()}")
            try:
                # the builtin Lora's routes come with the app_started callbacks, after the API is up
                if self.get("/sdapi/v1/sd-models", timeout=5) is not None and \
                        self.get("/sdapi/v1/loras", timeout=5) is not None:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() - t0 > limit:
                self.stop()
                raise RuntimeError(f"{self.host} did not answer within {limit:.0f} s; log: {self.log}\n{self.tail()}")
            time.sleep(2)
        report(f"{self.host}: started in {time.monotonic() - t0:.0f} s ({' '.join(cmd[1:3])} ... on port {self.port})")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group this suite started, nothing else
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        if self.linked is not None and self.linked.is_symlink():
            self.linked.unlink()

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds used so far by the processes of the group this suite started
        (Linux ``/proc``; None elsewhere). Per image it is what the WebUI computed, less sensitive
        than wall time to other work taking the machine's cores."""
        if self.proc is None or not Path("/proc/self/stat").exists():
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # after the command name in parentheses: state, ppid, pgrp, ... utime (14), stime (15)
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue   # a process that ended meanwhile
            if int(fields[2]) == self.proc.pid:
                total += int(fields[11]) + int(fields[12])
        return total / ticks

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def our_errors(self) -> list[str]:
        """The host's error reports that concern this extension: its script files by name, or a
        traceback through its folder (the link in ``extensions/`` or this checkout)."""
        names = [f"script: {f.name}" for f in (ROOT / "scripts").glob("*.py")] + [str(ROOT) + os.sep]
        ext = self.folder / "extensions"
        names += [str(e) + os.sep for e in ext.iterdir() if e.resolve() == ROOT] if ext.is_dir() else []
        return errors_naming(self.log_text(), names)

    # ------------------------------------------------------------------ API
    def get(self, path: str, timeout: float = 600):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def post(self, path: str, payload: dict, timeout: float = 1800):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{path} -> HTTP {e.code}: {e.read()[:2000]!r}\n{self.tail()}") from None

    def txt2img(self, prompt: str, **kw):
        """(images as uint8 arrays, info dict, seconds)."""
        import numpy as np
        from PIL import Image

        payload = dict(prompt=prompt, negative_prompt="", seed=1234, steps=3, width=64, height=64, cfg_scale=5,
                       sampler_name="Euler", batch_size=1, n_iter=1, send_images=True, save_images=False)
        payload.update(kw)
        t0, cpu0 = time.perf_counter(), self.cpu_seconds()
        r = self.post("/sdapi/v1/txt2img", payload)
        seconds = time.perf_counter() - t0
        cpu1 = self.cpu_seconds()
        self.last_cpu_seconds = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
        images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")) for b in r["images"]]
        return images, json.loads(r["info"]), seconds
