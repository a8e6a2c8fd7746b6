"""Ours against Stable-Baselines3's tuned DQN on CartPole-v1, seed by seed in one run.

For each seed, one after the other on the same machine: `pipeline.train` with
--gin_file (default dqn_cartpole.gin), then SB3 2.9.2's DQN with the RL-Zoo CartPole
settings (`sb3_cartpole_reference.py`, in SB3's own virtual environment, created here on
first use with pinned CPU PyTorch). Same protocol for both: 50k env steps, greedy eval on
20 episodes every 2,500 steps and at step 0, no early stopping. Prints per seed and as
medians: env steps and wall time to the first eval >= 475, the final eval at 50k, and the
ratios ours / SB3. Wall times count from each process's start, imports included.

    .venv/bin/python scripts/bench/cartpole_vs_sb3.py                    # seeds 0-4
    .venv/bin/python scripts/bench/cartpole_vs_sb3.py --seeds=0,1 --gin_file=ddqn_cartpole.gin

Run it on an otherwise idle machine: the wall times are the point.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cartpole_solve import REPO, first_at_least, run_seed, summarize  # noqa: E402

SB3_PINS = ["torch==2.13.0", "stable-baselines3==2.9.2", "gymnasium==1.3.0", "numpy<2"]
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def ensure_sb3_venv(venv: Path, python: str, torch_index: str) -> Path:
    """SB3's interpreter, creating its virtual environment (isolated from ours) if missing."""
    interpreter = venv / "bin" / "python"
    if interpreter.exists():
        return interpreter
    print(f"creating SB3's virtual environment in {venv} (once; a few minutes)", flush=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    index = ["--extra-index-url", torch_index] if torch_index else []
    subprocess.run([str(interpreter), "-m", "pip", "install", "-q", *index, *SB3_PINS], check=True)
    return interpreter


def run_sb3(interpreter: Path, seed: int, budget: int) -> dict:
    script = REPO / "scripts" / "bench" / "sb3_cartpole_reference.py"
    result = subprocess.run(
        [str(interpreter), str(script), f"--seed={seed}", f"--budget={budget}"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"SB3 seed {seed} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def sb3_summary(result: dict, threshold: float, budget: int) -> dict:
    solved = first_at_least(result["rows"], threshold, budget)
    return {
        "seed": result["seed"],
        "solved": solved is not None,
        "steps_to_solve": solved["env_steps"] if solved else None,
        "wall_to_solve_s": solved["wall_s"] if solved else None,
        "final_return": result["rows"][-1]["eval_return_mean"],
        "final_env_steps": result["rows"][-1]["env_steps"],
        "wall_s": result["wall_s"],
    }


def _median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None]
    return statistics.median(values) if values else None


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def report(ours: list[dict], sb3: list[dict], args: argparse.Namespace) -> str:
    threshold = args.threshold
    lines = [
        f"# CartPole-v1: {args.gin_file} against SB3 2.9.2 RL-Zoo DQN",
        "",
        f"Seeds {args.seeds}, interleaved (ours, then SB3, per seed); {args.budget:,} env steps;"
        f" greedy eval on 20 episodes every 2,500 steps; first eval >= {threshold:g}.",
        f"Extra bindings: {args.gin_bindings or 'none'}",
        "",
        "| seed | ours: steps | SB3: steps | ours: wall (s) | SB3: wall (s) | ours: final | "
        "SB3: final |",
        "|---|---|---|---|---|---|---|",
    ]
    for o, s in zip(ours, sb3, strict=True):
        lines.append(
            f"| {o['seed']} | {_cell(o['steps_to_solve'], ',')} | "
            f"{_cell(s['steps_to_solve'], ',')} | {_cell(o['wall_to_solve_s'], '.1f')} | "
            f"{_cell(s['wall_to_solve_s'], '.1f')} | {o['final_return']:.1f} | "
            f"{s['final_return']:.1f} |"
        )
    lines.append("")
    for name, rows in (("ours", ours), ("SB3", sb3)):
        finals = sum(r["final_return"] >= threshold for r in rows)
        lines.append(
            f"- {name}: solved {sum(r['solved'] for r in rows)}/{len(rows)}; median steps to "
            f"first >= {threshold:g}: {_cell(_median(rows, 'steps_to_solve'), ',.0f')}; median "
            f"wall: {_cell(_median(rows, 'wall_to_solve_s'), '.1f')} s; final >= "
            f"{threshold:g}: {finals}/{len(rows)}; median run wall "
            f"{statistics.median(r['wall_s'] for r in rows):.1f} s"
        )
    for key, label in (("steps_to_solve", "steps"), ("wall_to_solve_s", "wall")):
        a, b = _median(ours, key), _median(sb3, key)
        ratio = f"{a / b:.2f}" if a is not None and b else "-"
        lines.append(f"- ratio ours / SB3, median {label} to first >= {threshold:g}: {ratio}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gin_file", default="dqn_cartpole.gin")
    parser.add_argument("--gin_bindings", action="append", default=[])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--threshold", type=float, default=475.0)
    parser.add_argument("--budget", type=int, default=50_000)
    parser.add_argument("--sb3_venv", type=Path, default=REPO / "runs" / ".sb3-venv")
    parser.add_argument("--sb3_python", default="python3.11", help="creates SB3's venv")
    parser.add_argument(
        "--torch_index", default=TORCH_CPU_INDEX, help="extra index for CPU torch ('' = none)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "cartpole_vs_sb3")
    args = parser.parse_args()

    out = args.out / Path(args.gin_file).stem
    if out.exists():
        raise SystemExit(f"error: {out} exists: remove it or pass another --out")
    interpreter = ensure_sb3_venv(args.sb3_venv, args.sb3_python, args.torch_index)
    ours, sb3 = [], []
    for seed in (int(s) for s in args.seeds.split(",")):
        run_dir = out / f"ours_seed_{seed}"
        result = run_seed(args.gin_file, seed, args.gin_bindings, run_dir)
        ours.append(summarize(result, run_dir, args.threshold, args.budget))
        sb3_result = run_sb3(interpreter, seed, args.budget)
        sb3.append(sb3_summary(sb3_result, args.threshold, args.budget))
        print(f"seed {seed}: ours {ours[-1]}\n        SB3 {sb3[-1]}", flush=True)
    text = report(ours, sb3, args)
    (out / "report.md").write_text(text)
    (out / "report.json").write_text(json.dumps({"ours": ours, "sb3": sb3}, indent=2) + "\n")
    print(text)
    print(f"report written to {out / 'report.md'}")


if __name__ == "__main__":
    main()
