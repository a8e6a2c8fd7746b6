#!/usr/bin/env bash
# One command from a fresh clone to a trained agent: installs a pinned stack into .venv
# (scripts/setup_env.sh picks it), then trains DQN on CartPole-v1 (gin/dqn_cartpole.gin) to the
# end and prints the final evaluation and the run directory. Extra arguments go to
# pipeline.train, e.g.
#   scripts/quickstart.sh --gin_bindings=train.seed=1
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/setup_env.sh"
cd "$REPO"
exec "$VENV/bin/python" -m pipeline.train --gin_file=dqn_cartpole.gin "$@"
