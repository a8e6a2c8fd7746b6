"""Seeded learning checks, one per agent family: what each runs and the bar it must clear.

Why a module of its own: the checks in test_learning.py and the script that measured their
thresholds run the very same `Check` through `run_check`, so a re-measurement (after a change
to an agent or a stack upgrade) uses what the test uses:

    python -m tests.agents.learning_checks ppo c51 --seeds 0 1 2

prints each run's eval curve, its best eval mean and its wall time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import gin

from pipeline import config
from pipeline.loops import off_policy
from pipeline.run import rundir

SEED = 0  # the seed the tests run; the thresholds were checked on others too (test_learning.py)


@dataclass(frozen=True)
class Check:
    """One family's check: a gin file as users run it, shortened by bindings only."""

    family: str
    gin_file: str
    bindings: tuple[str, ...]
    threshold: float  # the best eval mean over the run must reach it
    random_return: float  # what a random or untrained policy gets; see test_learning.py

    @property
    def loop(self) -> str:
        """`train` or `train_on_policy`, as the bindings name it: the seed is bound there."""
        return self.bindings[0].split(".")[0]


def run_check(check: Check, run_dir: Path, seed: int = SEED) -> list[dict]:
    """Trains in this process (one TF start-up for all checks); returns the eval rows."""
    gin.clear_config()  # the measuring script runs several checks in one process
    config.parse([check.gin_file], [*check.bindings, f"{check.loop}.seed={seed}"])
    loop = off_policy.build_loop(run_dir)
    rundir.prepare(run_dir)
    return loop.run()


def best_eval(rows: list[dict]) -> float:
    """The best greedy eval mean after training started (the step-0 row is the untrained net)."""
    return max(row["eval_return_mean"] for row in rows if row["env_steps"] > 0)


def curve(rows: list[dict]) -> str:
    """`env_steps:eval mean` pairs, so a failure shows how the run went, not just its best."""
    return " ".join(f"{row['env_steps']}:{row['eval_return_mean']:.1f}" for row in rows)


def main() -> None:
    """Measures checks over seeds (see the module docstring)."""
    from tests.agents.test_learning import CHECKS

    by_family = {check.family: check for check in CHECKS}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", help=f"default: all of {', '.join(by_family)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[SEED])
    parser.add_argument("--bind", nargs="*", default=[], help="extra gin bindings, applied last")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("PIPELINE_SECRET_FILE", str(Path(tmp) / "secret"))
        for family in args.families or list(by_family):
            check = by_family[family]
            check = replace(check, bindings=(*check.bindings, *args.bind))
            for seed in args.seeds:
                start = time.monotonic()
                rows = run_check(check, Path(tmp) / f"{family}-{seed}", seed)
                seconds = time.monotonic() - start
                verdict = "pass" if best_eval(rows) >= check.threshold else "FAIL"
                print(
                    f"{family} seed {seed}: best {best_eval(rows):.1f} (threshold "
                    f"{check.threshold:g}, random {check.random_return:g}) {verdict} "
                    f"{seconds:.1f}s | {curve(rows)}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
