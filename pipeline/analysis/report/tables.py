"""The aggregate table: one row per setting, baseline policy and published reference point,
as Markdown and CSV; baselines and references read from CSV or Markdown files."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.analysis.report.stats import CONFIDENCE, Setting, iqm_with_ci
from pipeline.analysis.runs import ReportError, sample_std

REFERENCE_COLUMNS = ("source", "env", "algorithm", "env_steps", "return", "note")


CSV_COLUMNS = (
    "setting",
    "kind",
    "n",
    "n_unit",
    "env_steps",
    "final_return_mean",
    "final_return_std",
    "iqm",
    "iqm_ci_low",
    "iqm_ci_high",
    "best_return_mean",
    "best_return_max",
    "threshold",
    "steps_to_threshold_median",
    "never_reached",
    "note",
)


RUNS_CSV_COLUMNS = (
    "setting",
    "seed",
    "run_dir",
    "evaluations",
    "last_eval_env_steps",
    "total_env_steps",
    "final_return",
    "best_return",
    "steps_to_threshold",
)


@dataclass
class Row:
    """One line of the aggregate table: a setting, a baseline policy or a published point."""

    setting: str
    kind: str  # "setting", "baseline" or "reference"
    n: int | None = None
    n_unit: str = ""
    env_steps: str = ""  # "50000" or "30000-50000" when seeds end apart
    final_return_mean: float = math.nan
    final_return_std: float = math.nan
    iqm: float = math.nan
    iqm_ci_low: float = math.nan
    iqm_ci_high: float = math.nan
    best_return_mean: float = math.nan
    best_return_max: float = math.nan
    threshold: float | None = None
    steps_to_threshold_median: float = math.nan
    never_reached: int | None = None
    note: str = ""
    env: str = ""
    reference_steps: float = math.nan


def env_key(name: str) -> str:
    """`CartPole-v1`, `BreakoutNoFrameskip-v4`, `ALE/Breakout-v5`, `Breakout (cap 27,000
    frames)` -> `cartpole`, `breakout`: baseline and reference files name envs loosely."""
    name = name.split("(")[0].strip().lower().rsplit("/", 1)[-1]
    name = re.sub(r"-v\d+$", "", name).replace("noframeskip", "")
    return re.sub(r"[^a-z0-9]", "", name)


def _number(text: str, what: str) -> float:
    try:
        return float(text.strip().replace(",", "").replace("_", ""))
    except ValueError:
        raise ReportError(f"{what}: {text.strip()!r} is not a number") from None


def read_table(path: Path, flag: str) -> list[dict[str, str]]:
    """Rows of a CSV file, or of the first Markdown table in any other file; keys lowercased."""
    if not path.is_file():
        raise ReportError(f"{flag} {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        lines = [ln.strip() for ln in text.splitlines()]
        start = next((i for i, ln in enumerate(lines) if ln.startswith("|")), None)
        if start is None:
            raise ReportError(f"{flag} {path} holds no Markdown table (or name it .csv)")
        table = []
        for ln in lines[start:]:
            if not ln.startswith("|"):
                break
            table.append([cell.strip() for cell in ln.strip("|").split("|")])
        header, body = table[0], [r for r in table[1:] if not set("".join(r)) <= set("-: ")]
        rows = [dict(zip(header, r, strict=False)) for r in body]
    return [{(k or "").strip().lower(): (v or "").strip() for k, v in r.items()} for r in rows]


def read_baselines(path: Path) -> list[Row]:
    """Policies evaluated without training (random, scripted): CSV or Markdown with policy,
    env, mean, std, episodes; a `return mean ± std` column (as scripts/bench/baselines.py
    writes it) also works."""
    rows = []
    for line, record in enumerate(read_table(path, "--baselines"), 2):
        where = f"--baselines {path} row {line - 1}"
        means = [k for k in record if k == "mean"] + [k for k in record if "return mean" in k]
        mean_col = (means or [k for k in record if "mean" in k] or [None])[0]
        if "policy" not in record or mean_col is None:
            raise ReportError(
                f"--baselines {path} needs columns policy, env, mean, std, episodes "
                f"(found: {', '.join(record)})"
            )
        mean_text, _, std_text = re.split(r"(±|\+-)", record[mean_col] + "±", maxsplit=1)
        std_text = record.get("std", std_text.rstrip("±"))
        episodes = record.get("episodes", "")
        rows.append(
            Row(
                setting=record["policy"],
                kind="baseline",
                n=int(_number(episodes, where)) if episodes else None,
                n_unit="episodes",
                final_return_mean=_number(mean_text, where),
                final_return_std=_number(std_text, where) if std_text.strip() else math.nan,
                env=record.get("env", ""),
                note="no training",
            )
        )
    return rows


def read_references(path: Path) -> list[Row]:
    """Published points: CSV with source, env, algorithm, env_steps, return, note."""
    rows = []
    for line, record in enumerate(read_table(path, "--references"), 2):
        missing = [c for c in ("source", "env_steps", "return") if c not in record]
        if missing:
            raise ReportError(
                f"--references {path} needs columns {', '.join(REFERENCE_COLUMNS)} "
                f"(missing: {', '.join(missing)})"
            )
        where = f"--references {path} line {line}"
        steps = _number(record["env_steps"], where)
        algorithm = record.get("algorithm", "")
        rows.append(
            Row(
                setting=f"{record['source']}: {algorithm}" if algorithm else record["source"],
                kind="reference",
                env_steps=f"{steps:.0f}",
                final_return_mean=_number(record["return"], where),
                env=record.get("env", ""),
                note=record.get("note", ""),
                reference_steps=steps,
            )
        )
    return rows


def for_envs(rows: list[Row], envs: set[str], flag: str, notes: list[str]) -> list[Row]:
    """Rows for the runs' environments (all rows when runs name none or a row names none)."""
    if not envs:
        return rows
    keys = {env_key(e) for e in envs}
    kept = [r for r in rows if not r.env or env_key(r.env) in keys]
    if len(kept) < len(rows):
        notes.append(f"{flag}: left out {len(rows) - len(kept)} rows for other environments")
    return kept


def setting_row(setting: Setting, threshold: float | None, reps: int, warn: list[str]) -> Row:
    finals = setting.finals
    iqm, low, high = iqm_with_ci(finals, reps)
    ends = sorted({r.last_step for r in setting.runs})
    row = Row(
        setting=setting.label,
        kind="setting",
        n=len(setting.runs),
        n_unit="seeds",
        env_steps=f"{ends[0]}" if len(ends) == 1 else f"{ends[0]}-{ends[-1]}",
        final_return_mean=float(finals.mean()),
        final_return_std=sample_std(finals),
        iqm=iqm,
        iqm_ci_low=low,
        iqm_ci_high=high,
        best_return_mean=float(setting.bests.mean()),
        best_return_max=float(setting.bests.max()),
        env=setting.runs[0].env or "",
    )
    totals_known = all(r.total_env_steps for r in setting.runs)
    if len(ends) > 1 and not totals_known:  # known totals: unfinished runs are named below
        warn.append(
            f"{setting.label}: runs end at different env steps ({ends[0]:,} to {ends[-1]:,}): "
            f"each final return is that run's last evaluation, and the curve past "
            f"{ends[0]:,} steps counts fewer seeds"
        )
    unfinished = [r for r in setting.runs if r.total_env_steps and r.last_step < r.total_env_steps]
    if unfinished:
        row.note = f"{len(unfinished)} unfinished"
        for r in unfinished:
            warn.append(
                f"{setting.label}: run {r.path} is unfinished (last eval at {r.last_step:,} "
                f"of {r.total_env_steps:,} env steps)"
            )
    if threshold is not None:
        reach = np.array([r.steps_to(threshold) for r in setting.runs])
        row.threshold = threshold
        row.steps_to_threshold_median = float(np.median(reach))  # never = inf
        row.never_reached = int(np.isinf(reach).sum())
    return row


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"


def _fmt_steps(text: str) -> str:
    if not text:
        return "-"
    return "-".join(f"{float(part):,.0f}" for part in text.split("-"))


def markdown_table(rows: Sequence[Row], threshold: float | None) -> str:
    header = [
        "setting",
        "kind",
        "n",
        "env steps",
        "final return, mean ± std",
        f"IQM of finals [{CONFIDENCE:.0%} CI]",
        "best eval return, seed mean / max",
    ]
    if threshold is not None:
        header.append(f"env steps to ≥ {threshold:g}, median")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
    for row in rows:
        mean_std = _fmt(row.final_return_mean)
        if math.isfinite(row.final_return_std):
            mean_std += f" ± {_fmt(row.final_return_std)}"
        iqm = "-"
        if math.isfinite(row.iqm):
            iqm = f"{_fmt(row.iqm)} [{_fmt(row.iqm_ci_low)}, {_fmt(row.iqm_ci_high)}]"
        best = "-"
        if math.isfinite(row.best_return_mean):
            best = f"{_fmt(row.best_return_mean)} / {_fmt(row.best_return_max)}"
        kind = row.kind + (f" ({row.note})" if row.note and row.kind == "setting" else "")
        cells = [
            row.setting.replace("|", "\\|"),
            kind,
            f"{row.n} {row.n_unit}" if row.n is not None else "-",
            _fmt_steps(row.env_steps),
            mean_std,
            iqm,
            best,
        ]
        if threshold is not None:
            steps = "-"
            if row.never_reached is not None:
                steps = _fmt(row.steps_to_threshold_median, 0)
                if row.never_reached:
                    steps += f" ({row.never_reached} of {row.n} never)"
            cells.append(steps)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return str(value)


def csv_text(columns: Sequence[str], records: Sequence[dict[str, object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        writer.writerow([_csv_value(record.get(c)) for c in columns])
    return out.getvalue()
