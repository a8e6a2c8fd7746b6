#!/usr/bin/env bash
# Usage: scripts/docs.sh [mkdocs serve options]   builds the docs/ site and serves it at http://127.0.0.1:8000
# Installs the pinned stack with the docs tools first (scripts/setup_env.sh), as scripts/test.sh does.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/setup_env.sh"
cd "$REPO"
NO_MKDOCS_2_WARNING=1 exec "$VENV/bin/mkdocs" serve --strict --config-file "$REPO/mkdocs.yml" "$@"
