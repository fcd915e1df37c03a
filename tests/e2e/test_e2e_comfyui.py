"""End-to-end against a real ComfyUI: this checkout as a custom node pack, driven over ComfyUI's
HTTP API (``/prompt``, ``/history``, ``/view``, ``/object_info``) on CPU, offline, 127.0.0.1 only.

Environment (skips cleanly without):

* ``NPLORA_COMFYUI``: a ComfyUI checkout (the folder with ``main.py``), prepared with
  ``tools/e2e-hosts/prepare_comfyui.py`` (the random-weight SD1.5 checkpoint in the real layout).
* ``NPLORA_COMFYUI_PYTHON``: the Python of ComfyUI's environment.
* ``NPLORA_COMFYUI_START_TIMEOUT``: seconds to wait for the server (default 600).

ComfyUI runs with ``--base-directory`` in a temporary folder: its ``custom_nodes/`` holds a link to
this checkout, ``models/loras`` the test LoRAs, ``models/checkpoints`` a link to the checkpoint.
``--cache-none`` makes every queued prompt execute every node (so a second base run really samples
the unpatched model again, and a second Save really tries to write).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from e2e_loras import NAMES, write_loras
from e2e_server import ROOT, _free_port, report

CKPT = "nplora-random-sd15.safetensors"
C, S = NAMES["content"] + ".safetensors", NAMES["style"] + ".safetensors"
C2, S2 = NAMES["content2"] + ".safetensors", NAMES["style2"] + ".safetensors"
WRONG_C, WRONG_S = "nplora_e2e_sdxl_content.safetensors", "nplora_e2e_sdxl_style.safetensors"


def _folders(checkpoint: bool = True) -> tuple[Path, Path]:
    """The ComfyUI checkout and its Python (skips without); ``checkpoint``: the prepared SD1.5 one
    must be there too."""
    folder, python = os.environ.get("NPLORA_COMFYUI"), os.environ.get("NPLORA_COMFYUI_PYTHON")
    if not folder or not python:
        pytest.skip("NPLORA_COMFYUI and NPLORA_COMFYUI_PYTHON are not set: no real ComfyUI to test against")
    folder = Path(folder)
    if not (folder / "main.py").is_file() or not (folder / "comfy").is_dir():
        pytest.skip(f"NPLORA_COMFYUI={folder} is not a ComfyUI checkout (no main.py / comfy/)")
    if checkpoint and not (folder / "models" / "checkpoints" / CKPT).is_file():
        pytest.skip(f"no {CKPT} in {folder}/models/checkpoints: run tools/e2e-hosts/prepare_comfyui.py")
    return folder, Path(python)


class ComfyUI:
    def __init__(self, folder: Path, python: Path, base: Path):
        self.folder, self.python, self.base = folder, python, base
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "comfyui.log"
        self.loras = base / "models" / "loras"

    def start(self) -> None:
        (self.base / "custom_nodes").mkdir(parents=True)
        (self.base / "custom_nodes" / "nplora").symlink_to(ROOT, target_is_directory=True)
        (self.base / "models" / "checkpoints").mkdir(parents=True)
        (self.base / "models" / "checkpoints" / CKPT).symlink_to(self.folder / "models" / "checkpoints" / CKPT)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS=os.environ.get(
            "OMP_NUM_THREADS", "2"), PYTHONUNBUFFERED="1")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [str(self.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
             "--base-directory", str(self.base), "--database-url", "sqlite:///:memory:", "--cache-none",
             "--disable-auto-launch"],
            cwd=self.folder, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + float(os.environ.get("NPLORA_COMFYUI_START_TIMEOUT", "600"))
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({self.proc.returncode}):\n{self.console()[-3000:]}")
            try:
                self.get("/system_stats")
                return
            except OSError:
                time.sleep(1)
        raise RuntimeError(f"ComfyUI did not answer in time:\n{self.console()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def console(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return r.read()

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def run(self, graph: dict, timeout: float = 900) -> dict:
        """Queue ``graph`` and wait for its history entry."""
        status, body = self.post("/prompt", {"prompt": graph, "client_id": uuid.uuid4().hex})
        assert status == 200, body
        pid = body["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hist = json.loads(self.get(f"/history/{pid}"))
            if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
                entry = hist[pid]
                if entry["status"]["status_str"] in ("success", "error"):
                    return entry
            time.sleep(0.5)
        raise TimeoutError(f"prompt {pid} did not finish")

    def image(self, entry: dict, node: str = "save") -> np.ndarray:
        from PIL import Image

        assert entry["status"]["status_str"] == "success", entry["status"]
        info = entry["outputs"][node]["images"][0]
        q = urllib.parse.urlencode({"filename": info["filename"], "subfolder": info["subfolder"],
                                    "type": info["type"]})
        return np.asarray(Image.open(io.BytesIO(self.get(f"/view?{q}"))).convert("RGB"), dtype=np.int16)


def graph(loras: list[dict] | None = None, seed: int = 7, prefix: str = "e2e") -> dict:
    """txt2img at 64x64, 2 steps, with ``loras`` chained between the checkpoint and the sampler:
    each {"class": ..., **inputs} gets model/clip from the previous one."""
    g = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}}}
    model, clip = ["ckpt", 0], ["ckpt", 1]
    for i, spec in enumerate(loras or []):
        spec = dict(spec)
        cls = spec.pop("class")
        g[f"lora{i}"] = {"class_type": cls, "inputs": dict(spec, model=model, clip=clip)}
        model, clip = [f"lora{i}", 0], [f"lora{i}", 1]
    g.update({
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a dog", "clip": clip}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {"model": model, "positive": ["pos", 0], "negative": ["neg", 0],
                                                       "latent_image": ["latent", 0], "seed": seed, "steps": 2,
                                                       "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
                                                       "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    })
    return g


def nplora(content=C, style=S, mu=0.5, **kw) -> dict:
    base = dict(content=content, style=style, content_weight=1.0, style_weight=1.0, mu=mu, hard=False, k=0,
                scope="unet", method="nplora")
    return dict(base, **kw, **{"class": "NpLoraLoader"})


def stock(name: str, w: float = 1.0) -> dict:
    return {"class": "LoraLoader", "lora_name": name, "strength_model": w, "strength_clip": w}


def _wrong_model_pair(folder: Path) -> None:
    import lora_factory as lf

    rows = lf.select("sdxl", "attn", components=("unet",), blocks=("input_blocks.7.1.transformer_blocks.3.",))
    for name, seed in ((WRONG_C, 21), (WRONG_S, 22)):
        lf.make_lora(folder / name, "sdxl", rows, rank=4, alpha=1.0, seed=seed, dtype=torch.float16)


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory):
    folder, python = _folders()
    host = ComfyUI(folder, python, tmp_path_factory.mktemp("comfyui-base"))
    write_loras(host.loras)
    _wrong_model_pair(host.loras)
    commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True)
    report(f"ComfyUI {folder} {commit.stdout.strip() or '(not a git checkout)'}")
    host.start()
    yield host
    host.stop()


@pytest.fixture(scope="module")
def shots(comfyui):
    """The images several tests compare, each rendered once."""
    out = {"base": comfyui.image(comfyui.run(graph(prefix="base")))}
    out["stacked"] = comfyui.image(comfyui.run(graph([stock(C), stock(S)], prefix="stacked")))
    out["mu0"] = comfyui.image(comfyui.run(graph([nplora(mu=0.0)], prefix="mu0")))
    out["mu05"] = comfyui.image(comfyui.run(graph([nplora(mu=0.5)], prefix="mu05")))
    out["base_again"] = comfyui.image(comfyui.run(graph(prefix="base_again")))
    return out


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def test_installing_the_requirements_into_comfyui_changes_nothing():
    """What ComfyUI-Manager would run (``pip install`` of requirements.txt) is already satisfied by the
    real ComfyUI environment: nothing would be installed or replaced (torch least of all)."""
    folder, python = _folders()
    ours = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    theirs = (folder / "requirements.txt").read_text().lower()
    for line in filter(None, ours):
        assert re.match(r"[a-z0-9_.-]+", line.lower()).group(0) in theirs, line
    out = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "--no-index", "--no-deps", "-r",
                          str(ROOT / "requirements.txt")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Would install" not in out.stdout and "Requirement already satisfied" in out.stdout


def test_comfyuis_real_key_maps_get_every_module_patched(tmp_path):
    """``comfyui_keymaps.py`` in ComfyUI's Python: ComfyUI's own SD1.5, SDXL, FLUX.1, Chroma and
    Qwen-Image models (meta tensors) and key maps, LoRAs on every module NP-LoRA's tables list, in
    kohya names, diffusers names (fused weights as parts) and the file NP-LoRA writes: the model
    type is detected, ComfyUI loads every file key, every patch lands on a model weight with
    factors of its shape, every projected module is carried (none missed), and FLUX's / Chroma's
    fused qkv and linear1 are patched on row slices that tile each weight exactly."""
    folder, python = _folders()
    rows = _keymap_rows(folder, python, tmp_path, "more")
    assert [_case(r) for r in rows] == list(KEYMAP_CASES + MORE_KEYMAP_CASES + VARIANT_KEYMAP_CASES)
    _check_keymap_rows(rows)
    _check_more_rows(rows)


#: the rows ``comfyui_keymaps.py`` prints for the models every tested ComfyUI has
KEYMAP_CASES = (("sd1", "kohya"), ("sdxl", "kohya"), ("flux", "kohya"), ("flux", "peft"), ("chroma", "kohya"),
                ("chroma", "peft"), ("chroma", "written"), ("qwenimage", "kohya"), ("qwenimage", "peft"),
                ("qwenimage", "written"))
#: with ``more``: the DiTs both tested ComfyUIs have configs for, then their variants
MORE_KEYMAP_CASES = tuple((arch, fmt) for arch in ("lumina2", "wan14b", "wan5b", "wan1b", "hidream", "sd35l", "sd35m")
                          for fmt in ("kohya", "ldm", "peft", "ldm-peft", "written"))
VARIANT_KEYMAP_CASES = tuple((arch, "kohya", v) for arch, v in (
    ("wan14b", "t2v"), ("wan14b", "i2v-a14b"), ("wan14b", "vace"), ("wan14b", "camera"), ("wan14b", "s2v"),
    ("wan14b", "humo"), ("wan14b", "animate"), ("wan1b", "vace"), ("wan1b", "i2v"), ("sd35m", "sd3-medium")))
#: the ComfyUI config class each is built as
MORE_CONFIG = {"lumina2": "Lumina2", "wan14b": "WAN21_I2V", "wan5b": "WAN22_T2V", "wan1b": "WAN21_T2V",
               "hidream": "HiDream", "sd35l": "SD3", "sd35m": "SD3", ("wan14b", "t2v"): "WAN21_T2V",
               ("wan14b", "i2v-a14b"): "WAN21_T2V", ("wan14b", "vace"): "WAN21_Vace",
               ("wan14b", "camera"): "WAN21_Camera", ("wan14b", "s2v"): "WAN22_S2V", ("wan14b", "humo"): "WAN21_HuMo",
               ("wan14b", "animate"): "WAN22_Animate", ("wan1b", "vace"): "WAN21_Vace", ("wan1b", "i2v"): "WAN21_I2V",
               ("sd35m", "sd3-medium"): "SD3"}
#: the variants' own 2-D weights (no table) by their first name (block numbers ``N``)
VARIANT_EXTRA = {"vace": ("vace_blocks.", "vace_patch_embedding"), "camera": ("control_adapter.",),
                 "s2v": ("audio_injector.", "casual_audio_encoder.", "cond_encoder", "frame_packer.",
                         "trainable_cond_mask"),
                 "humo": ("audio_proj.", "blocks.N.audio_cross_attn_wrapper."),
                 "animate": ("face_adapter.", "face_encoder.", "motion_encoder.", "pose_patch_embedding"),
                 "i2v": ("blocks.N.cross_attn.k_img", "blocks.N.cross_attn.v_img", "img_emb.")}
#: and with ``dits``, for a ComfyUI with Z-Image and FLUX.2 configs
DIT_KEYMAP_CASES = tuple((arch, fmt) for arch in ("zimage", "flux2", "flux2klein4b", "flux2klein9b")
                         for fmt in ("kohya", "ldm", "peft", "ldm-peft", "written"))


def _keymap_rows(folder: Path, python: Path, tmp_path: Path, *extra: str) -> list[dict]:
    out = subprocess.run([str(python), str(ROOT / "tests" / "e2e" / "comfyui_keymaps.py"), str(ROOT), str(tmp_path),
                          *extra], cwd=folder, capture_output=True, text=True, timeout=1800,
                         env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2")))
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _case(row: dict) -> tuple:
    return (row["arch"], row["format"]) + ((row["variant"],) if row.get("variant") else ())


def _check_keymap_rows(rows: list[dict], label: str = "ComfyUI") -> None:
    for r in rows:
        if r["modules"] == 0 or r.get("variant"):  # no weight mapped / a variant: checked by the caller
            continue
        assert r["detected"] == r["arch"], r
        assert r["missed"] == [] and r["not_loaded"] == [] and r["off_model"] == [] and r["untiled"] == [], r
        assert r["misshaped"] == [], r
        assert r["projected"] == r["to_project"] == r["canonical"] > 0, r
        split = r["format"] in ("peft", "ldm-peft")
        assert r["patched_weights"] == r["style_weights"] == r["modules"] == r["file_modules"] > 0 \
            or split and r["patched_weights"] == r["style_weights"] == r["modules"] > 0, r
        # every table module in kohya naming and in the written file (only diffusers names may lack a map)
        assert r["host_unmapped"] == 0 or split, r
        report(f"{label} key map {r['arch']} ({r['format']}): {r['modules']} table modules "
               f"({r['file_modules']} in the file), {r['canonical']} projected, {r['patched_weights']} weights patched ({r['slices']} row slices of "
               f"{r['sliced_weights']} fused weights), none left out"
               + (f"; {r['host_unmapped']} diffusers-named modules ComfyUI maps to no weight" if r["host_unmapped"]
                  else ""))
    by = {(r["arch"], r["format"]): r for r in rows}
    for arch in ("flux", "chroma"):  # 19 double blocks x 2 qkv x 3 parts + 38 linear1 x 4 parts
        for fmt in ("kohya", "peft") + (("written",) if arch == "chroma" else ()):
            assert by[arch, fmt]["slices"] >= 266 and by[arch, fmt]["sliced_weights"] >= 76, by[arch, fmt]
    assert by["qwenimage", "kohya"]["modules"] == 846 and by["chroma", "kohya"]["modules"] == 243


def _check_more_rows(rows: list[dict], label: str = "ComfyUI") -> None:
    """Lumina 2, Wan 14B / 5B / 1.3B, HiDream, SD3.5 Large / Medium as ComfyUI's detection builds
    them: its config class, the table's weights in its class with their shapes (the class's
    others: Wan's Conv3d ``patch_embedding``, HiDream's router gates, no LoRA targets), NP-LoRA's
    arch; the kohya, ComfyUI-dotted and written files fully mapped; which diffusers names ComfyUI
    maps (all for HiDream and SD3.5 under ``transformer.``; none for Wan, none for Lumina 2 but
    the one whose diffusers path is its own); the variants: the table's modules of each (the
    I2V-only ones left out where the variant has no image input) load with every key used, their
    own modules are the only class weights beyond the table; SD3 Medium (3.0) is refused naming the
    shapes its blocks 0-12 modulation differs in, the only table weights that differ."""
    for r in rows:
        if r["arch"] not in ("lumina2", "wan14b", "wan5b", "wan1b", "hidream", "sd35l", "sd35m"):
            continue
        arch, fmt, variant = r["arch"], r["format"], r.get("variant")
        assert "error" not in r, r
        if r["modules"] == 0:  # a diffusers naming ComfyUI maps to no weight of the model at all
            assert fmt in ("peft", "ldm-peft") and arch in ("lumina2", "wan14b", "wan5b", "wan1b"), r
            report(f"{label} key map {arch} ({fmt}): none of the {r['host_unmapped']} diffusers-named modules "
                   f"mapped (e.g. {r['unmapped_example']})")
            continue
        assert r["comfy_config"] == MORE_CONFIG[(arch, variant) if variant else arch], r
        allowed = {"patch_embedding"} if arch.startswith("wan") else \
            {"double_stream_blocks.N.block.ff_i.gate", "single_stream_blocks.N.block.ff_i.gate"} if arch == "hidream" \
            else set()
        own = VARIANT_EXTRA.get(variant, ())
        assert all(k in allowed or k.startswith(own) for k in r["extra_kinds"]), r
        assert all(any(k.startswith(p) for k in r["extra_kinds"]) for p in own), r
        if variant == "sd3-medium":
            assert r["detected"].startswith("refused: ") and "SD3 Medium (3.0)" in r["detected"], r
            assert r["layout_bad"] == sorted(f"joint_blocks.{i}.x_block.adaLN_modulation.1" for i in range(13)), r
            assert r["not_loaded"] == [] and len(r["misshaped"]) > 0, r
            report(f"{label} key map SD3 Medium (3.0): refused; its blocks 0-12 x_block modulation (9216 rows) "
                   f"is not the sd35m table's (13824); the other {r['modules'] - 13} table modules fit and map")
            continue
        assert r["detected"] == arch and r["layout_bad"] == [], r
        assert r["missed"] == [] and r["not_loaded"] == [] and r["off_model"] == [] and r["untiled"] == [], r
        assert r["misshaped"] == [] and r["projected"] == r["to_project"] == r["canonical"] > 0, r
        assert r["patched_weights"] == r["style_weights"] == r["modules"] > 0, r
        if fmt in ("kohya", "ldm", "written") or variant:
            assert r["host_unmapped"] == 0 and r["modules"] == r["file_modules"] == r["layout_weights"], r
        if fmt == "peft" or arch == "hidream":
            assert r["host_unmapped"] == 0 and arch in ("hidream", "sd35l", "sd35m"), r
        elif fmt == "ldm-peft":  # only a module whose diffusers path is the original one
            assert r["modules"] == 1 and r["host_unmapped"] > 0, r
        report(f"{label} key map {arch}{f' {variant}' if variant else ''} ({fmt}): {r['comfy_config']}, "
               f"{r['modules']} table modules, {r['patched_weights']} weights patched ({r['slices']} row slices)"
               + (f"; {r['host_unmapped']} diffusers-named modules ComfyUI maps to no weight" if r["host_unmapped"]
                  else "") + (f"; the variant's own: {', '.join(own)}" if own else ""))
    by = {_case(r): r for r in rows}
    # fused qkv as parts: Lumina 2 30 x 3; SD3.5 Large 38 x 2 x 3, Medium 24 x 2 x 3 + 13 x 3
    for arch, slices in (("lumina2", 90), ("sd35l", 228), ("sd35m", 183)):
        assert by[arch, "written"]["slices"] == by[arch, "kohya"]["slices"] == slices, by[arch, "written"]


def _newer_comfyui() -> tuple[Path, Path]:
    """The ComfyUI with Z-Image and FLUX.2 configs and its Python (``NPLORA_COMFYUI_NEW``,
    ``NPLORA_COMFYUI_NEW_PYTHON``; skips without)."""
    folder, python = os.environ.get("NPLORA_COMFYUI_NEW"), os.environ.get("NPLORA_COMFYUI_NEW_PYTHON")
    if not folder or not python:
        pytest.skip("NPLORA_COMFYUI_NEW and NPLORA_COMFYUI_NEW_PYTHON are not set: no newer ComfyUI to test against")
    folder, python = Path(folder), Path(python)
    models_py = folder / "comfy" / "supported_models.py"
    if not models_py.is_file() or not python.exists():
        pytest.skip(f"NPLORA_COMFYUI_NEW={folder} is not a ComfyUI checkout, or no Python at {python}")
    if not all(c in models_py.read_text() for c in ("class ZImage(", "class Flux2(")):
        pytest.skip(f"the ComfyUI at {folder} has no Z-Image / FLUX.2 model config")
    return folder, python


#: what ComfyUI's own FLUX.2 model says of a klein config in a revision from before klein (3cd7b32f,
#: 2026-01-07: its detection fixes dev's 48 heads and 4 x 32 rope axes)
KLEIN_UNSUPPORTED = ("expected positional dim", "must be divisible by num_heads")


def test_a_newer_comfyuis_dit_models_load_every_module_of_the_files(tmp_path):
    """The same in a ComfyUI with Z-Image and FLUX.2 configs (``NPLORA_COMFYUI_NEW``, a checkout,
    and ``NPLORA_COMFYUI_NEW_PYTHON``; 783545f6, v0.33.0, and 3cd7b32f, 2026-01-07, which has no
    klein config; no checkpoint needed): the rows above,
    then Z-Image, FLUX.2-dev, FLUX.2-klein 4B and 9B as ComfyUI's own detection builds them from a
    meta checkpoint with the table's weights. ComfyUI picks its ``ZImage`` / ``Flux2`` config,
    its class has exactly the table's weights and shapes, the dimensions it derives are the
    table's generator config, its text encoder's feature width is the DiT's text input, NP-LoRA
    tells the four apart, and the kohya, ComfyUI-dotted, diffusers and written files load with
    every key used and every patch fitting its weight."""
    folder, python = _newer_comfyui()
    rows = _keymap_rows(folder, python, tmp_path, "more", "dits")
    assert [_case(r) for r in rows] == list(KEYMAP_CASES + MORE_KEYMAP_CASES + VARIANT_KEYMAP_CASES + DIT_KEYMAP_CASES)
    _check_keymap_rows(rows, "newer ComfyUI")
    _check_more_rows(rows, "newer ComfyUI")
    no_klein = set()
    for r in rows[-len(DIT_KEYMAP_CASES):]:
        arch, fmt = r["arch"], r["format"]
        if arch.startswith("flux2klein") and any(m in r.get("error", "") for m in KLEIN_UNSUPPORTED):
            no_klein.add(arch)  # a ComfyUI from before klein: its FLUX.2 detection fixes dev's 48 heads
            report(f"newer ComfyUI key map {arch} ({fmt}): this ComfyUI builds no FLUX.2 klein ({r['error']})")
            continue
        assert r["detected"] == arch, r
        if r["modules"] == 0:
            assert fmt == "ldm-peft" and arch != "zimage", r  # ComfyUI maps Z-Image's under diffusion_model.
            report(f"newer ComfyUI key map {arch} ({fmt}): none of the {r['host_unmapped']} modules mapped")
            continue
        config = json.loads((ROOT / "lib_nplora" / "arch" / "tables" / f"{arch}.json").read_text())["config"]
        assert r["layout_bad"] == [] and r["layout_extra"] == [], r
        if arch == "zimage":
            assert r["comfy_config"] == "ZImage" and r["host_unmapped"] == 0, r
            assert r["dims"] == dict(r["dims"], **{k: config[k] for k in ("dim", "n_heads", "n_kv_heads", "n_layers",
                                                                           "cap_feat_dim")}), r
            assert r["te_width"] == config["cap_feat_dim"], r
        else:
            assert r["comfy_config"] == "Flux2", r
            assert r["dims"] == dict(r["dims"], hidden_size=config["num_attention_heads"] * config["attention_head_dim"],
                                     num_heads=config["num_attention_heads"], depth=config["num_layers"],
                                     depth_single_blocks=config["num_single_layers"],
                                     context_in_dim=config["joint_attention_dim"], mlp_ratio=config["mlp_ratio"],
                                     guidance_embed=config["guidance_embeds"], in_channels=config["in_channels"]), r
            assert r["te_width"] == config["joint_attention_dim"], r
        if fmt in ("kohya", "written"):
            assert r["modules"] == r["layout_weights"], r
    by = {(r["arch"], r["format"]): r for r in rows}
    # fused qkv as parts: Z-Image 34 x 3, FLUX.2-dev / klein 9B 8 double blocks x 2 x 3, klein 4B 5 x 2 x 3
    for arch, slices in (("zimage", 102), ("flux2", 48), ("flux2klein4b", 30), ("flux2klein9b", 48)):
        if arch not in no_klein:
            assert by[arch, "written"]["slices"] == by[arch, "kohya"]["slices"] == slices, by[arch, "written"]


#: the DiTs sampled through ComfyUI's own model code (every tested ComfyUI has their configs)
SAMPLED = ("flux", "chroma", "qwenimage", "lumina2", "wan1b", "wan5b", "wan14b")


def test_the_dits_sample_through_comfyuis_models_as_the_formula_says(tmp_path):
    """``comfyui_sampling.py`` in ComfyUI's Python (no server, no prepared checkpoint): FLUX.1,
    Chroma, Qwen-Image, Lumina 2, Wan 1.3B, Wan 2.2 5B and Wan 14B (T2V: the table without its image
    cross-attention) at their real width with block 0 of each block list, random weights, loaded
    as ``UNETLoader`` loads them and sampled (3 Euler steps).
    The NP-LoRA Loader's model samples what the same checkpoint with W + dW does, dW the NP-LoRA
    formula computed in float64 from the LoRA factors (fused weights per row slice), to float32
    rounding, while differing from the two stacked LoRAs by the projection; at mu 0 it is the two
    stock ``LoraLoader`` patch sets bit for bit; the file NP-LoRA Save writes (float16), loaded by
    a stock ``LoraLoader`` alone, samples the same to float16 rounding; every table weight of
    those blocks is patched and ComfyUI's detection gives the model NP-LoRA names."""
    folder, python = _folders(checkpoint=False)
    _check_sampled(folder, python, tmp_path, SAMPLED, "ComfyUI")


def _check_sampled(folder: Path, python: Path, tmp_path: Path, archs: tuple[str, ...], label: str) -> None:
    """``comfyui_sampling.py`` for ``archs`` in that ComfyUI, every row checked (see above)."""
    out = subprocess.run([str(python), str(ROOT / "tests" / "e2e" / "comfyui_sampling.py"), str(ROOT), str(tmp_path),
                          *archs], cwd=folder, capture_output=True, text=True, timeout=3600,
                         env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2")))
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["arch"] for r in rows] == list(archs), out.stdout[-3000:]
    for r in rows:
        assert "error" not in r, r
        assert r["detected"] == r["arch"] and r["finite"], r
        assert r["fused_patched"] == r["table_weights"] == r["saved_modules"] > 0, r
        assert r["stacked_vs_base"] > 0.1 and r["fused_vs_stacked"] > 1e-3, r  # the LoRAs and the projection show
        assert r["fused_vs_reference"] < 1e-5 and r["fused_vs_reference"] < r["fused_vs_stacked"] / 1000, r
        assert r["mu0_equal_stacked"], r
        assert r["saved_dtypes"] == ["torch.float16"], r
        assert r["saved_vs_reference"] < 1e-2 and r["saved_vs_reference"] < r["fused_vs_stacked"] / 10, r
        report(f"{label} sampled {r['arch']} ({r['comfy_config']}, block 0 of each list, {r['table_weights']} "
               f"table weights patched): Loader vs W + dW {r['fused_vs_reference']:.1e}, vs stacked "
               f"{r['fused_vs_stacked']:.1e}, mu 0 = stacked bit for bit, saved float16 file vs W + dW "
               f"{r['saved_vs_reference']:.1e} ({r['seconds']} s)")


def test_a_newer_comfyuis_z_image_and_flux2_sample_as_the_formula_says(tmp_path):
    """The same for Z-Image and FLUX.2-dev in a ComfyUI with their configs (``NPLORA_COMFYUI_NEW``
    and ``NPLORA_COMFYUI_NEW_PYTHON``; verified on 3cd7b32f, 2026-01-07, and 0ab8332b, 2026-08-07),
    and FLUX.2-klein 4B and 9B where that ComfyUI has klein (its Qwen3 text encoder, ``klein_te``;
    0ab8332b): ComfyUI's ``ZImage`` / ``Flux2`` model at the real width (FLUX.2-dev's one double and
    one single block hold 2.2 billion weights: 21 GB resident at the peak, 9 min on 2 CPU cores)."""
    folder, python = _newer_comfyui()
    has_klein = "def klein_te(" in (folder / "comfy" / "text_encoders" / "flux.py").read_text()
    archs = ("zimage", "flux2") + (("flux2klein4b", "flux2klein9b") if has_klein else ())
    if not has_klein:
        report(f"newer ComfyUI at {folder}: no FLUX.2-klein (no klein_te), klein not sampled")
    _check_sampled(folder, python, tmp_path, archs, "newer ComfyUI")


def test_the_nodes_load_with_inputs_from_the_parameter_table(comfyui):
    from lib_nplora.params import UI_PARAMS

    info = json.loads(comfyui.get("/object_info"))
    for node in ("NpLoraLoader", "NpLoraSave", "NpLoraAnalyze", "NpLoraSet"):
        assert node in info, f"{node} missing; console:\n{comfyui.console()[-2000:]}"
        assert info[node]["category"] == "loaders/NP-LoRA"
    inputs = info["NpLoraLoader"]["input"]
    loader = {**inputs["required"], **inputs.get("optional", {})}
    assert list(loader) == ["model", "clip"] + [p.name for p in UI_PARAMS] + ["contents", "styles"]
    assert loader["contents"][0] == loader["styles"][0] == info["NpLoraSet"]["output"][0] == "NPLORA_SET"
    assert C in loader["content"][0] and S in loader["style"][0]
    assert info["NpLoraLoader"]["output"] == ["MODEL", "CLIP"]
    ours = [line for line in comfyui.console().splitlines() if "custom_nodes/nplora" in line]
    assert ours and not any("IMPORT FAILED" in line for line in ours)


def test_mu_zero_is_the_stacked_lora_loader_image(comfyui, shots):
    assert diff(shots["mu0"], shots["base"]) > 0.5  # the LoRAs change the image
    assert np.array_equal(shots["mu0"], shots["stacked"])
    report(f"ComfyUI: mu=0 vs two LoraLoaders: mean |diff| {diff(shots['mu0'], shots['stacked']):.3f}; "
           f"vs base {diff(shots['mu0'], shots['base']):.2f}")


def sets_graph(mu: float, prefix: str) -> dict:
    """Two contents (C, C2*0.5) and two styles (S, S2*0.7) through chained NP-LoRA Set nodes."""
    g = graph([nplora(mu=mu, contents=["set_c2", 0], styles=["set_s2", 0])], prefix=prefix)
    for side, (first, second, w) in (("c", (C, C2, 0.5)), ("s", (S, S2, 0.7))):
        g[f"set_{side}1"] = {"class_type": "NpLoraSet", "inputs": {"lora_name": first, "weight": 1.0}}
        g[f"set_{side}2"] = {"class_type": "NpLoraSet",
                             "inputs": {"lora_name": second, "weight": w, "previous": [f"set_{side}1", 0]}}
    return g


def test_sets_at_mu_zero_are_four_chained_lora_loaders_and_project_otherwise(comfyui, shots):
    four = comfyui.image(comfyui.run(graph([stock(C), stock(C2, 0.5), stock(S), stock(S2, 0.7)], prefix="four")))
    mu0 = comfyui.image(comfyui.run(sets_graph(0.0, "sets_mu0")))
    mu05 = comfyui.image(comfyui.run(sets_graph(0.5, "sets_mu05")))
    assert np.array_equal(mu0, four)
    assert diff(four, shots["stacked"]) > 0.1  # the second content and style count
    assert diff(mu05, four) > 0.1
    console = comfyui.console()
    line = f"2 contents ({NAMES['content']}*1, {NAMES['content2']}*0.5) + 2 styles ({NAMES['style']}*1, "
    assert line in console
    report(f"ComfyUI: 2 contents + 2 styles through NP-LoRA Set nodes: mu=0 vs four LoraLoaders identical; "
           f"mu=0.5 vs them: mean |diff| {diff(mu05, four):.2f}")


def test_projection_changes_the_image(comfyui, shots):
    assert diff(shots["mu05"], shots["stacked"]) > 0.1
    report(f"ComfyUI: mu=0.5 vs stacked: mean |diff| {diff(shots['mu05'], shots['stacked']):.2f} (0..255)")


def test_a_workflow_without_the_node_gives_the_base_image_again(comfyui, shots):
    assert np.array_equal(shots["base_again"], shots["base"])


def test_no_lora_key_is_left_unloaded(comfyui, shots):
    console = comfyui.console()
    assert "lora key not loaded" not in console
    assert "NOT LOADED" not in console
    assert "NP-LoRA: not loaded" not in console
    assert "modules projected" in console


def test_a_mu_sweep_reuses_the_inputs_and_the_style_subspace(comfyui, shots):
    cached = "inputs from the cache, style subspace from the cache"
    before = comfyui.console().count(cached)
    for mu in (0.25, 1.5):
        entry = comfyui.run(graph([nplora(mu=mu)], prefix=f"sweep{mu}"))
        assert entry["status"]["status_str"] == "success"
    assert comfyui.console().count(cached) == before + 2  # mu=0.5 ran before: nothing read or computed again


def test_save_writes_a_file_the_stock_lora_loader_loads(comfyui, shots):
    save = {"class_type": "NpLoraSave", "inputs": dict(content=C, style=S, content_weight=1.0, style_weight=1.0,
                                                        mu=0.5, hard=False, k=0, scope="unet", method="nplora",
                                                        file_name="nplora_e2e_saved", overwrite=False)}
    entry = comfyui.run({"save_lora": save})
    assert entry["status"]["status_str"] == "success", entry["status"]
    path = comfyui.loras / "nplora_e2e_saved.safetensors"
    assert path.is_file()
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    block = json.loads(meta["nplora"])  # the tab's metadata: inputs (names, hashes, weights) and parameters
    assert json.dumps(block).count(NAMES["content"]) >= 1 and json.dumps(block).count(NAMES["style"]) >= 1
    assert meta["ss_output_name"] == "nplora_e2e_saved"
    before = comfyui.console().count("lora key not loaded")
    loaded = comfyui.image(comfyui.run(graph([stock(path.name)], prefix="saved")))
    assert comfyui.console().count("lora key not loaded") == before
    # the saved fusion (fp16 factors) renders what the loader's fusion renders, not the base or the stack
    assert diff(loaded, shots["mu05"]) < 0.25 * diff(shots["mu05"], shots["base"])
    report(f"ComfyUI: saved file via LoraLoader vs NP-LoRA Loader mu=0.5: mean |diff| {diff(loaded, shots['mu05']):.3f}")
    # a second save under the same name is refused (no overwrite unless asked), the file stays
    digest = path.read_bytes()
    again = comfyui.run({"save_lora": save})
    assert again["status"]["status_str"] == "error"
    assert path.read_bytes() == digest
    assert "exists" in json.dumps(again["status"]["messages"])


def test_save_never_writes_over_an_input_even_with_overwrite(comfyui):
    before = (comfyui.loras / C).read_bytes()
    save = {"class_type": "NpLoraSave", "inputs": dict(content=C, style=S, content_weight=1.0, style_weight=1.0,
                                                        mu=0.5, hard=False, k=0, scope="unet", method="nplora",
                                                        file_name=NAMES["content"], overwrite=True)}
    entry = comfyui.run({"save_lora": save})
    assert entry["status"]["status_str"] == "error"
    assert (comfyui.loras / C).read_bytes() == before


def test_a_bad_name_is_a_node_error_and_the_server_stays_up(comfyui):
    status, body = comfyui.post("/prompt", {"prompt": graph([nplora(content="no_such_lora.safetensors")])})
    assert status == 400
    assert "lora0" in body["node_errors"]
    assert "no_such_lora" in json.dumps(body["node_errors"])
    assert json.loads(comfyui.get("/system_stats"))  # still serving


def test_a_pair_for_another_model_is_a_node_error_with_the_clear_message(comfyui, shots):
    entry = comfyui.run(graph([nplora(content=WRONG_C, style=WRONG_S)], prefix="wrong"))
    assert entry["status"]["status_str"] == "error"
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and errors[0]["node_type"] == "NpLoraLoader"
    message = errors[0]["exception_message"]
    assert WRONG_C.removesuffix(".safetensors") in message or "SDXL" in message or "sd1" in message.lower()
    report(f"ComfyUI: wrong-model pair -> node error: {message[:160]}")
    # and the next prompt runs
    assert np.array_equal(comfyui.image(comfyui.run(graph(prefix="after_error"))), shots["base"])


def test_analyze_returns_the_chart_and_the_numbers(comfyui):
    g = {"an": {"class_type": "NpLoraAnalyze", "inputs": dict(content=C, style=S, k=0, scope="unet")},
         "show": {"class_type": "PreviewImage", "inputs": {"images": ["an", 0]}}}
    entry = comfyui.run(g)
    img = comfyui.image(entry, node="show")
    assert img.shape[0] > 50 and img.shape[1] > 300
    assert img.std() > 5  # bars and text, not a blank picture


def test_the_example_workflow_loads_in_the_real_frontend_and_runs(comfyui):
    """``example_workflows/nplora_content_style.json`` in ComfyUI's own frontend (Chromium): every node
    type is known, the NP-LoRA widgets are the parameter table's, and the prompt the frontend makes of
    it runs (with this suite's files, at 64x64 and 2 steps)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-test.txt)")
    from lib_nplora.params import UI_PARAMS

    text = (ROOT / "example_workflows" / "nplora_content_style.json").read_text()
    workflow = json.loads(text.replace("subject_lora.safetensors", C).replace("style_lora.safetensors", S)
                          .replace("v1-5-pruned-emaonly.safetensors", CKPT))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("NPLORA_CHROMIUM", "/usr/bin/chromium"),
                                    args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1800, "height": 980})
            page.goto(comfyui.url + "/")
            page.wait_for_function("window.app && window.app.graph", timeout=120_000)
            page.evaluate("wf => window.app.loadGraphData(wf, true, true, 'nplora')", workflow)
            page.wait_for_function("window.app.graph._nodes.length > 5", timeout=60_000)
            nodes = page.evaluate("() => window.app.graph._nodes.map(n => [n.type, (n.widgets || []).map(w => w.name)])")
            prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
            shots = os.environ.get("NPLORA_E2E_SHOTS")
            if shots:
                page.screenshot(path=str(Path(shots) / "comfyui-example-workflow.png"))
        finally:
            browser.close()
    widgets = dict(nodes)
    assert widgets["NpLoraLoader"][:len(UI_PARAMS)] == [p.name for p in UI_PARAMS]
    assert {"NpLoraLoader", "NpLoraAnalyze", "KSampler"} <= set(widgets)
    by_type = {n["class_type"]: n for n in prompt.values()}
    by_type["EmptyLatentImage"]["inputs"].update(width=64, height=64)
    by_type["KSampler"]["inputs"]["steps"] = 2
    entry = comfyui.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert any(o.get("images") for o in entry["outputs"].values())
