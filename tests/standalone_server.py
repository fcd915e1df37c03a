"""The real standalone server (``python -m lib_nplora serve``) in a child process, and the Chromium
the browser tests drive: shared by ``tests/browser`` and ``tests/security``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: Path) -> tuple[subprocess.Popen, str]:
    """Serve ``folder`` on a free loopback port; (the process, its base URL ending in '/') once
    ``/nplora/v1/status`` answers. Fails the test when the server does not come up."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lib_nplora", "serve", "--lora-dir", str(folder), "--port", str(port)],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120  # a hang detector, not a timing
    while True:
        try:
            with urllib.request.urlopen(url + "nplora/v1/status", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("the standalone server did not start:\n" + (proc.stdout.read() if proc.stdout else ""))
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
