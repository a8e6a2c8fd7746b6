#!/usr/bin/env bash
# One command from a fresh clone to a passing test suite: installs the pinned stack with the
# test tools into .venv, checks style with ruff, then runs pytest. Arguments go to pytest.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup_env.sh"
cd "$REPO"
"$REPO/.venv/bin/ruff" check .
exec "$REPO/.venv/bin/python" -m pytest "$@"
