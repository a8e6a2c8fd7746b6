"""Every `gin/*_cartpole.gin`, 5 seeds each, against the budget its header states.

Runs `cartpole_solve.py` once per config (the budget is read from the header line
"... within N env steps"; configs already in --out are reused) and writes one table: per
config, seeds solved, median steps to solve, median final return, median wall time per run.

    .venv/bin/python scripts/bench/cartpole_all.py [--seeds=0,1,2,3,4] [--out=runs/bench/all]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUDGET = re.compile(r"within ([\d,]+)\s+env steps")


def budget_of(gin_file: Path) -> int:
    text = " ".join(line.lstrip("#") for line in gin_file.read_text().splitlines())
    match = BUDGET.search(" ".join(text.split()))
    if match is None:
        raise SystemExit(f"error: {gin_file.name} states no budget ('within N env steps')")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--configs", default="", help="comma-separated gin names; default all")
    parser.add_argument("--jobs", type=int, default=1, help="seeds at once")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "cartpole_all")
    args = parser.parse_args()
    configs = (
        [REPO / "gin" / name for name in args.configs.split(",")]
        if args.configs
        else sorted((REPO / "gin").glob("*_cartpole.gin"))
    )
    lines = [
        f"Seeds {args.seeds}; solved = mean greedy eval return >= 475 over 20 episodes at an "
        "evaluation within the config's budget.",
        "",
        "| config | budget (env steps) | solved | median steps to solve | median final return "
        "| median wall per run (s) |",
        "|---|---|---|---|---|---|",
    ]
    for gin_file in configs:
        budget = budget_of(gin_file)
        command = [
            sys.executable,
            str(REPO / "scripts" / "bench" / "cartpole_solve.py"),
            f"--gin_file={gin_file.name}",
            f"--seeds={args.seeds}",
            f"--budget={budget}",
            f"--jobs={args.jobs}",
            f"--out={args.out}",
        ]
        report = args.out / gin_file.stem / "report.json"
        if not report.exists():  # an earlier, interrupted call may have done some configs
            print("running", " ".join(command), flush=True)
            subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        rows = json.loads(report.read_text())
        solved = [r for r in rows if r["solved"]]
        steps = f"{statistics.median(r['steps_to_solve'] for r in solved):,.0f}" if solved else "-"
        lines.append(
            f"| {gin_file.name} | {budget:,} | {len(solved)}/{len(rows)} | {steps} | "
            f"{statistics.median(r['final_return'] for r in rows):.1f} | "
            f"{statistics.median(r['wall_s'] for r in rows):.1f} |"
        )
        print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    (args.out / "report.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
