"""Deprecated: the Atari-100k bench is `python -m pipeline.atari100k` (docs/atari.md); this runs it
with this script's old defaults (Breakout, drq_breakout.gin). Flags are the module's."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
print(
    "warning: scripts/bench/atari100k.py is deprecated: use python -m pipeline.atari100k",
    file=sys.stderr,
)
sys.argv[1:] = ["--games=Breakout", "--gin_file=drq_breakout.gin", *sys.argv[1:]]
from pipeline.atari100k.__main__ import run  # noqa: E402

run()
