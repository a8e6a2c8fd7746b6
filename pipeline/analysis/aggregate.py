"""Aggregates a sweep by setting across seeds (`python -m pipeline.sweep --aggregate`).

Reads `<sweep_dir>/sweep.json` (written by `pipeline.sweep`) and each run's `metrics.jsonl`,
and writes `aggregate.md` and `aggregate.csv` next to it. Only finished runs (an evaluation
at `total_env_steps`) count in the numbers; missing and unfinished runs are listed, so a
partial sweep can be aggregated while it runs. Imports nothing heavy (no TensorFlow): it also
runs as a small Slurm job after the array.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.analysis.runs import Run, load_run, sample_std
from pipeline.run.files import atomic_write_text

SWEEP_FILE = "sweep.json"
MARKDOWN_FILE = "aggregate.md"
CSV_FILE = "aggregate.csv"


def load_sweep(sweep_dir: Path) -> dict[str, Any]:
    """The expanded sweep; a missing or unreadable sweep.json is the caller's error to report."""
    return json.loads((Path(sweep_dir) / SWEEP_FILE).read_text(encoding="utf-8"))


@dataclass
class RunResult:
    """One run of the sweep: its place in sweep.json and what its directory holds."""

    run_dir: str
    seed: int
    total_env_steps: int | None
    run: Run

    @property
    def env_steps(self) -> int:
        return self.run.last_step

    @property
    def finished(self) -> bool:
        return self.run.finished(self.total_env_steps)

    @property
    def status(self) -> str:
        if self.finished:
            return "finished"
        if not len(self.run.steps):
            return "missing (no evaluation in metrics.jsonl yet)"
        total = f"{self.total_env_steps:,}" if self.total_env_steps else "?"
        return f"unfinished ({self.env_steps:,} of {total} env steps)"


@dataclass
class SettingResult:
    """All seeds of one grid setting."""

    slug: str
    setting: dict[str, str]
    runs: list[RunResult] = field(default_factory=list)

    @property
    def finished(self) -> list[RunResult]:
        return [run for run in self.runs if run.finished]

    def stats(self) -> dict[str, float | None]:
        """Mean and sample std (`runs.sample_std`: n - 1, None for one seed) of the finished
        seeds' final returns, and the mean of their best; None when none finished."""
        done = [result.run for result in self.finished]
        if not done:
            return {"final_mean": None, "final_std": None, "best_mean": None}
        finals = np.array([run.final_return for run in done])
        std = sample_std(finals)
        return {
            "final_mean": float(finals.mean()),
            "final_std": std if math.isfinite(std) else None,
            "best_mean": float(np.mean([run.best_return for run in done])),
        }


def collect(sweep_dir: Path, sweep: dict[str, Any] | None = None) -> list[SettingResult]:
    """Groups the sweep's runs by setting, in sweep.json order, with their metrics."""
    sweep_dir = Path(sweep_dir)
    sweep = sweep if sweep is not None else load_sweep(sweep_dir)
    settings: dict[str, SettingResult] = {}
    for run in sweep["runs"]:
        result = settings.setdefault(
            run["slug"], SettingResult(slug=run["slug"], setting=dict(run["setting"]))
        )
        result.runs.append(
            RunResult(
                run_dir=run["run_dir"],
                seed=int(run["seed"]),
                total_env_steps=run.get("total_env_steps"),
                run=load_run(sweep_dir / run["run_dir"], explicit=True),
            )
        )
    return list(settings.values())


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _env_steps(result: SettingResult) -> int | None:
    totals = {run.total_env_steps for run in result.runs}
    if len(totals) == 1 and None not in totals:
        return totals.pop()
    done = result.finished
    return max(run.env_steps for run in done) if done else None


def to_markdown(sweep_dir: Path, sweep: dict[str, Any], results: list[SettingResult]) -> str:
    lines = [
        f"# Sweep {Path(sweep_dir).name}",
        "",
        f"gin files: {', '.join(f'`{g}`' for g in sweep.get('gin_files', []))}  ",
        "fixed bindings: "
        + (", ".join(f"`{b}`" for b in sweep.get("gin_bindings", [])) or "none")
        + "  ",
        f"seeds: {', '.join(str(s) for s in sweep.get('seeds', []))}",
        "",
        "Final and best are eval returns (each seed's last and best evaluation); mean +- "
        "sample std (n - 1) over the finished seeds, best = mean over those seeds.",
        "",
        "| setting | seeds finished | final return (mean +- std) | best return (mean) "
        "| env steps |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        stats = result.stats()
        final = _fmt(stats["final_mean"]) or "-"
        if stats["final_std"] is not None:
            final += f" +- {stats['final_std']:.1f}"
        best = _fmt(stats["best_mean"]) or "-"
        steps = _env_steps(result)
        lines.append(
            f"| `{result.slug}` | {len(result.finished)}/{len(result.runs)} | {final} | {best} "
            f"| {'-' if steps is None else f'{steps:,}'} |"
        )
    pending = [run for result in results for run in result.runs if not run.finished]
    lines.append("")
    if pending:
        lines.append(f"Not finished ({len(pending)}):")
        lines.append("")
        lines.extend(f"- `{run.run_dir}`: {run.status}" for run in pending)
    else:
        lines.append("All runs finished.")
    return "\n".join(lines) + "\n"


def to_csv(results: list[SettingResult]) -> str:
    names = sorted({name for result in results for name in result.setting})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "setting",
            *names,
            "seeds_finished",
            "seeds_total",
            "final_return_mean",
            "final_return_std",
            "best_return_mean",
            "env_steps",
            "not_finished",
        ]
    )
    for result in results:
        stats = result.stats()
        steps = _env_steps(result)
        writer.writerow(
            [
                result.slug,
                *(result.setting.get(name, "") for name in names),
                len(result.finished),
                len(result.runs),
                "" if stats["final_mean"] is None else repr(stats["final_mean"]),
                "" if stats["final_std"] is None else repr(stats["final_std"]),
                "" if stats["best_mean"] is None else repr(stats["best_mean"]),
                "" if steps is None else steps,
                ";".join(run.run_dir for run in result.runs if not run.finished),
            ]
        )
    return out.getvalue()


def aggregate(sweep_dir: Path | str) -> tuple[Path, list[SettingResult]]:
    """Writes aggregate.md and aggregate.csv for a sweep directory; returns the .md path."""
    sweep_dir = Path(sweep_dir)
    sweep = load_sweep(sweep_dir)
    results = collect(sweep_dir, sweep)
    atomic_write_text(sweep_dir / CSV_FILE, to_csv(results))
    markdown = sweep_dir / MARKDOWN_FILE
    atomic_write_text(markdown, to_markdown(sweep_dir, sweep, results))
    return markdown, results
