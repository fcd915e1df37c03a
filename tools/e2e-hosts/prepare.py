#!/usr/bin/env python3
"""Prepare a WebUI checkout (AUTOMATIC1111, Forge main, Forge Neo or Forge Classic) for tests/e2e.

Run with the Python the host's venv should use (3.11 for all four)::

    python3.11 tools/e2e-hosts/prepare.py /path/to/stable-diffusion-webui \\
        --repo stable-diffusion-stability-ai=/path/to/stablediffusion \\
        --repo generative-models=/path/to/generative-models --repo k-diffusion=/path/to/k-diffusion \\
        --repo BLIP=/path/to/BLIP --repo stable-diffusion-webui-assets=/path/to/assets

It never carries or downloads any upstream code itself: the WebUI folder and each model repository
are given by the user (a local clone or folder, or a git URL the user chooses to clone from). What
it does, each step skipped when already done:

1. ``<webui>/venv``: a venv with the torch build given by ``--torch`` (default ``torch==2.13.0``,
   the CPU build where pip finds one), the host's gradio where its launcher installs it apart
   (``GRADIO_PACKAGE``: Neo, Classic) and the host's ``requirements_versions.txt`` (Neo, Classic:
   ``requirements.txt``), with the deviations Python 3.11 / a CPU-only torch need (printed, and
   listed in README.md beside this file), and openai's ``clip`` package from ``--clip-package DIR`` (the host's launch installs it from an
   archive URL; pinned commit checked).
2. ``<webui>/repositories/<name>``: each repository the host's ``modules/launch_utils.py`` clones,
   cloned from the source given with ``--repo name=SOURCE`` and checked out at the commit that
   file pins.
3. A1111 only: the CLIP ViT-L/14 tokenizer and text-model config in a Hugging Face cache
   (``--hf-home``, default ``<webui>/e2e-hf-home``) under ``openai/clip-vit-large-patch14``, for
   offline start. Derived from ``--clip-files DIR`` (a folder with vocab.json and merges.txt,
   e.g. Forge's ``backend/huggingface/runwayml/stable-diffusion-v1-5/tokenizer``) or, by default,
   from open_clip's ``bpe_simple_vocab_16e6.txt.gz`` in the host's venv (the same BPE data).
4. ``<webui>/models/Stable-diffusion/nplora-e2e-random-sd15.safetensors``: random SD1.5 weights in
   the real checkpoint layout, made by make_checkpoint.py from the host's own model definition
   (A1111's LDM config, Forge's and Neo's ``backend/`` classes, Classic's ``ldm_patched``)
   (or ``--ckpt FILE`` to link an existing checkpoint instead).
5. With ``--sdxl DIR`` (Forge Neo, Forge Classic): also ``DIR/Stable-diffusion/nplora-e2e-random-sdxl.safetensors``,
   random SDXL weights (make_checkpoint.py ``--model sdxl``, ~6.5 GiB, peak memory ~6 GiB), in a
   models folder of its own: the suite gives it to the host with ``--model-ref DIR`` (Neo loads the
   first checkpoint of its folders) and ``NPLORA_E2E_MODEL=sdxl`` (SDXL LoRAs).

At the end it prints the environment variables to run the suite with.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CKPT_NAME = "nplora-e2e-random-sd15.safetensors"
SDXL_NAME = "nplora-e2e-random-sdxl.safetensors"


def log(msg: str) -> None:
    print(f"[prepare] {msg}", flush=True)


def run(cmd: list[str], **kw) -> None:
    log("$ " + " ".join(shlex.quote(str(c)) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def forge_variant(webui: Path) -> str:
    """Which Forge: Classic has no ``backend/`` (its ``ldm_patched``), Neo ships huggingface_guess
    in ``modules_forge/packages``, Forge main clones it into ``repositories/``."""
    if not (webui / "backend").is_dir():
        return "forge_classic"
    return "forge_neo" if (webui / "modules_forge" / "packages" / "huggingface_guess").is_dir() else "forge"


def host_kind(webui: Path) -> str:
    if not (webui / "launch.py").is_file() or not (webui / "modules" / "launch_utils.py").is_file():
        sys.exit(f"{webui} is not a WebUI checkout (no launch.py / modules/launch_utils.py)")
    return "forge" if (webui / "modules_forge").is_dir() else "a1111"


# ---------------------------------------------------------------------------------------- venv
def requirement_lines(webui: Path, torch_spec: str) -> tuple[list[str], list[str]]:
    """The host's pinned requirements with the deviations this environment needs, and the notes."""
    lines, notes = [], []
    req_file = requirements_file(webui)
    for raw in req_file.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name = re.split(r"[=<>!~\[ ;]", line, maxsplit=1)[0].lower()
        if name == "setuptools":
            # torch >= 2.6 requires setuptools >= 77.0.3; < 81 keeps pkg_resources (pytorch_lightning 1.9 uses it)
            lines.append("setuptools>=77.0.3,<81")
            notes.append(f"{line} -> setuptools>=77.0.3,<81 (the torch build requires setuptools>=77.0.3)")
        elif name == "torch":
            notes.append(f"{line} -> {torch_spec} (installed first)")
        else:
            lines.append(line)
    if not any(re.match(r"setuptools\b", line) for line in lines):
        # Forge Classic pins none: torch pulls the newest, which has no pkg_resources (CLIP's setup.py needs it)
        lines.append("setuptools>=77.0.3,<81")
        notes.append(f"setuptools>=77.0.3,<81 added ({req_file.name} pins none; "
                     "CLIP's setup.py imports pkg_resources)")
    return lines, notes


def requirements_file(webui: Path) -> Path:
    """A1111 and Forge main pin everything in requirements_versions.txt; Forge Neo and Classic in requirements.txt."""
    for name in ("requirements_versions.txt", "requirements.txt"):
        if (webui / name).is_file():
            return webui / name
    sys.exit(f"{webui} has neither requirements_versions.txt nor requirements.txt")


def gradio_packages(webui: Path) -> list[str]:
    """Forge Neo and Classic install gradio apart from their requirements (launch_utils' GRADIO_PACKAGE)."""
    src = (webui / "modules" / "launch_utils.py").read_text()
    m = re.search(r"GRADIO_PACKAGE['\"],\s*['\"]([^'\"]+)['\"]", src)
    return m.group(1).split() if m else []


TORCHVISION_GUARD = ("@(torch.library.register_fake if torchvision.extension._has_ops() "
                     "else (lambda *a, **k: (lambda f: f)))(")


def fix_torchvision(py: Path) -> str | None:
    """PyPI's torchvision is a CUDA build: with a CPU-only torch its compiled ops cannot load, and
    torchvision's _meta_registrations then fails at import ("operator torchvision::nms does not
    exist") because two fake-kernel registrations lack the _has_ops() guard the others have. Add it."""
    probe = subprocess.run([str(py), "-c", "import torchvision"], capture_output=True, text=True)
    if probe.returncode == 0:
        return None
    if "torchvision::nms does not exist" not in probe.stderr:
        sys.exit(f"torchvision does not import:\n{probe.stderr}")
    where = subprocess.run([str(py), "-c", "import importlib.util as u; "
                            "print(u.find_spec('torchvision').submodule_search_locations[0])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    meta = Path(where) / "_meta_registrations.py"
    text = meta.read_text()
    patched = text.replace("@torch.library.register_fake(", TORCHVISION_GUARD)
    meta.write_text(patched)
    subprocess.run([str(py), "-c", "import torchvision"], check=True)
    return (f"torchvision: {meta} guarded {text.count('@torch.library.register_fake(')} fake-kernel "
            "registrations with _has_ops() (CUDA build of its ops cannot load with CPU torch; "
            "torchvision.ops.nms/roi_align are unavailable, the suite uses neither)")


def clip_commit(webui: Path) -> str | None:
    """The openai/CLIP commit the host's launch_utils.py installs (its CLIP_PACKAGE archive URL)."""
    m = re.search(r"CLIP_PACKAGE['\"],\s*\"[^\"]*/archive/([0-9a-f]{40})\.zip", (webui / "modules" / "launch_utils.py").read_text())
    return m.group(1) if m else None


def install_clip(py: Path, webui: Path, source: str | None, pip_args: list[str]) -> str:
    """The host's launch installs openai's CLIP package (import name ``clip``, not the PyPI project of that
    name); A1111 imports it at start. Installed from the user's clone, at the host's pinned commit."""
    if subprocess.run([str(py), "-c", "import clip.simple_tokenizer"], capture_output=True).returncode == 0:
        return "clip: already installed"
    if not source:
        sys.exit("the host needs openai's CLIP package (import name clip): give a clone with --clip-package DIR")
    commit = clip_commit(webui)
    src = Path(source)
    if commit and (src / ".git").exists():
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        if head != commit:
            sys.exit(f"{src} is at {head}; the host pins openai/CLIP {commit} (git -C {src} checkout {commit})")
    # --no-deps: its requirements (ftfy, regex, tqdm, torch, torchvision) are in the venv already;
    # --no-build-isolation: its setup.py imports pkg_resources, which the newest setuptools no longer has
    run([py, "-m", "pip", "install", *pip_args, "--no-deps", "--no-build-isolation", src])
    return f"clip: openai/CLIP {commit or '(commit not pinned)'} from {src}, --no-deps --no-build-isolation"


def make_venv(webui: Path, python: str, torch_spec: str, torchvision_spec: str, pip_args: list[str]) -> list[str]:
    venv = webui / "venv"
    py = venv / "bin" / "python"
    if not py.exists():
        run([python, "-m", "venv", venv])
    run([py, "-m", "pip", "install", *pip_args, torch_spec, torchvision_spec])
    lines, notes = requirement_lines(webui, torch_spec)
    gradio = gradio_packages(webui)
    if gradio:  # as the launcher: gradio alone, then the requirements (Neo pins Pillow 11.3, gradio 4.40 wants < 11)
        run([py, "-m", "pip", "install", *pip_args, *gradio, torchvision_spec])
        notes.append(f"{' '.join(gradio)}: the launcher's GRADIO_PACKAGE, installed before "
                     f"{requirements_file(webui).name} in its own pip call, as the launcher does "
                     "(pip then reports the conflicts the host has)")
    req = venv / "nplora-e2e-requirements.txt"
    req.write_text("\n".join(lines) + "\n")
    # keep torch as installed: the requirements must not pull another build
    constraint = venv / "nplora-e2e-constraints.txt"
    version = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('torch'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    constraint.write_text(f"torch=={version}\n")
    run([py, "-m", "pip", "install", *pip_args, "-r", req, "-c", constraint, torchvision_spec])
    note = fix_torchvision(py)
    if note:
        notes.append(note)
    return notes


# ------------------------------------------------------------------------------- repositories
def pinned_repositories(webui: Path) -> dict[str, str | None]:
    """{folder under repositories/: commit} for each git_clone(...) launch_utils.py runs (not commented out)."""
    src = (webui / "modules" / "launch_utils.py").read_text()
    values = dict(re.findall(r"^\s*(\w+)\s*=\s*os\.environ\.get\('\w+',\s*[\"']([^\"']+)[\"']\)", src, re.M))
    out = {}
    for m in re.finditer(r"^\s*git_clone\((\w+),\s*repo_dir\('([^']+)'\),\s*\"[^\"]*\"(?:,\s*(\w+))?\)", src, re.M):
        out[m.group(2)] = values.get(m.group(3)) if m.group(3) else None
    return out


def place_repositories(webui: Path, sources: dict[str, str]) -> list[str]:
    pinned = pinned_repositories(webui)
    missing = [name for name in pinned if not (webui / "repositories" / name).exists() and name not in sources]
    if missing:
        sys.exit("missing model repositories; give each with --repo NAME=SOURCE (a local clone or a git URL):\n"
                 + "\n".join(f"  {n} (commit {pinned[n]})" for n in missing))
    done = []
    for name, commit in pinned.items():
        dest = webui / "repositories" / name
        if not dest.exists():
            dest.parent.mkdir(exist_ok=True)
            run(["git", "clone", "-q", "--no-checkout", "--config", "core.filemode=false", sources[name], dest])
            note = checkout(dest, commit or "HEAD")
        elif commit:
            head = subprocess.run(["git", "-C", str(dest), "rev-parse", "HEAD"], capture_output=True,
                                  text=True).stdout.strip()
            note = checkout(dest, commit) if head != commit else ""
        else:
            note = ""
        done.append(f"{name} @ {commit}{note}")
    return done


def checkout(dest: Path, commit: str) -> str:
    """Check out `commit`; files whose blobs the source lacks (a partial mirror without its largest
    files, e.g. sample images) are left out by a sparse checkout, and named."""
    tree = subprocess.run(["git", "-C", str(dest), "ls-tree", "-r", "--format=%(objectname) %(path)", commit],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    blobs = dict(line.split(" ", 1) for line in tree)
    check = subprocess.run(["git", "-C", str(dest), "cat-file", "--batch-check"], input="\n".join(blobs) + "\n",
                           capture_output=True, text=True, check=True).stdout.splitlines()
    missing = [blobs[line.split()[0]] for line in check if line.endswith(" missing")]
    if missing:
        run(["git", "-C", dest, "sparse-checkout", "set", "--no-cone", "/*", *("!/" + m for m in missing)])
    run(["git", "-C", dest, "-c", "advice.detachedHead=false", "checkout", "-q", commit])
    return f" (left out, not in the source: {', '.join(missing)})" if missing else ""


# --------------------------------------------------------------------------- tokenizer, ckpt
def helper(py: Path, webui: Path, script: str, *args: str, env: dict | None = None) -> None:
    run([py, HERE / script, *args], cwd=webui, env=env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("webui", type=Path, help="the WebUI checkout (folder with launch.py)")
    ap.add_argument("--repo", action="append", default=[], metavar="NAME=SOURCE",
                    help="a model repository for repositories/NAME: local clone/folder or git URL")
    ap.add_argument("--python", default="python3.11", help="Python for the venv (default python3.11)")
    ap.add_argument("--torch", default="torch==2.13.0", help="torch requirement (default torch==2.13.0)")
    ap.add_argument("--torchvision", default="torchvision==0.28.0", help="matching torchvision")
    ap.add_argument("--pip-arg", action="append", default=[], help="extra argument for pip install")
    ap.add_argument("--skip-venv", action="store_true", help="keep <webui>/venv as it is")
    ap.add_argument("--clip-package", help="a clone of openai/CLIP at the commit the host pins (import name clip)")
    ap.add_argument("--hf-home", type=Path, help="HF cache for A1111's CLIP files (default <webui>/e2e-hf-home)")
    ap.add_argument("--clip-files", type=Path, help="folder with CLIP-L vocab.json and merges.txt")
    ap.add_argument("--ckpt", type=Path, help="use this checkpoint instead of generating one")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random checkpoint")
    ap.add_argument("--sdxl", type=Path, metavar="DIR",
                    help="Neo/Classic: also write a random SDXL checkpoint to DIR/Stable-diffusion (~6.5 GiB)")
    a = ap.parse_args()

    webui = a.webui.resolve()
    kind = host_kind(webui)
    variant = forge_variant(webui) if kind == "forge" else "a1111"
    if a.sdxl and variant not in ("forge_neo", "forge_classic"):
        sys.exit(f"--sdxl: the SDXL checkpoint is made for Forge Neo and Forge Classic, not {variant}")
    log(f"{kind} at {webui}")
    py = webui / "venv" / "bin" / "python"
    notes = [] if a.skip_venv else make_venv(webui, a.python, a.torch, a.torchvision, a.pip_arg)
    if not py.exists():
        sys.exit(f"no venv at {webui}/venv")
    notes.append(install_clip(py, webui, a.clip_package, a.pip_arg))

    sources = {}
    for item in a.repo:
        name, sep, src = item.partition("=")
        if not sep:
            sys.exit(f"--repo wants NAME=SOURCE, got {item!r}")
        sources[name] = str(Path(src).resolve()) if Path(src).exists() else src
    repos = place_repositories(webui, sources)

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    hf_home = None
    if kind == "a1111":
        hf_home = (a.hf_home or webui / "e2e-hf-home").resolve()
        env["HF_HOME"] = str(hf_home)
        helper(py, webui, "make_clip_files.py", str(hf_home),
               *(["--from", str(a.clip_files.resolve())] if a.clip_files else []), env=env)

    target = webui / "models" / "Stable-diffusion" / CKPT_NAME
    if a.ckpt:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(a.ckpt.resolve())
    elif not target.exists():
        helper(py, webui, "make_checkpoint.py", str(target), "--seed", str(a.seed), env=env)
    sdxl = (a.sdxl.resolve() / "Stable-diffusion" / SDXL_NAME) if a.sdxl else None
    if sdxl and not sdxl.exists():
        helper(py, webui, "make_checkpoint.py", str(sdxl), "--seed", str(a.seed), "--model", "sdxl", env=env)

    print()
    log("deviations from requirements_versions.txt:")
    for n in notes:
        print(f"  - {n}")
    log("repositories:")
    for r in repos:
        print(f"  - {r}")
    var = {"a1111": "NPLORA_WEBUI_A1111", "forge": "NPLORA_WEBUI_FORGE", "forge_neo": "NPLORA_WEBUI_FORGE_NEO",
           "forge_classic": "NPLORA_WEBUI_FORGE_CLASSIC"}[variant]
    exports = f"{var}={webui}"
    if hf_home:
        exports = f"HF_HOME={hf_home} " + exports
    log("run the suite with:")
    print(f"  {exports} OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/e2e -v -rA")
    if sdxl:
        print(f"  SDXL: {exports} NPLORA_E2E_MODEL=sdxl NPLORA_WEBUI_CKPT={sdxl} "
              f"NPLORA_WEBUI_ARGS=\"--model-ref {sdxl.parent.parent}\" OMP_NUM_THREADS=1 "
              ".venv/bin/python -m pytest tests/e2e -v -rA")
    others = sorted(p.name for p in target.parent.glob("*") if p.suffix in (".safetensors", ".ckpt"))
    if others and others[0] != target.name:
        print(f"  (the suite takes the first checkpoint of {target.parent}, {others[0]}: for this host alone "
              f"add NPLORA_WEBUI_CKPT={target})")


if __name__ == "__main__":
    main()
