#!/usr/bin/env bash
# Install the library's runtime into .venv-run (first time only) and run the NP-LoRA command line.
#   bash tools/run.sh fuse CONTENT.safetensors STYLE.safetensors -o FUSED.safetensors [--mu 0.5] ...
#   bash tools/run.sh inspect FILE.safetensors
#   bash tools/run.sh analyze CONTENT.safetensors STYLE.safetensors
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="$here/.venv-run"
stamp="$venv/.installed-$(sha256sum "$here/requirements.txt" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" 2> >(grep -v "is ignored: it is neither" >&2)
  touch "$stamp"
fi
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$venv/bin/python" -m lib_nplora "$@"
