#!/usr/bin/env bash
# One command from a fresh clone to a passing test suite: installs a pinned stack with the
# test tools (scripts/setup_env.sh picks it), checks style with ruff, builds the documentation
# site with mkdocs --strict (a broken link or anchor, or a page missing from the nav, fails),
# then runs pytest. Arguments go to pytest.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/setup_env.sh"
cd "$REPO"
"$VENV/bin/ruff" check .
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict --quiet --config-file "$REPO/mkdocs.yml" --site-dir "$site"
rm -rf "$site"
trap - EXIT
exec "$VENV/bin/python" -m pytest "$@"
