#!/usr/bin/env bash
# Install the test environments (first run, or when a requirements file changed) and run all tests.
#   bash tools/test.sh            # everything
#   bash tools/test.sh -k fuse    # extra arguments go to pytest (main environment)
# Environments: .venv (gradio 4.40.0, Forge's UI stack) and .venv-gradio3 (gradio 3.41.2, A1111's).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

chain() {  # a requirements file and every file it includes with -r, recursively
  echo "$1"
  sed -n 's/^-r[[:space:]]*//p' "$1" | while read -r inc; do chain "$(dirname "$1")/$inc"; done
}

setup() {  # venv requirements-file
  local venv=$1 req=$2 stamp
  stamp="$venv/.installed-$(chain "$req" | xargs cat | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "== installing $venv from $req"
    rm -rf "$venv"
    "$PY" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" 2> >(grep -v "is ignored: it is neither" >&2)
    touch "$stamp"
  fi
}

# the browser tests drive Debian's Chromium (never a downloaded one); install it when we can
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing Debian chromium for the browser tests"
    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) >/tmp/nplora-apt.log 2>&1 \
      || echo "could not install chromium (see /tmp/nplora-apt.log): the browser tests will be skipped"
  else
    echo "chromium is not installed and this is not root: the browser tests will be skipped"
  fi
fi

setup .venv requirements-test.txt
setup .venv-gradio3 requirements-gradio3.txt

status=0
echo "== tests (gradio 4.40.0 environment)"
.venv/bin/python -m pytest "$@" || status=$?
if [ $# -eq 0 ]; then
  echo "== UI build tests (gradio 3.41.2 environment)"
  rc=0
  .venv-gradio3/bin/python -m pytest -m ui tests || rc=$?
  # pytest's 5 (no tests collected) fails too: the UI tests must run under gradio 3 as well
  [ $rc -eq 5 ] && echo "no UI tests (-m ui) were collected in .venv-gradio3" >&2
  [ $rc -ne 0 ] && status=$rc
fi
exit $status
