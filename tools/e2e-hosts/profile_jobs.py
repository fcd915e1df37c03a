"""Where a repeated generation spends its time on a real WebUI: a cached ``<nplora:…>`` tag
(μ 0.5, and as a plain merge, ``method=direct``, whose weights are stacking's) against the same two
LoRAs stacked as ``<lora:…>`` and no LoRA, sampled with py-spy.

Starts the host as ``tests/e2e`` does (same LoRA files, same flags, same 64×64 3-step job), and for
each setup runs one job unprofiled (it switches the weights), then records ``--jobs`` identical
jobs with ``py-spy record`` (raw collapsed stacks, every thread of the WebUI process). Prints, per
setup, the samples in all, in NP-LoRA's own frames (files of this extension), in the host's LoRA
weight code (``network_apply_weights`` and its restore on A1111, the patcher on Forge) and in the
text encoder and in the convolutions (most of the time of such a job), with the wall seconds of
each job. The stack files stay in ``--out``.

py-spy is not a dependency of the project: ``pip install py-spy`` into the environment that runs
this (it needs to read the WebUI's memory: same user, ptrace allowed).

    HF_HOME=/hosts/hf-home .venv/bin/python tools/e2e-hosts/profile_jobs.py a1111 /hosts/a1111 --jobs 6
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "e2e"), str(ROOT / "tests"), str(ROOT)]

from e2e_loras import NAMES, write_loras  # noqa: E402
from e2e_server import HOST_VARS, WebUI  # noqa: E402

PROMPT = "a photo of a cat"
#: frame-name fragments of each counted part (py-spy raw frames: "function (path:line)")
PARTS = {
    "NP-LoRA frames": ("lib_nplora/", "nplora-e2e/"),
    "host LoRA weights": ("network_apply_weights", "network_restore_weights", "LoraLoader", "patch_model",
                          "unpatch_model", "refresh_loras", "load_networks"),
    "text encoder": ("get_conds_with_caching", "get_learned_conditioning", "encode_with_transformers"),
    "convolutions": ("_conv_forward",),  # the bulk of a small SD1.5 job on CPU
}


def read_stacks(path: Path) -> collections.Counter:
    """py-spy ``-f raw`` output: one ``frame;frame;… count`` line per distinct stack."""
    stacks: collections.Counter = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def samples_in(stacks: collections.Counter, fragments: tuple[str, ...]) -> int:
    """Samples whose stack has a frame naming any of ``fragments`` (each sample counted once)."""
    # (the first frame is py-spy's process line, with the WebUI's command line)
    return sum(n for stack, n in stacks.items() if any(f in stack.partition(";")[2] for f in fragments))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("host", choices=sorted(HOST_VARS))
    ap.add_argument("folder", type=Path, help="the WebUI checkout (the folder with launch.py)")
    ap.add_argument("--jobs", type=int, default=6, help="profiled jobs per setup (default 6)")
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second (default 200)")
    ap.add_argument("--out", type=Path, default=Path("profile-jobs"), help="folder for the stack files and the log")
    args = ap.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        ap.error("py-spy is not installed: pip install py-spy")
    args.out.mkdir(parents=True, exist_ok=True)
    lora_dir = args.out / "Lora"
    write_loras(lora_dir)
    c, s = NAMES["content"], NAMES["style"]
    setups = {"tag": f"{PROMPT} <nplora:{c}:{s}>", "tag, plain merge": f"{PROMPT} <nplora:{c}:{s}:method=direct>",
              "stacked": f"{PROMPT} <lora:{c}:1> <lora:{s}:1>", "no LoRA": PROMPT}
    webui = WebUI(args.host, args.folder, lora_dir, args.out / "webui.log")
    webui.start()
    results = {}
    try:
        for prompt in setups.values():  # every path warm (first fusion, first LoRA load)
            webui.txt2img(prompt)
        for name, prompt in setups.items():
            webui.txt2img(prompt)  # the switch to this setup (weights merged or restored), unprofiled
            out = args.out / f"{name.replace(' ', '_').replace(',', '')}.txt"
            rec = subprocess.Popen([spy, "record", "--pid", str(webui.proc.pid), "--subprocesses", "--nonblocking",
                                    "-f", "raw", "-r", str(args.rate), "-o", str(out)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(2)  # py-spy attached
            seconds = [webui.txt2img(prompt)[2] for _ in range(args.jobs)]
            rec.send_signal(signal.SIGINT)
            rec.wait(120)
            results[name] = (read_stacks(out), seconds)
    finally:
        webui.stop()
    print(f"{args.host}: {args.jobs} identical 64x64 3-step jobs per setup, py-spy at {args.rate} Hz "
          "(samples; one sample = 1/rate s of one thread)")
    header = ["setup", "samples", *PARTS, "seconds per job"]
    print(" | ".join(header))
    for name, (stacks, seconds) in results.items():
        parts = [str(samples_in(stacks, fr)) for fr in PARTS.values()]
        print(" | ".join([name, str(sum(stacks.values())), *parts, " ".join(f"{x:.2f}" for x in seconds)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
