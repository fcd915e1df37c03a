"""Hostile paths and devices (issue 10, section 2: "Not a regular file", "Unsupported devices").

Real files on disk: a FIFO, a Unix socket, a symlink loop, a dangling symlink, a path through a
regular file, a name over NAME_MAX and a name that is not UTF-8, next to real LoRA files. Every
call that could hang runs where a generous timeout can detect the hang (a subprocess, or a daemon
thread joined with a timeout); no test asserts a duration.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings as hsettings, strategies as st

import lora_factory as F
from lib_nplora import devices
from lib_nplora.analysis import analyze
from lib_nplora.api import analyze_files, fuse_files
from lib_nplora.app import index as index_mod
from lib_nplora.app.index import DirectoryIndex
from lib_nplora.cache import Caches
from lib_nplora.errors import FormatError, NpLoraError, ParameterError
from lib_nplora.formats import safetensors_file as sf
from lib_nplora.formats.reader import load_lora, load_pair, peek
from lib_nplora.fusion.merge import fuse
from lib_nplora.params import FuseParams
from lib_nplora.webui import settings as webui_settings

ROOT = Path(__file__).resolve().parents[2]
HANG = 120  # seconds: only a hang detector, far above any real run

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX file types")


def call(fn, *args, **kw):
    """``fn(*args, **kw)`` in a daemon thread: (result, exception); fails if it does not return."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(HANG)
    assert not t.is_alive(), f"{getattr(fn, '__name__', fn)} hung"
    return out.get("value"), out.get("error")


def rows():
    return F.select("sd1", "attn", ("unet",))[:8]


def make_bad(folder: Path, good: Path) -> dict[str, Path]:
    """Every bad kind of entry in ``folder`` (next to the good ``good`` LoRA), name -> path."""
    bad = {}
    fifo = folder / "fifo.safetensors"
    os.mkfifo(fifo)
    bad["fifo"] = fifo
    here = os.getcwd()
    os.chdir(folder)  # a Unix socket's path is limited to ~100 bytes: bind the short relative name
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind("sock.safetensors")
        sock.close()  # the socket file stays
    finally:
        os.chdir(here)
    bad["socket"] = folder / "sock.safetensors"
    os.symlink("loop.safetensors", folder / "loop.safetensors")
    bad["loop"] = folder / "loop.safetensors"
    os.symlink("missing.safetensors", folder / "dangling.safetensors")
    bad["dangling"] = folder / "dangling.safetensors"
    os.symlink(f"{good.name}/inner.safetensors", folder / "through.safetensors")
    bad["through"] = folder / "through.safetensors"
    os.symlink("n" * 256 + ".safetensors", folder / "long.safetensors")
    bad["long"] = folder / "long.safetensors"
    raw = os.path.join(os.fsencode(folder), b"bad\xff name.safetensors")
    try:
        with open(raw, "wb") as f:
            f.write(good.read_bytes())  # a valid LoRA, only its name is not UTF-8
    except OSError as e:  # a file system that only takes UTF-8 names
        if e.errno not in (errno.EILSEQ, errno.EINVAL):
            raise
    else:
        bad["non_utf8"] = Path(os.fsdecode(raw))
    return bad


@pytest.fixture
def folder(tmp_path):
    lora = tmp_path / "Lora"
    lora.mkdir()
    F.make_lora(lora / "dog.safetensors", "sd1", rows(), rank=2, seed=1, dtype=torch.float16)
    F.make_lora(lora / "ink.safetensors", "sd1", rows(), rank=2, seed=2, dtype=torch.float16)
    bad = make_bad(lora, lora / "dog.safetensors")
    return lora, bad


# ---------------------------------------------------------------------------- the library


def direct_bad_paths(folder: Path, bad: dict[str, Path]) -> dict[str, object]:
    paths: dict[str, object] = dict(bad)
    paths["through_direct"] = folder / "dog.safetensors" / "x.safetensors"
    paths["long_direct"] = folder / ("n" * 256 + ".safetensors")
    paths["folder"] = folder
    paths["char_device"] = "/dev/null"
    if "non_utf8" in bad:
        paths["non_utf8_bytes"] = os.fsencode(bad["non_utf8"])
    return paths


EXPECTED = {
    "fifo": "is a named pipe (FIFO), not a regular file", "socket": "is a socket, not a regular file",
    "loop": "symbolic link loop", "dangling": "symbolic link to a file that does not exist",
    "through": "a part of its path is a file", "through_direct": "a part of its path is a file",
    "long": "longer than the system allows", "long_direct": "longer than the system allows",
    "folder": "is a folder", "char_device": "is a character device",
    "non_utf8": "not valid UTF-8", "non_utf8_bytes": "not valid UTF-8",
}


@pytest.mark.parametrize("reader", [load_lora, peek, sf.read_header, sf.read_file, sf.data_sha256,
                                    lambda p: Caches().load(p)], ids=["load_lora", "peek", "read_header",
                                                                       "read_file", "data_sha256", "cache"])
def test_every_bad_path_is_the_projects_error_naming_the_file(folder, reader):
    lora, bad = folder
    for kind, path in direct_bad_paths(lora, bad).items():
        _, error = call(reader, path)
        assert isinstance(error, FormatError), (kind, repr(error))
        assert not isinstance(error, (OSError, UnicodeError)), kind
        text = str(error)
        assert EXPECTED[kind] in text, (kind, text)
        assert error.hint, kind  # says what to do
        text.encode("utf-8")  # printable anywhere: no lone surrogates
        assert text.isprintable(), (kind, text)
        if kind.startswith("non_utf8"):
            assert text.startswith("'bad\\xff name.safetensors': "), text
        elif kind not in ("folder", "char_device", "long_direct", "through_direct"):
            assert text.startswith(Path(os.fsdecode(path)).name + ": "), text


def test_a_fifo_swapped_in_after_the_type_check_does_not_block(folder, monkeypatch):
    """The race: ``stat`` saw a regular file, then a FIFO took its place before ``open``."""
    lora, bad = folder
    real_stat = os.stat
    regular = real_stat(lora / "dog.safetensors")
    monkeypatch.setattr(sf.os, "stat", lambda p, *a, **k: regular if os.fspath(p) == str(bad["fifo"])
                        else real_stat(p, *a, **k))
    _, error = call(sf.read_header, bad["fifo"])
    assert isinstance(error, FormatError) and "named pipe (FIFO)" in str(error)


def test_good_files_still_read_through_links_and_as_bytes_paths(folder, tmp_path):
    lora, _ = folder
    link = tmp_path / "link.safetensors"
    os.symlink(lora / "dog.safetensors", link)
    assert load_lora(link).sha256 == load_lora(lora / "dog.safetensors").sha256
    assert load_lora(os.fsencode(lora / "dog.safetensors")).name == "dog"
    with sf.open_for_reading(lora / "dog.safetensors") as f:
        assert os.get_blocking(f.fileno())  # O_NONBLOCK cleared after the checks
        assert stat.S_ISREG(os.fstat(f.fileno()).st_mode)


def test_unreadable_file_is_a_clear_error(folder):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    lora, _ = folder
    locked = lora / "locked.safetensors"
    locked.write_bytes((lora / "dog.safetensors").read_bytes())
    locked.chmod(0)
    try:
        with pytest.raises(FormatError, match=r"^locked\.safetensors: cannot be read \(permission denied\)"):
            load_lora(locked)
    finally:
        locked.chmod(0o644)


@pytest.mark.parametrize("code,expected", [(errno.EACCES, "cannot be read (permission denied)"),
                                           (errno.EPERM, "cannot be read (permission denied)"),
                                           (errno.EIO, "cannot be read (Input/output error)")])
def test_other_os_errors_map_to_the_clear_error(code, expected):
    """Errors a test cannot provoke as root or on a healthy disk: the mapping itself."""
    e = sf.open_error(OSError(code, os.strerror(code)), "/x/lora.safetensors")
    assert isinstance(e, FormatError) and str(e).startswith(f"lora.safetensors: {expected}. ")


def cli(*args) -> subprocess.CompletedProcess:
    """``python -m lib_nplora ARGS`` (bytes arguments: any file name), its timeout a hang detector."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "lib_nplora", *(os.fsencode(os.fspath(a)) for a in args)],
                          cwd=ROOT, env=env, capture_output=True, timeout=HANG)


def test_cli_with_a_fifo_exits_1_with_the_message(folder):
    lora, bad = folder
    good = lora / "ink.safetensors"
    for args in (["inspect", bad["fifo"]], ["fuse", bad["fifo"], good, "-o", lora / "out.safetensors"],
                 ["analyze", good, bad["fifo"]]):
        r = cli(*args)
        err = r.stderr.decode("utf-8")
        assert r.returncode == 1, (args[0], err)
        assert err.startswith("nplora: error: fifo.safetensors: is a named pipe (FIFO), not a regular file"), err
        assert "Traceback" not in err
    assert not (lora / "out.safetensors").exists()


def test_cli_gives_the_clear_error_for_every_bad_path(folder, capsys):
    from lib_nplora.cli import main

    lora, bad = folder
    good = lora / "ink.safetensors"
    for kind, path in bad.items():
        for args in (["inspect", path], ["fuse", path, good, "-o", lora / "out.safetensors"],
                     ["analyze", good, path]):
            code, error = call(main, [os.fspath(a) for a in args])
            err = capsys.readouterr().err
            assert error is None and code == 1, (kind, args[0], repr(error), err)
            assert err.startswith("nplora: error: ") and EXPECTED[kind] in err, (kind, err)
            err.encode("utf-8")  # printable on any terminal
    assert not (lora / "out.safetensors").exists()


# ---------------------------------------------------------------------------- the LoRA list


def test_index_lists_the_good_files_and_notes_each_bad_one(folder):
    lora, bad = folder
    printed = []
    index = DirectoryIndex(lora, printer=printed.append)
    entries, error = call(index.entries)
    assert error is None, repr(error)
    assert sorted(entries) == ["dog", "ink"]
    assert entries["dog"].arch == "sd1" and entries["ink"].arch == "sd1"
    notes = dict(index.notes())
    shown = {kind: ("'bad\\xff name.safetensors'" if kind == "non_utf8" else path.name) for kind, path in bad.items()}
    assert set(notes) == set(shown.values())
    for kind, name in shown.items():
        assert EXPECTED[kind] in notes[name], (kind, notes[name])
    assert len(printed) == len(bad) and all(line.startswith("NP-LoRA: skipped ") for line in printed)
    index.refresh()
    assert sorted(call(index.entries)[0]) == ["dog", "ink"]
    assert len(printed) == len(bad)  # each note printed once
    assert index.names() == ["dog", "ink"]
    with pytest.raises(NpLoraError, match="no LoRA named 'fifo'"):
        index.resolve("fifo")


def test_index_in_subfolders_with_a_non_utf8_folder_name(tmp_path):
    lora = tmp_path / "Lora"
    (lora / "styles").mkdir(parents=True)
    F.make_lora(lora / "styles" / "ink.safetensors", "sd1", rows(), rank=2, seed=2)
    os.mkfifo(lora / "styles" / "pipe.safetensors")
    raw = os.path.join(os.fsencode(lora), b"caf\xe9")
    try:
        os.mkdir(raw)
    except OSError:
        pytest.skip("the file system takes only UTF-8 names")
    F.make_lora(Path(os.fsdecode(raw)) / "dog.safetensors", "sd1", rows(), rank=2, seed=1)
    index = DirectoryIndex(lora, printer=lambda _: None)
    assert sorted(call(index.entries)[0]) == ["ink"]
    notes = dict(index.notes())
    assert notes == {os.path.join("'caf\\xe9'", "dog.safetensors"): "its name is not valid UTF-8 text; rename it",
                     os.path.join("styles", "pipe.safetensors"): "is a named pipe (FIFO), not a regular file"}


def test_a_slow_header_read_does_not_hold_up_other_requests(folder, monkeypatch):
    """The lock only swaps results in: while one request's scan is stuck reading a header (a slow
    network share, played by an Event), another request's scan, ``notes()`` and ``refresh()``
    answer."""
    lora, _ = folder
    index = DirectoryIndex(lora, printer=lambda _: None)
    stuck, release = threading.Event(), threading.Event()
    real_peek = index_mod.peek
    first = threading.Lock()

    def slow_peek(path):
        if first.acquire(blocking=False):  # only the first header read of the first scan is slow
            stuck.set()
            release.wait(HANG)
        return real_peek(path)

    monkeypatch.setattr(index_mod, "peek", slow_peek)
    slow = threading.Thread(target=index.entries, daemon=True)
    slow.start()
    assert stuck.wait(HANG)
    try:
        entries, error = call(index.entries)
        assert error is None and sorted(entries) == ["dog", "ink"]
        assert call(index.notes)[1] is None
        assert call(index.refresh)[1] is None
    finally:
        release.set()
    slow.join(HANG)
    assert not slow.is_alive()


def test_the_webui_backed_index_skips_bad_files_of_the_hosts_list(folder):
    from lib_nplora.webui.hosts import HostLoraIndex
    from webui.standins.a1111_lora import StandInNetworks

    lora, bad = folder
    networks = StandInNetworks(lora)
    networks.list_available_networks()  # the stand-in lists every *.safetensors name, as A1111 does
    assert {"fifo", "sock", "loop"} <= set(networks.available_networks)
    index = HostLoraIndex(networks, lora, printer=lambda _: None)
    entries, error = call(index.entries)
    assert error is None, repr(error)
    assert sorted(entries) == ["dog", "ink"]
    notes = dict(index.notes())
    assert EXPECTED["fifo"] in notes["fifo.safetensors"] and EXPECTED["socket"] in notes["sock.safetensors"]


# ---------------------------------------------------------------------------- REST, standalone server


@pytest.mark.ui
def test_standalone_server_answers_and_fuses_with_bad_files_in_the_folder(folder):
    from fastapi.testclient import TestClient

    from lib_nplora.app.standalone import create_app

    lora, bad = folder
    app, _ = create_app(lora)
    client = TestClient(app, base_url="http://127.0.0.1")
    r, error = call(client.get, "/nplora/v1/status")
    assert error is None and r.status_code == 200, r.text
    assert r.json()["loras"] == 2
    r, error = call(client.post, "/nplora/v1/fuse", json={"content": "dog", "style": "ink", "name": "dog in ink"})
    assert error is None and r.status_code == 200, r.text
    assert load_lora(lora / "dog in ink.safetensors").arch == "sd1"
    r, _ = call(client.post, "/nplora/v1/fuse", json={"content": "fifo", "style": "ink", "name": "x"})
    assert r.status_code == 404 and "no LoRA named 'fifo'" in r.json()["detail"]
    assert stat.S_ISFIFO(os.lstat(bad["fifo"]).st_mode)  # never touched


# ---------------------------------------------------------------------------- devices

BAD_DEVICES = ["meta", "xla", "hpu", "xpu", "privateuseone:0", "cuda:99", "bogus", "", "cuda:-1", "cpu:x"]
if not torch.cuda.is_available():
    BAD_DEVICES += ["cuda", "cuda:0", "CUDA"]
if not devices._mps_available():
    BAD_DEVICES += ["mps"]


@pytest.mark.parametrize("value", BAD_DEVICES)
def test_unsupported_devices_get_one_parameter_error(value, folder):
    lora, _ = folder
    dog, ink = lora / "dog.safetensors", lora / "ink.safetensors"
    pattern = re.compile(rf"^device {re.escape(repr(value))} cannot be used: [^.]+\. Use one of: auto, cpu")
    with pytest.raises(ParameterError) as e:
        devices.resolve_device(value)
    assert pattern.search(str(e.value)), str(e.value)
    # the library's file API, before any file is read
    for fn in (lambda: fuse_files(dog, ink, lora / "out.safetensors", device=value),
               lambda: analyze_files(dog, ink, device=value)):
        with pytest.raises(ParameterError, match=pattern):
            fn()
    # the in-memory API
    content, style = load_pair(dog, ink)
    with pytest.raises(ParameterError, match=pattern):
        fuse(content, style, FuseParams(), device=value)
    with pytest.raises(ParameterError, match=pattern):
        analyze(content, style, device=value)
    # the WebUI's Fusion device setting (what the tab and the REST API use)
    with pytest.raises(ParameterError, match=pattern):
        webui_settings.fusion_device(webui_settings.Settings(device=value), "cuda:0")
    assert not (lora / "out.safetensors").exists()


def test_cli_refuses_unsupported_devices(folder, capsys):
    from lib_nplora.cli import main

    lora, _ = folder
    dog, ink = lora / "dog.safetensors", lora / "ink.safetensors"
    r = cli("fuse", dog, ink, "-o", lora / "o.safetensors", "--device", "meta")  # the real entry point
    assert r.returncode == 1 and re.match(r"nplora: error: device 'meta' cannot be used: [^.]+\. Use one of: auto, "
                                          r"cpu", r.stderr.decode()), r.stderr
    for value in ("meta", "xla", "cuda:99", "bogus"):
        for args in (["fuse", dog, ink, "-o", lora / "o.safetensors"], ["analyze", dog, ink]):
            assert main([*map(str, args), "--device", value]) == 1
            err = capsys.readouterr().err
            assert re.match(rf"nplora: error: device {re.escape(repr(value))} cannot be used: [^.]+\. "
                            r"Use one of: auto, cpu", err), err
    assert not (lora / "o.safetensors").exists()


def test_the_setting_read_from_the_webui_is_checked_when_fusion_runs():
    from webui.standins.webui_modules import StandInOptions

    s = webui_settings.read(StandInOptions({"nplora_device": "meta"}))
    assert s.device == "meta"  # reading never fails ...
    with pytest.raises(ParameterError, match=r"^device 'meta' cannot be used"):
        webui_settings.fusion_device(s, "cuda:0")  # ... using it gives the clear error
    for choice, host in (("CPU", "cuda:0"), ("auto", None), ("GPU", "privateuseone:0"), ("auto", "meta")):
        assert webui_settings.fusion_device(webui_settings.Settings(device=choice), host) == torch.device("cpu")


@pytest.mark.ui
def test_rest_with_an_unsupported_fusion_device_setting_answers_400(folder):
    """The WebUI builds the REST context's device from its Fusion device setting."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_nplora.app.context import HostContext
    from lib_nplora.app.rest import register
    from lib_nplora.app.service import FusionService

    lora, _ = folder
    setting = webui_settings.Settings(device="xla")
    ctx = HostContext("a1111", index=lambda: DirectoryIndex(lora, printer=lambda _: None),
                      service=FusionService(Caches()),
                      device=lambda: webui_settings.fusion_device(setting, "cuda:0"))
    app = FastAPI()
    register(app, ctx)
    client = TestClient(app, base_url="http://127.0.0.1")
    for route, body in (("/nplora/v1/fuse", {"content": "dog", "style": "ink", "name": "out"}),
                        ("/nplora/v1/analyze", {"content": "dog", "style": "ink"})):
        r, error = call(client.post, route, json=body)
        assert error is None and r.status_code == 400, r.text
        assert re.match(r"device 'xla' cannot be used: [^.]+\. Use one of: auto, cpu", r.json()["detail"])
    assert not (lora / "out.safetensors").exists()


def test_good_devices_resolve():
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_device(" CPU ") == torch.device("cpu")
    assert devices.resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert devices.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert devices.resolve_device(None) == devices.resolve_device("auto")
    if torch.cuda.is_available():
        assert devices.resolve_device("cuda:0") == torch.device("cuda:0")


@hsettings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), st.from_regex(r"(cuda|mps|cpu|meta|xla)(:[0-9]{0,6})?", fullmatch=True)))
def test_any_device_text_is_a_usable_device_or_the_parameter_error(text):
    try:
        dev = devices.resolve_device(text)
    except ParameterError as e:
        assert str(e).startswith("device ") and "Use one of: auto, cpu" in str(e)
        assert str(e).isprintable()
    else:
        assert dev.type in ("cpu", "cuda", "mps")
        if dev.type == "cuda":
            assert dev.index is None or dev.index < torch.cuda.device_count()
