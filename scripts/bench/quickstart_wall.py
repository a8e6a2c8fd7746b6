"""The quickstart's training, timed side by side against an earlier revision of this repository.

For `--pairs` rounds, one after the other: `python -m pipeline.train --gin_file=dqn_cartpole.gin`
(what `scripts/quickstart.sh` runs after its install) from this checkout, then from a git
worktree of `--baseline`, both with this checkout's interpreter and each into a fresh run
directory. Prints per pair the wall seconds and the final eval of both, then the median of the
per-pair ratios ours / baseline (pairing keeps the ratio fair when the machine's speed drifts).

The default baseline, 3fc6ef4, is the quickstart's code and settings before the changes that
shortened its training (the commit before the first of them).

    .venv/bin/python scripts/bench/quickstart_wall.py                  # 4 pairs against 3fc6ef4
    .venv/bin/python scripts/bench/quickstart_wall.py --baseline=b9cc9b5^ --pairs=3

Run it on an otherwise idle machine: the wall times are the point.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BASELINE = "3fc6ef4"
FINAL = re.compile(r"^final eval return (\S+)", re.MULTILINE)


def resolve(revision: str) -> str:
    """The full commit of `revision`; one line and exit 2 if git does not know it."""
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        print(
            f"quickstart_wall.py: --baseline={revision} is not a commit of {REPO}: pass a "
            "revision `git log` shows (a hash, a tag, HEAD~3)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return found.stdout.strip()


def train_once(checkout: Path, run_dir: Path) -> tuple[float, str]:
    """Wall seconds of one quickstart training in `checkout`, and its final eval return."""
    command = [sys.executable, "-m", "pipeline.train", "--gin_file=dqn_cartpole.gin"]
    started = time.monotonic()
    result = subprocess.run(
        [*command, f"--root_dir={run_dir}"], cwd=checkout, capture_output=True, text=True
    )
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{checkout} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    final = FINAL.search(result.stdout + result.stderr)
    return wall, final.group(1) if final else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision to time against")
    parser.add_argument("--pairs", type=int, default=4, help="alternating pairs of runs")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error(f"--pairs={args.pairs}: give at least 1")
    commit = resolve(args.baseline)
    with tempfile.TemporaryDirectory(prefix="quickstart_wall.") as tmp:
        worktree = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--quiet", str(worktree), commit],
            cwd=REPO,
            check=True,
        )
        try:
            print(f"ours: {REPO} (HEAD plus any uncommitted changes); baseline: {commit[:10]}")
            print(f"{'pair':>4} {'ours s':>8} {'final':>7} {'base s':>8} {'final':>7} {'ratio':>6}")
            ratios = []
            for pair in range(args.pairs):
                ours, ours_final = train_once(REPO, Path(tmp) / f"ours{pair}")
                base, base_final = train_once(worktree, Path(tmp) / f"base{pair}")
                ratios.append(ours / base)
                print(
                    f"{pair:>4} {ours:8.1f} {ours_final:>7} {base:8.1f} {base_final:>7} "
                    f"{ratios[-1]:6.3f}",
                    flush=True,
                )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO)
    print(
        f"median wall ratio ours / baseline over {args.pairs} pairs: "
        f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})"
    )


if __name__ == "__main__":
    main()
