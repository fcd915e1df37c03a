"""Issue 10, section 3: files are never lost.

* An output is never one of the inputs, whatever ``--force`` / ``overwrite`` say (CLI, library,
  REST through the standalone app; the tab goes through the same ``FusionService.save``).
* ``analyze --json`` writes like the fused-file writer: an existing file is kept without
  ``--force``, an input always; the temporary name is random and created exclusively (a planted
  symlink is never followed); every failure removes the temporary file.
* A killed writer's temporary file is not listed and is removed by a later write; a 255-byte
  output name works; files get the umask's mode.
* A LoRA replaced by one of the same size with its mtime set back is read again (new fusion,
  new hash), whether it was replaced by rename (new inode) or rewritten in place (new ctime).

Everything runs on real files, the real CLI entry point, a real FastAPI app (standalone
``create_app``) through its test client.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file

import lora_factory as F
from lib_nplora.cache import Caches
from lib_nplora.cli import main
from lib_nplora.errors import OutputError, OutputExistsError, OutputIsInputError
from lib_nplora.formats import atomic
from lib_nplora.formats.reader import load_lora
from lib_nplora.params import FuseParams

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3600


def _rows():
    return F.select("sdxl", "attn", ("unet", "te1"), blocks=("input_blocks.4.1.", "layers.0."))


@pytest.fixture
def pair(tmp_path):
    c = F.make_lora(tmp_path / "dog.safetensors", "sdxl", _rows(), rank=4, seed=1)
    s = F.make_lora(tmp_path / "ink.safetensors", "sdxl", _rows(), rank=8, seed=2)
    return Path(c.path), Path(s.path)


def _temps(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".tmp") or atomic.is_temp_name(n))


def _last_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("nplora: error: "), lines
    return lines[-1]


# --------------------------------------------------------------------------- output is an input
@pytest.mark.parametrize("how", ["itself", "hard link", "symlink", "other spelling"])
def test_cli_fuse_onto_the_content_lora_with_force_is_refused(pair, tmp_path, capsys, how):
    c, s = pair
    before = c.read_bytes()
    out = {"itself": c, "hard link": tmp_path / "dog link.safetensors",
           "symlink": tmp_path / "dog sym.safetensors",
           "other spelling": tmp_path / "sub" / ".." / "dog.safetensors"}[how]
    if how == "hard link":
        os.link(c, out)
    elif how == "symlink":
        os.symlink(c, out)
    elif how == "other spelling":
        (tmp_path / "sub").mkdir()
    assert main(["fuse", str(c), str(s), "-o", str(out), "--force"]) == 1
    err = _last_error(capsys)
    assert out.name in err and "content LoRA" in err and "dog.safetensors" in err
    assert "another name" in err
    assert c.read_bytes() == before and not _temps(tmp_path)
    if how in ("hard link", "symlink"):
        assert out.read_bytes() == before  # the link is kept too
    if how == "symlink":
        assert out.is_symlink()


def test_cli_fuse_onto_the_style_lora_is_refused(pair, tmp_path, capsys):
    c, s = pair
    before = s.read_bytes()
    assert main(["fuse", str(c), str(s), "-o", str(s), "--force"]) == 1
    assert "style LoRA" in _last_error(capsys)
    assert s.read_bytes() == before


def test_library_refuses_an_input_as_output_whatever_overwrite_says(pair, tmp_path):
    from lib_nplora.api import fuse_files, load_pair
    from lib_nplora.formats.writer import save_fused
    from lib_nplora.fusion.merge import fuse

    c, s = pair
    before = c.read_bytes()
    with pytest.raises(OutputIsInputError, match="dog.safetensors"):
        fuse_files(c, s, c, overwrite=True, device="cpu")
    # save_fused knows its inputs from the fusion result itself
    content, style = load_pair(c, s)
    fused = fuse(content, style, FuseParams())
    os.link(s, tmp_path / "ink2.safetensors")
    for target in (c, tmp_path / "ink2.safetensors"):
        with pytest.raises(OutputIsInputError):
            save_fused(fused, target, overwrite=True)
    assert c.read_bytes() == before
    # a different existing file may be overwritten when asked
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"old")
    save_fused(fused, other, overwrite=True)
    assert load_lora(other).arch == "sdxl"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(["./", "sub/../", "alias/", "", "/"]), max_size=4),
       absolute=st.booleans())
def test_any_spelling_of_an_input_is_an_input(tmp_path_factory, parts, absolute):
    folder = tmp_path_factory.getbasetemp() / "spellings"
    if not folder.exists():
        folder.mkdir()
        (folder / "sub").mkdir()
        os.symlink(folder, folder / "alias")  # a symlinked folder
        (folder / "dog.safetensors").write_bytes(b"precious")
    rel = "".join(parts) + "dog.safetensors"
    spelled = f"{folder}/{rel}"  # "//", "./", "sub/../", a symlinked folder...
    if not absolute:
        spelled = os.path.relpath(folder) + "/" + rel
    with pytest.raises(OutputIsInputError):
        atomic.check_output(spelled, inputs=[("content LoRA", folder / "dog.safetensors")], overwrite=True)
    assert (folder / "dog.safetensors").read_bytes() == b"precious"


@pytest.fixture
def rest(tmp_path):
    from fastapi.testclient import TestClient

    from lib_nplora.app.standalone import create_app

    F.make_lora(tmp_path / "dog.safetensors", "sdxl", _rows(), rank=4, seed=1)
    F.make_lora(tmp_path / "ink.safetensors", "sdxl", _rows(), rank=8, seed=2,
                metadata={"ss_output_name": "Ink Wash"})
    app, _ = create_app(tmp_path)
    # Host 127.0.0.1: the standalone server's own name (a DNS-rebinding guard refuses others)
    return TestClient(app, base_url="http://127.0.0.1:7870"), tmp_path


@pytest.mark.ui
@pytest.mark.parametrize("name,link", [("dog", None), ("ink", None),
                                       ("dog hard", "hard"), ("dog soft", "sym")])
def test_rest_fuse_onto_an_input_with_overwrite_is_refused(rest, name, link):
    client, folder = rest
    target = folder / f"{name}.safetensors"
    if link == "hard":
        os.link(folder / "dog.safetensors", target)
    elif link == "sym":
        os.symlink(folder / "dog.safetensors", target)
    before = {p.name: p.read_bytes() for p in folder.glob("*.safetensors")}
    r = client.post("/nplora/v1/fuse", json={"content": "dog", "style": "Ink Wash", "name": name,
                                             "overwrite": True})
    assert 400 <= r.status_code < 500, r.text
    detail = r.json()["detail"]
    assert "LoRA" in detail and "another name" in detail and "would destroy it" in detail
    assert {p.name: p.read_bytes() for p in folder.glob("*.safetensors")} == before
    assert not _temps(folder)
    # an ordinary name still works, and overwriting a previous fusion stays allowed
    for _ in range(2):
        r = client.post("/nplora/v1/fuse", json={"content": "dog", "style": "ink", "name": "dog in ink",
                                                 "overwrite": True})
        assert r.status_code == 200, r.text


# --------------------------------------------------------------------------- analyze --json
def test_analyze_json_keeps_an_existing_file_without_force(pair, tmp_path, capsys):
    c, s = pair
    report = tmp_path / "report.json"
    report.write_text("keep me")
    assert main(["analyze", str(c), str(s), "--json", str(report)]) == 1
    err = _last_error(capsys)
    assert "report.json: already exists" in err and "--force" in err
    assert report.read_text() == "keep me"
    assert main(["analyze", str(c), str(s), "--json", str(report), "--force"]) == 0
    assert json.loads(report.read_text())["modules"]
    assert not _temps(tmp_path)


@pytest.mark.parametrize("force", [False, True])
def test_analyze_json_never_writes_onto_an_input(pair, tmp_path, capsys, force):
    c, s = pair
    before = c.read_bytes(), s.read_bytes()
    os.symlink(s, tmp_path / "style.json")
    for target in (c, tmp_path / "style.json"):
        assert main(["analyze", str(c), str(s), "--json", str(target)] + ["--force"] * force) == 1
        assert "LoRA" in _last_error(capsys)
    assert (c.read_bytes(), s.read_bytes()) == before and not _temps(tmp_path)


def test_analyze_json_never_follows_a_planted_symlink(pair, tmp_path, monkeypatch, capsys):
    c, s = pair
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    report = tmp_path / "report.json"
    # every name an old or naive writer would use
    planted = [report.name + ".tmp", "." + report.name + ".tmp", report.name + "~", "report.tmp"]
    # and the very name our writer draws first: it must refuse it and draw another
    drawn = iter(["0" * 16, "0" * 16, "1" * 16])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(drawn))
    planted.append(".nplora-" + "0" * 16 + ".tmp")
    for name in planted:
        os.symlink(victim, tmp_path / name)
    os.utime(tmp_path / planted[-1], (time.time() - 5 * HOUR,) * 2, follow_symlinks=False)
    assert main(["analyze", str(c), str(s), "--json", str(report)]) == 0
    assert victim.read_text() == "precious"
    assert json.loads(report.read_text())["modules"] and not report.is_symlink()
    for name in planted:  # left alone, not followed, not removed
        assert (tmp_path / name).is_symlink() and os.readlink(tmp_path / name) == str(victim)


def test_a_failing_write_leaves_no_temporary_file(pair, tmp_path, monkeypatch, capsys):
    c, s = pair

    def disk_full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", disk_full)
    assert main(["analyze", str(c), str(s), "--json", str(tmp_path / "report.json")]) == 1
    err = _last_error(capsys)
    assert "report.json: cannot be written (No space left on device)" in err
    assert main(["fuse", str(c), str(s), "-o", str(tmp_path / "out.safetensors")]) == 1
    assert "out.safetensors: cannot be written (No space left on device)" in _last_error(capsys)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["dog.safetensors", "ink.safetensors"]


def test_a_failure_while_producing_the_content_leaves_no_temporary_file(tmp_path):
    def chunks():
        yield b"half"
        raise RuntimeError("the fusion broke")

    with pytest.raises(RuntimeError):
        atomic.atomic_write(tmp_path / "o.bin", chunks())

    def refuse(tmp):
        raise OutputError("was written but does not read back", path=tmp_path / "o.bin")

    with pytest.raises(OutputError, match="does not read back"):
        atomic.atomic_write(tmp_path / "o.bin", [b"x"], verify=refuse)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("force", [False, True])
def test_a_folder_as_target_is_an_error_and_leaves_nothing(pair, tmp_path, capsys, force):
    c, s = pair
    target = tmp_path / "reports"
    target.mkdir()
    assert main(["analyze", str(c), str(s), "--json", str(target)] + ["--force"] * force) == 1
    assert "reports: is a folder" in _last_error(capsys)
    assert main(["fuse", str(c), str(s), "-o", str(target)] + ["--force"] * force) == 1
    assert "reports: is a folder" in _last_error(capsys)
    assert target.is_dir() and os.listdir(target) == [] and not _temps(tmp_path)


def test_a_folder_appearing_during_the_write_leaves_nothing(tmp_path):
    target = tmp_path / "late"
    for overwrite in (False, True):
        def chunks():
            yield b"data"
            target.mkdir()  # the name is taken by a folder while we write

        with pytest.raises((OutputError, OutputExistsError)):
            atomic.atomic_write(target, chunks(), overwrite=overwrite)
        assert target.is_dir() and os.listdir(target) == [] and not _temps(tmp_path)
        target.rmdir()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.sampled_from([0, 1, 4, 1000, (1 << 16) - 1, 1 << 16, 70_000]), max_size=12))
def test_what_is_written_is_exactly_the_chunks_in_order(tmp_path_factory, sizes):
    folder = tmp_path_factory.mktemp("chunks")
    chunks = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    atomic.atomic_write(folder / "o.bin", iter(chunks))
    assert (folder / "o.bin").read_bytes() == b"".join(chunks) and os.listdir(folder) == ["o.bin"]


# --------------------------------------------------------------------------- left-overs, names, modes
_KILLED_WRITER = r"""
import os, signal, sys
from lib_nplora.formats.atomic import atomic_write
def chunks():
    yield open(sys.argv[2], "rb").read()
    os.kill(os.getpid(), signal.SIGKILL)  # killed mid-write
atomic_write(sys.argv[1], chunks())
"""


def test_a_killed_writers_temporary_file_is_not_listed_and_is_removed_later(pair, tmp_path):
    from lib_nplora.app.index import DirectoryIndex

    c, s = pair
    r = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(tmp_path / "fused.safetensors"), str(c)],
                       cwd=ROOT, capture_output=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr
    left = [n for n in os.listdir(tmp_path) if atomic.is_temp_name(n)]
    assert len(left) == 1 and not (tmp_path / "fused.safetensors").exists()
    stale = tmp_path / left[0]
    assert stale.read_bytes() == c.read_bytes()  # a whole LoRA's bytes, under our temp name
    # a fresh one (a writer still at work) and a symlink with our name, both old-looking or not
    fresh = tmp_path / (".nplora-" + "a" * 16 + ".tmp")
    fresh.write_bytes(b"still being written")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    trap = tmp_path / (".nplora-" + "b" * 16 + ".tmp")
    os.symlink(victim, trap)
    lookalike = tmp_path / ".nplora-notours.tmp"
    lookalike.write_text("not ours")
    old = time.time() - 2 * HOUR
    for p in (stale, lookalike):
        os.utime(p, (old, old))
    os.utime(victim, (old, old))
    os.utime(trap, (old, old), follow_symlinks=False)

    index = DirectoryIndex(tmp_path)
    assert index.names() == ["dog", "ink"]
    # the next write into the folder removes the stale one only
    assert main(["fuse", str(c), str(s), "-o", str(tmp_path / "fused.safetensors")]) == 0
    assert not stale.exists() and fresh.exists() and trap.is_symlink() and lookalike.exists()
    assert victim.read_text() == "precious"
    index.refresh()
    assert index.names() == ["dog", "fused", "ink"]


def test_a_255_byte_output_name_works(pair, tmp_path):
    c, s = pair
    out = tmp_path / ("é" * 10 + "n" * (255 - 20 - len(".safetensors")) + ".safetensors")
    assert len(out.name.encode()) == 255
    assert main(["fuse", str(c), str(s), "-o", str(out)]) == 0
    assert load_lora(out).arch == "sdxl"
    report = tmp_path / ("r" * 250 + ".json")
    assert main(["analyze", str(c), str(s), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["modules"] and not _temps(tmp_path)


def test_impossible_output_names_are_clear_errors(pair, tmp_path, capsys):
    c, s = pair
    (tmp_path / "afile").write_text("x")
    for out, words in ((tmp_path / ("n" * 300 + ".json"), "cannot be written (File name too long)"),
                       (tmp_path / "afile" / "o.json", "its folder does not exist"),
                       (tmp_path / "nofolder" / "o.json", "its folder does not exist")):
        assert main(["analyze", str(c), str(s), "--json", str(out), "--force"]) == 1
        assert words in _last_error(capsys)
        assert main(["fuse", str(c), str(s), "-o", str(out).replace(".json", ".safetensors")]) == 1
        assert words in _last_error(capsys)
    assert (tmp_path / "afile").read_text() == "x" and not _temps(tmp_path)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_mode_the_umask_gives(pair, tmp_path, umask, mode):
    c, s = pair
    old = os.umask(umask)
    try:
        assert atomic.current_umask() == umask
        assert main(["fuse", str(c), str(s), "-o", str(tmp_path / "o.safetensors")]) == 0
        assert main(["analyze", str(c), str(s), "--json", str(tmp_path / "o.json")]) == 0
    finally:
        os.umask(old)
    for name in ("o.safetensors", "o.json"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode, name


# --------------------------------------------------------------------------- stale cache
def _replace_keeping_size_and_times(path: Path, seed: int, in_place: bool) -> None:
    """Put a LoRA with other numbers but the same size at ``path``, then set its times back."""
    st0 = os.stat(path)
    new = path.with_name("new.tmpfile")
    F.make_lora(new, "sdxl", _rows(), rank=4, seed=seed)
    assert new.stat().st_size == st0.st_size and new.read_bytes() != path.read_bytes()
    if in_place:  # same inode: only the ctime tells
        with open(path, "r+b") as f:
            f.write(new.read_bytes())
        new.unlink()
    else:  # a new inode
        os.replace(new, path)
    for _ in range(1000):  # the ctime moves on with the next timestamp tick
        os.utime(path, ns=(st0.st_atime_ns, st0.st_mtime_ns))
        if os.stat(path).st_ctime_ns != st0.st_ctime_ns:
            break
        time.sleep(0.005)
    st1 = os.stat(path)
    assert (st1.st_size, st1.st_mtime_ns) == (st0.st_size, st0.st_mtime_ns)
    assert (st1.st_ino == st0.st_ino) == in_place and st1.st_ctime_ns != st0.st_ctime_ns


@pytest.mark.parametrize("in_place", [True, False])
def test_the_cache_reads_a_replaced_file_of_the_same_size_and_mtime_again(pair, in_place):
    c, _ = pair
    caches = Caches()
    first = caches.load(c)
    _replace_keeping_size_and_times(c, seed=7, in_place=in_place)
    again = caches.load(c)
    assert again.sha256 == load_lora(c).sha256 != first.sha256


@pytest.mark.ui
@pytest.mark.parametrize("in_place", [True, False])
def test_rest_fuses_the_new_content_after_a_same_size_same_mtime_replacement(rest, in_place):
    client, folder = rest
    dog = folder / "dog.safetensors"
    body = {"content": "dog", "style": "ink", "mu": 1.0}
    r = client.post("/nplora/v1/fuse", json={**body, "name": "before"})
    assert r.status_code == 200, r.text
    old_hash = json.loads(r.json()["metadata"]["nplora"])["content"]["sha256"]
    assert old_hash == load_lora(dog).sha256
    _replace_keeping_size_and_times(dog, seed=11, in_place=in_place)
    r = client.post("/nplora/v1/fuse", json={**body, "name": "after"})
    assert r.status_code == 200, r.text
    new_hash = json.loads(r.json()["metadata"]["nplora"])["content"]["sha256"]
    assert new_hash == load_lora(dog).sha256 != old_hash  # an uncached read of the new file
    a, b = load_file(str(folder / "before.safetensors")), load_file(str(folder / "after.safetensors"))
    assert a.keys() == b.keys() and any(not (a[k] == b[k]).all() for k in a)
    with safe_open(str(folder / "after.safetensors"), "pt") as f:
        assert f.metadata()["modelspec.merged_from"].startswith("dog")


def test_file_version_changes_with_inode_and_ctime(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"a" * 10)
    st0 = os.stat(p)
    v0 = atomic.file_version(st0)
    for _ in range(1000):
        os.utime(p, ns=(st0.st_atime_ns, st0.st_mtime_ns))
        if atomic.file_version(os.stat(p)) != v0:
            break
        time.sleep(0.005)
    assert atomic.file_version(os.stat(p)) != v0  # only the ctime moved
    assert list(itertools.islice(atomic.file_version(os.stat(p)), 3)) == [st0.st_dev, st0.st_ino, 10]
