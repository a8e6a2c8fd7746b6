#!/usr/bin/env bash
# Creates .venv (Python 3.11) if missing and installs the pinned stack into it.
# Sourced by quickstart.sh and test.sh; re-running is cheap once the stack is installed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PIPELINE_VENV:-$REPO/.venv}"
EXTRAS="atari,test"  # one set for both README commands, so neither reinstalls for the other

find_python() {
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Python 3.11 not found (TensorFlow 2.15 needs 3.11): install python3.11 and retry" >&2
  return 2
}

if [ ! -x "$VENV/bin/python" ]; then
  PYTHON="$(find_python)"
  echo "creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.installed-$(cat "$REPO/constraints.txt" "$REPO/setup.cfg" | sha1sum | cut -c1-12)-$EXTRAS"
if [ ! -f "$stamp" ]; then
  echo "installing the pinned stack into $VENV (about a minute on a fresh machine)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -c "$REPO/constraints.txt" -e "$REPO[$EXTRAS]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
