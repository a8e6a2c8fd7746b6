"""A whole report computed before anything is written, then written file by file."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.analysis.report.plot import plot_png
from pipeline.analysis.report.stats import CONFIDENCE, DEFAULT_REPS, group_settings
from pipeline.analysis.report.tables import (
    CSV_COLUMNS,
    RUNS_CSV_COLUMNS,
    _fmt,
    csv_text,
    for_envs,
    markdown_table,
    read_baselines,
    read_references,
    setting_row,
)
from pipeline.analysis.runs import ReportError, load_runs
from pipeline.run.files import fsync_path, replace_durably

PNG_FILE = "learning_curves.png"
MARKDOWN_FILE = "report.md"
CSV_FILE = "report.csv"
RUNS_CSV_FILE = "runs.csv"


def default_out_dir(paths: Sequence[str | Path]) -> Path:
    """`report/` in the arguments' deepest common directory: the sweep directory for a sweep,
    the parent of the seeds' directories when they are named one by one."""
    common = Path(os.path.commonpath([str(Path(p).resolve()) for p in paths]))
    if common == Path(common.anchor):
        raise ReportError("the runs share no directory below the root: pass --out DIR")
    return common / "report"


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dataclass
class Report:
    """Everything a report writes, computed before anything is written (so an error leaves
    nothing behind), and what the terminal shows."""

    out: Path
    files: dict[str, bytes]
    table: str
    warnings: list[str]


def _methods_text(reps: int, threshold: float | None) -> str:
    text = (
        "Final return: each seed's last evaluation (mean return over its eval episodes); "
        "mean ± sample std (n - 1) across seeds. IQM: 25% trimmed mean of the seeds' final "
        f"returns with a {CONFIDENCE:.0%} percentile stratified bootstrap CI (rliable, "
        f"{reps:,} resamples; below 4 seeds it equals the mean). Best: each seed's best "
        "evaluation, averaged / maximum over seeds."
    )
    if threshold is not None:
        text += (
            " Steps to threshold: the first evaluation at or above it; median over all seeds, "
            "a seed that never reaches it counting as infinite ('-' when half or more never do)."
        )
    return text + (
        " Curve: each seed interpolated linearly between its own evaluations (never past its "
        f"last), mean over the seeds present at each step, {CONFIDENCE:.0%} percentile bootstrap "
        "CI over those seeds. Baselines: std over episodes. References: published figures, "
        "not rerun here."
    )


def build_report(
    run_dirs: Sequence[str | Path],
    argv: Sequence[str],
    out: str | Path | None = None,
    threshold: float | None = None,
    baselines: Path | None = None,
    references: Path | None = None,
    reps: int = DEFAULT_REPS,
) -> Report:
    """Reads the runs and the optional files, computes every number, renders every file.
    `argv`: the command line, quoted in report.md."""
    if reps < 100:
        raise ReportError(f"--reps {reps}: use at least 100 bootstrap resamples")
    warn: list[str] = []
    notes: list[str] = []  # for report.md only: expected, not worth a warning
    runs = load_runs(run_dirs, warn)
    out = Path(out) if out else default_out_dir(run_dirs)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} is a file: choose a directory")
    settings, common = group_settings(runs, warn)
    envs = {r.env for r in runs if r.env}
    baseline_rows, reference_rows = [], []
    if baselines:
        baseline_rows = for_envs(read_baselines(baselines), envs, "--baselines", notes)
    if references:
        reference_rows = for_envs(read_references(references), envs, "--references", notes)
    rows = [setting_row(s, threshold, reps, warn) for s in settings]
    rows += baseline_rows + reference_rows
    png = plot_png(settings, baseline_rows, reference_rows, threshold, reps)

    run_rows = []
    for setting in settings:
        for run in setting.runs:
            reach = run.steps_to(threshold) if threshold is not None else math.inf
            run_rows.append(
                {
                    "setting": setting.label,
                    "seed": run.seed,
                    "run_dir": _display(run.path),
                    "evaluations": len(run.steps),
                    "last_eval_env_steps": run.last_step,
                    "total_env_steps": run.total_env_steps,
                    "final_return": run.final_return,
                    "best_return": run.best_return,
                    "steps_to_threshold": reach if math.isfinite(reach) else None,
                }
            )

    table = markdown_table(rows, threshold)
    shared = f" Bindings shared by every setting: `{'`, `'.join(common)}`." if common else ""
    md = [
        f"# Report: {len(settings)} setting(s), {len(runs)} run(s)",
        "",
        f"`python -m pipeline.report {' '.join(argv)}`",
        "",
        f"Environment: {', '.join(sorted(envs)) or 'unknown'}.{shared}",
        "",
        f"![learning curves]({PNG_FILE})",
        "",
        table,
        _methods_text(reps, threshold),
        "",
    ]
    if warn or notes:
        md += ["## Notes", ""] + [f"- {line}" for line in warn + notes] + [""]
    md += [
        "## Runs",
        "",
        "| setting | seed | run directory | evals | last eval at | final return | best return |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in run_rows:
        md.append(
            f"| {r['setting']} | {r['seed'] if r['seed'] is not None else '?'} | "
            f"{r['run_dir']} | {r['evaluations']} | {r['last_eval_env_steps']:,} | "
            f"{_fmt(r['final_return'])} | {_fmt(r['best_return'])} |"
        )
    files = {
        PNG_FILE: png,
        MARKDOWN_FILE: ("\n".join(md) + "\n").encode(),
        CSV_FILE: csv_text(
            CSV_COLUMNS, [{c: getattr(r, c) for c in CSV_COLUMNS} for r in rows]
        ).encode(),
        RUNS_CSV_FILE: csv_text(RUNS_CSV_COLUMNS, run_rows).encode(),
    }
    return Report(out=out, files=files, table=table, warnings=warn)


def write_files(out: Path, files: dict[str, bytes]) -> None:
    """Temporary siblings, fsynced, then durable renames: a reader never sees half a report,
    and a crash leaves each file old or new."""
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        tmp = out / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        fsync_path(tmp)
        replace_durably(tmp, out / name)
