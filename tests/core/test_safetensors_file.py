"""Safe reading and atomic writing of .safetensors files, checked against the real library."""

import json
import os
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from lib_nplora.errors import FormatError, OutputError, OutputExistsError, UnsafeFileError
from lib_nplora.formats import safetensors_file as sf


def test_read_matches_library_and_hashes_data_section(tmp_path):
    p = tmp_path / "a.safetensors"
    tensors = {"x": torch.randn(3, 4), "y": torch.arange(6, dtype=torch.float16).reshape(2, 3),
               "z": torch.tensor(2.0, dtype=torch.bfloat16)}
    save_file(tensors, str(p), metadata={"k": "v"})
    header, got, digest = sf.read_file(p)
    assert header.metadata == {"k": "v"}
    ref = load_file(str(p))
    for k in tensors:
        assert torch.equal(got[k], ref[k]) and got[k].dtype == ref[k].dtype
    assert digest == sf.data_sha256(p)
    import hashlib
    raw = p.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    assert digest == hashlib.sha256(raw[8 + n:]).hexdigest()


@pytest.mark.parametrize("name", ["model.pt", "x.ckpt", "lora.bin", "w.pth"])
def test_pickle_names_are_refused_without_reading(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeFileError) as e:
        sf.read_file(p)
    assert name in str(e.value) and "unpickl" in str(e.value) and ".safetensors" in str(e.value)


@pytest.mark.parametrize("payload", [b"PK\x03\x04" + b"\0" * 60, b"\x80\x02}q\x00." + b"\0" * 60])
def test_pickle_payload_renamed_to_safetensors_is_refused(tmp_path, payload):
    p = tmp_path / "renamed.safetensors"
    p.write_bytes(payload)
    with pytest.raises(UnsafeFileError, match="renamed.safetensors"):
        sf.read_file(p)


def _raw(header: dict, data: bytes = b"") -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"\x01\x02", "too short"),
    (struct.pack("<Q", 10 ** 12), "over the"),
    (struct.pack("<Q", 500) + b"{}", "truncated"),
    (struct.pack("<Q", 4) + b"{{{{", "damaged header"),
    (_raw({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8), "outside the file"),
    (_raw({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, b"\0" * 16), "needs 12"),
    (_raw({"w": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "malformed"),
    (_raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
           "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12), "overlap"),
    (_raw({"__metadata__": {"a": 1}}), "map of strings"),
])
def test_broken_files_get_clear_errors(tmp_path, content, match):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(content)
    with pytest.raises(FormatError, match=match) as e:
        sf.read_file(p)
    assert str(e.value).startswith("bad.safetensors: ")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FormatError, match="not found"):
        sf.read_file(tmp_path / "nope.safetensors")
    with pytest.raises(FormatError, match="folder"):
        sf.read_file(tmp_path)


def test_write_round_trip_and_metadata(tmp_path):
    p = tmp_path / "out.safetensors"
    tensors = {"b": torch.randn(5, 2).half(), "a": torch.randn(3).to(torch.bfloat16),
               "s": torch.tensor(4.0, dtype=torch.float16)}
    digest = sf.write_file(p, tensors, {"hello": "wörld"})
    ref = load_file(str(p))
    for k, t in tensors.items():
        assert torch.equal(ref[k], t)
    from safetensors import safe_open
    with safe_open(str(p), framework="pt") as f:
        assert f.metadata() == {"hello": "wörld"}
    assert digest == sf.data_sha256(p)
    assert os.listdir(tmp_path) == ["out.safetensors"]


def test_write_never_overwrites_unless_asked(tmp_path):
    p = tmp_path / "out.safetensors"
    p.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="already exists"):
        sf.write_file(p, {"a": torch.zeros(2)})
    assert p.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["out.safetensors"]
    sf.write_file(p, {"a": torch.zeros(2)}, overwrite=True)
    assert torch.equal(load_file(str(p))["a"], torch.zeros(2))


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    p = tmp_path / "out.safetensors"

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sf.os, "fsync", boom)
    with pytest.raises(OutputError, match="No space left"):
        sf.write_file(p, {"a": torch.zeros(1000)})
    assert os.listdir(tmp_path) == []


def test_write_into_missing_folder(tmp_path):
    with pytest.raises(OutputError, match="folder does not exist"):
        sf.write_file(tmp_path / "no" / "x.safetensors", {"a": torch.zeros(1)})


@pytest.mark.parametrize("pad", range(0, 256, 8))
def test_header_length_bytes_never_look_like_a_pickle(tmp_path, pad):
    """A valid file whose header length starts with byte 0x80 (or 'PK') is still a safetensors file."""
    p = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(2)}, str(p), metadata={"pad": "x" * pad})
    header, tensors, _ = sf.read_file(p)
    assert header.metadata["pad"] == "x" * pad and torch.equal(tensors["a"], torch.zeros(2))
