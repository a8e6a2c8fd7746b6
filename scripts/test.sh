#!/usr/bin/env bash
# One command from a fresh clone to a passing test suite: installs a pinned stack with the
# test tools (scripts/setup_env.sh picks it), checks style with ruff, then runs pytest.
# Arguments go to pytest.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/setup_env.sh"
cd "$REPO"
"$VENV/bin/ruff" check .
exec "$VENV/bin/python" -m pytest "$@"
