"""Does a CartPole config solve CartPole-v1, and how fast? Runs seeds, writes a report.

Solved means: mean greedy eval return >= --threshold (475) over the run's evaluation
episodes (20 in dqn_cartpole.gin) at some evaluation within --budget environment steps.
For each seed the report gives the steps to solve, the wall time to solve (from the
eval summaries' timestamps), the final return and the whole run's wall time.

    python scripts/bench/cartpole_solve.py                     # dqn_cartpole.gin, seeds 0-4
    python scripts/bench/cartpole_solve.py --gin_file=ddqn_cartpole.gin --seeds=0,1,2

Run it on an otherwise idle machine with --jobs=1 when the wall times matter; --jobs=2
runs two seeds at once (faster, but each seed's wall time is then inflated).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gin
from tensorboard.backend.event_processing import event_accumulator

import pipeline  # noqa: F401  (imported first: keeps TensorFlow quiet)
from pipeline import config

REPO = Path(__file__).resolve().parents[2]


def seed_setting(gin_file: str, bindings: list[str]) -> str:
    """`train.seed` or `train_on_policy.seed`: the seed of the loop the gin file runs (the
    CLI refuses a binding of the other one, which would change nothing)."""

    gin.clear_config()
    config.parse([gin_file], bindings)
    setting = config.run_settings().binding("seed")
    gin.clear_config()
    return setting


def run_seed(
    gin_file: str, seed: int, bindings: list[str], run_dir: Path, seed_binding: str | None = None
) -> dict:
    """One `pipeline.train` run; `seed_binding` (default: `seed_setting`) names the seed."""
    seed_binding = seed_binding or seed_setting(gin_file, bindings)
    command = [
        sys.executable,
        "-m",
        "pipeline.train",
        f"--gin_file={gin_file}",
        f"--gin_bindings={seed_binding}={seed}",
        f"--root_dir={run_dir}",
        *[f"--gin_bindings={b}" for b in bindings],
    ]
    started = time.time()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.time() - started
    if result.returncode != 0:
        raise SystemExit(f"seed {seed} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"seed": seed, "rows": rows, "wall_s": wall, "started": started}


def eval_wall_times(run_dir: Path) -> dict[int, float]:
    """env_steps -> wall-clock time at which that evaluation's summary was written."""
    accumulator = event_accumulator.EventAccumulator(
        str(run_dir / "eval"), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return {int(e.step): e.wall_time for e in accumulator.Tensors("return_mean")}


def first_at_least(rows: list[dict], threshold: float, budget: int) -> dict | None:
    """The first evaluation row within `budget` env steps whose mean reaches `threshold`."""
    return next(
        (r for r in rows if r["env_steps"] <= budget and r["eval_return_mean"] >= threshold),
        None,
    )


def summarize(result: dict, run_dir: Path, threshold: float, budget: int) -> dict:
    solved = first_at_least(result["rows"], threshold, budget)
    wall_at = eval_wall_times(run_dir)
    return {
        "seed": result["seed"],
        "solved": solved is not None,
        "steps_to_solve": solved["env_steps"] if solved else None,
        "wall_to_solve_s": round(wall_at[solved["env_steps"]] - result["started"], 1)
        if solved
        else None,
        "best_return": max(r["eval_return_mean"] for r in result["rows"]),
        "final_return": result["rows"][-1]["eval_return_mean"],
        "final_env_steps": result["rows"][-1]["env_steps"],
        "wall_s": round(result["wall_s"], 1),
    }


def markdown(
    gin_file: str, bindings: list[str], rows: list[dict], threshold: float, budget: int, jobs: int
) -> str:
    solved = [r for r in rows if r["solved"]]
    lines = [
        f"# {gin_file}: CartPole-v1 solve check",
        "",
        f"Solved = mean greedy eval return >= {threshold:g} within {budget:,} env steps. "
        f"Seeds run {jobs} at a time.",
        f"Extra bindings: {bindings or 'none'}",
        "",
        "| seed | solved | steps to solve | wall to solve (s) | best return | final return "
        "| run wall (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        steps = f"{r['steps_to_solve']:,}" if r["solved"] else "-"
        wall = f"{r['wall_to_solve_s']:.1f}" if r["solved"] else "-"
        lines.append(
            f"| {r['seed']} | {'yes' if r['solved'] else 'no'} | {steps} | {wall} | "
            f"{r['best_return']:.1f} | {r['final_return']:.1f} | {r['wall_s']:.1f} |"
        )
    lines.append("")
    lines.append(f"Solved in {len(solved)} of {len(rows)} seeds.")
    if solved:
        steps = [r["steps_to_solve"] for r in solved]
        walls = [r["wall_to_solve_s"] for r in solved]
        lines.append(
            f"Among solved seeds: median steps to solve {statistics.median(steps):,.0f}, "
            f"median wall to solve {statistics.median(walls):.1f} s."
        )
    lines.append(f"Median run wall time: {statistics.median(r['wall_s'] for r in rows):.1f} s.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gin_file", default="dqn_cartpole.gin")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--gin_bindings", action="append", default=[])
    parser.add_argument("--threshold", type=float, default=475.0)
    parser.add_argument("--budget", type=int, default=50_000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "cartpole_solve")
    args = parser.parse_args()

    seeds = [int(s) for s in args.seeds.split(",")]
    out = args.out / Path(args.gin_file).stem
    if out.exists():
        raise SystemExit(f"error: {out} exists: remove it or pass another --out")
    run_dirs = {seed: out / f"seed_{seed}" for seed in seeds}
    seed_binding = seed_setting(args.gin_file, args.gin_bindings)  # gin is not thread-safe
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(
            pool.map(
                lambda s: run_seed(args.gin_file, s, args.gin_bindings, run_dirs[s], seed_binding),
                seeds,
            )
        )
    rows = [summarize(r, run_dirs[r["seed"]], args.threshold, args.budget) for r in results]
    report = markdown(
        args.gin_file, args.gin_bindings, rows, args.threshold, args.budget, args.jobs
    )
    (out / "report.md").write_text(report)
    (out / "report.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(report)
    print(f"report written to {out / 'report.md'}")


if __name__ == "__main__":
    main()
