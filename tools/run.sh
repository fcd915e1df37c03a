#!/usr/bin/env bash
# Install the library's runtime into .venv-run (first time only) and run the NP-LoRA command line.
#   bash tools/run.sh fuse CONTENT.safetensors STYLE.safetensors -o FUSED.safetensors [--mu 0.5] ...
#   bash tools/run.sh inspect FILE.safetensors
#   bash tools/run.sh analyze CONTENT.safetensors STYLE.safetensors
#   bash tools/run.sh serve --lora-dir DIR            # the tab without a WebUI (adds gradio)
#   bash tools/run.sh demo [--out DIR] [--arch sd15|sdxl]   # no files needed: a synthetic pair, analyzed, fused, verified
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="$here/.venv-run"

install() {  # name requirements-file: install once per content of the file
  local stamp="$venv/.installed-$1-$(cat "$2" "$here/requirements.txt" | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$2" 2> >(grep -v "is ignored: it is neither" >&2)
  touch "$stamp"
}

install base "$here/requirements.txt"
[ "${1:-}" = "serve" ] && install serve "$here/requirements-serve.txt"
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$venv/bin/python" -m lib_nplora "$@"
