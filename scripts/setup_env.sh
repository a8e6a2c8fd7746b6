#!/usr/bin/env bash
# Creates the virtual environment if missing and installs one of the two pinned stacks into it
# (docs/getting-started.md):
#   pinned   Python 3.11, TensorFlow 2.15, TF-Agents with its own pins, Reverb (constraints.txt)
#   current  Python 3.12 or 3.13, TensorFlow 2.21 with tf-keras, no Reverb (constraints-current.txt)
# PIPELINE_STACK=pinned|current chooses; unset, the pinned stack is taken where python3.11
# exists and the current one otherwise. PIPELINE_VENV sets the folder (default .venv).
# Sourced by quickstart.sh and test.sh (they read $VENV); re-running is cheap once installed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PIPELINE_VENV:-$REPO/.venv}"
EXTRAS="atari,test"  # one set for quickstart.sh and test.sh, so neither reinstalls for the other

python_with() {  # python_with MINOR...: the first interpreter on PATH that is 3.MINOR
  local minor candidate
  for minor in "$@"; do
    for candidate in "python3.$minor" python3 python; do
      if command -v "$candidate" >/dev/null 2>&1 &&
         "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != (3, $minor))" 2>/dev/null; then
        echo "$candidate"; return 0
      fi
    done
  done
  return 1
}

stack_python() {  # prints "STACK PYTHON" for the requested or the automatic choice
  local stack="${PIPELINE_STACK:-}" python
  case "$stack" in
    pinned)
      python="$(python_with 11)" || {
        echo "error: PIPELINE_STACK=pinned needs python3.11 (TensorFlow 2.15 supports up to 3.11): install it, or unset PIPELINE_STACK to use the current stack" >&2
        return 2; } ;;
    current)
      python="$(python_with 12 13)" || {
        echo "error: PIPELINE_STACK=current needs python3.12 or python3.13: install one, or unset PIPELINE_STACK to use the pinned stack" >&2
        return 2; } ;;
    "")
      if python="$(python_with 11)"; then stack=pinned
      elif python="$(python_with 12 13)"; then stack=current
      else
        echo "error: no supported Python found: install python3.11 (the pinned stack, with Reverb) or python3.12/3.13 (the current stack)" >&2
        return 2
      fi ;;
  esac
  echo "$stack $python"
}

venv_stack() {  # the stack an existing venv holds, from its Python version
  "$VENV/bin/python" -c 'import sys; print("pinned" if sys.version_info[:2] == (3, 11) else "current")'
}

case "${PIPELINE_STACK:-}" in
  ""|pinned|current) ;;
  *) echo "error: PIPELINE_STACK=$PIPELINE_STACK is not a stack: use pinned (Python 3.11) or current (Python 3.12/3.13)" >&2
     exit 2 ;;
esac

if [ -x "$VENV/bin/python" ]; then
  STACK="$(venv_stack)"
  if [ -n "${PIPELINE_STACK:-}" ] && [ "$PIPELINE_STACK" != "$STACK" ]; then
    echo "error: $VENV holds the $STACK stack, not PIPELINE_STACK=$PIPELINE_STACK: set PIPELINE_VENV to another folder, or remove $VENV" >&2
    exit 2
  fi
else
  read -r STACK PYTHON <<< "$(stack_python)"
  echo "creating $VENV with $("$PYTHON" --version) (the $STACK stack)"
  "$PYTHON" -m venv "$VENV"
fi

CONSTRAINTS="$REPO/constraints.txt"
[ "$STACK" = current ] && CONSTRAINTS="$REPO/constraints-current.txt"
stamp="$VENV/.installed-$(cat "$CONSTRAINTS" "$REPO/setup.cfg" | sha1sum | cut -c1-12)-$EXTRAS"
if [ ! -f "$stamp" ]; then
  echo "installing the $STACK stack into $VENV (a minute or two on a fresh machine)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" -e "$REPO[$EXTRAS]"
  if [ "$STACK" = current ]; then
    # TF-Agents 0.19 declares TF 2.15's tensorflow-probability and the retired gym;
    # setup.cfg lists what it really needs on this stack (docs/getting-started.md).
    "$VENV/bin/python" -m pip install --quiet --no-deps -c "$CONSTRAINTS" tf-agents
  fi
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
