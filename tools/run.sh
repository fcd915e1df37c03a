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

chain() {  # a requirements file and every file it includes with -r, recursively
  echo "$1"
  sed -n 's/^-r[[:space:]]*//p' "$1" | while read -r inc; do chain "$(dirname "$1")/$inc"; done
}

install() {  # name requirements-file: install once per content of the file and of what it includes
  local stamp="$venv/.installed-$1-$(chain "$2" | xargs cat | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$2" 2> >(grep -v "is ignored: it is neither" >&2)
  touch "$stamp"
}

install base "$here/requirements-base.txt"
[ "${1:-}" = "serve" ] && install serve "$here/requirements-serve.txt"
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$venv/bin/python" -m lib_nplora "$@"
