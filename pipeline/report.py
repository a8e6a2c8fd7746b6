"""Learning curves and an aggregate table for runs grouped into settings.

    python -m pipeline.report RUN_OR_SWEEP_DIR... [--out DIR] [--threshold X]
        [--baselines FILE] [--references FILE] [--reps N]

Each argument is a run directory or a directory searched recursively for runs (a sweep's
output directory works). Runs whose config.gin are identical except for the seed form one
setting. Writes `learning_curves.png`, `report.md`, `report.csv` (one row per setting, baseline
and reference point) and `runs.csv` (one row per run) into `--out` (default: `report/` in the
runs' deepest common directory). Reads only the run directories' files: no TensorFlow, so it
runs beside training. Every number is defined in README.md, section "Reports".
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.run.files import holds_run, parse_config_str
from pipeline.run_settings import SEED_BINDINGS, TOTAL_STEPS_BINDINGS

PNG_FILE = "learning_curves.png"
MARKDOWN_FILE = "report.md"
CSV_FILE = "report.csv"
RUNS_CSV_FILE = "runs.csv"
CONFIDENCE = 0.95
DEFAULT_REPS = 2_000  # bootstrap resamples; rliable's 50,000 takes ~20 s a setting on 2 cores
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


class ReportError(Exception):
    """A problem with the inputs: one line `error: ...`, exit status 2, nothing written."""


# --- reading runs ----------------------------------------------------------------------------


def normalize_binding(binding: str) -> str:
    """`a.b = 1` and `a.b=1` are the same binding; labels show the compact form."""
    name, _, value = binding.partition("=")
    return f"{name.strip()}={value.strip()}"


def _is_seed_binding(binding: str) -> bool:
    return binding.partition("=")[0].strip() in SEED_BINDINGS


def natural_key(path: Path) -> list[object]:
    """Sorts s2 before s10, so seeds and settings appear in the order people expect."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


@dataclass
class Run:
    """One run directory's evaluations and identity, as the report needs them."""

    path: Path
    explicit: bool  # named on the command line, not found by searching
    seed: int | None = None
    config: dict[str, str] = field(default_factory=dict)
    gin_files: list[str] = field(default_factory=list)
    gin_bindings: list[str] = field(default_factory=list)
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    returns: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def final_return(self) -> float:
        return float(self.returns[-1])

    @property
    def best_return(self) -> float:
        return float(self.returns.max())

    @property
    def last_step(self) -> int:
        return int(self.steps[-1])

    @property
    def total_env_steps(self) -> int | None:
        for name in TOTAL_STEPS_BINDINGS:
            value = self.config.get(name, "").replace("_", "")
            if value.isdigit():
                return int(value)
        return None

    @property
    def env(self) -> str | None:
        """The environment id (gymnasium) or game (Atari) from config.gin, quotes removed."""
        for name in ("load_gymnasium.env_id", "load_atari.game"):
            if name in self.config:
                return self.config[name].strip("'\"")
        return None

    @property
    def atari(self) -> bool:
        return "load_atari.game" in self.config

    def steps_to(self, threshold: float) -> float:
        """Env steps of the first evaluation at or above `threshold`; inf when none is."""
        reached = np.nonzero(self.returns >= threshold)[0]
        return float(self.steps[reached[0]]) if len(reached) else math.inf

    def grouping_key(self) -> tuple:
        """What must be equal for two runs to be seeds of one setting: config.gin less seeds."""
        if self.config:
            return tuple(sorted((k, v) for k, v in self.config.items() if k not in SEED_BINDINGS))
        if self.gin_files or self.gin_bindings:
            return (
                "run.json",
                tuple(Path(f).stem for f in self.gin_files),
                tuple(sorted(normalize_binding(b) for b in self.non_seed_bindings())),
            )
        return ("directory", str(self.path.parent))

    def non_seed_bindings(self) -> list[str]:
        return [normalize_binding(b) for b in self.gin_bindings if not _is_seed_binding(b)]

    def stems(self) -> str:
        if self.gin_files:
            return "+".join(Path(f).name.removesuffix(".gin") for f in self.gin_files)
        return self.path.parent.name or str(self.path)


def find_run_dirs(paths: Sequence[str | Path]) -> list[tuple[Path, bool]]:
    """(run directory, named explicitly) pairs: arguments that are runs, and runs found below
    the others. Run directories are not searched further (checkpoints live there)."""
    found: list[tuple[Path, bool]] = []
    for arg in paths:
        path = Path(arg)
        if not path.exists():
            raise ReportError(f"{path} does not exist: pass run directories or a sweep directory")
        if not path.is_dir():
            raise ReportError(f"{path} is a file: pass run directories or a sweep directory")
        if holds_run(path):
            found.append((path, True))
            continue
        below = []
        for root, dirs, _ in os.walk(path):
            if holds_run(Path(root)):
                below.append(Path(root))
                dirs[:] = []
            else:
                dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend((run, False) for run in sorted(below, key=natural_key))
    unique: dict[Path, tuple[Path, bool]] = {}  # a run named and also found counts once
    for run, explicit in found:
        first, named = unique.get(run.resolve(), (run, False))
        unique[run.resolve()] = (first, named or explicit)
    if not unique:
        names = ", ".join(str(p) for p in paths)
        raise ReportError(
            f"no run directories found under {names} (a run directory holds metrics.jsonl): "
            "pass run directories or a sweep's output directory"
        )
    return list(unique.values())


def read_evaluations(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(env steps, eval return mean) per evaluation; a torn last line (a writer killed or
    still writing) is skipped, and a repeated step keeps its last row."""
    path = run_dir / "metrics.jsonl"
    by_step: dict[int, float] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict):
                continue
            value, steps = row.get("eval_return_mean"), row.get("env_steps")
            if isinstance(value, int | float) and isinstance(steps, int | float):
                if math.isfinite(value):
                    by_step[int(steps)] = float(value)
    steps = np.array(sorted(by_step), dtype=float)
    return steps, np.array([by_step[int(s)] for s in steps], dtype=float)


def load_run(path: Path, explicit: bool) -> Run:
    run = Run(path=path, explicit=explicit)
    config_path = path / "config.gin"
    if config_path.is_file():
        run.config = parse_config_str(config_path.read_text(encoding="utf-8"))
    info_path = path / "run.json"
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            info = {}
        if isinstance(info, dict):
            run.gin_files = [str(f) for f in info.get("gin_files") or []]
            run.gin_bindings = [str(b) for b in info.get("gin_bindings") or []]
            if isinstance(info.get("seed"), int):
                run.seed = info["seed"]
    if run.seed is None:
        for name in SEED_BINDINGS:
            if run.config.get(name, "").lstrip("-").isdigit():
                run.seed = int(run.config[name])
                break
    run.steps, run.returns = read_evaluations(path)
    return run


def load_runs(paths: Sequence[str | Path], warn: list[str]) -> list[Run]:
    """Runs with evaluations. A run without any is an error when named on the command line
    (it was asked for) and skipped with a warning when found by searching (a sweep still
    starting up); no evaluated run at all is an error."""
    runs, waiting = [], []
    for path, explicit in find_run_dirs(paths):
        run = load_run(path, explicit)
        if len(run.steps):
            runs.append(run)
        elif explicit:
            raise ReportError(
                f"run {path} has no evaluations yet: wait for its first eval or remove it"
            )
        else:
            waiting.append(path)
    for path in waiting:
        warn.append(f"skipped run {path}: no evaluations yet (wait for its first eval)")
    if not runs:
        raise ReportError(
            f"run {waiting[0]} has no evaluations yet, nor has any other of the "
            f"{len(waiting)} runs found: wait for their first evals"
        )
    return runs


# --- settings --------------------------------------------------------------------------------


@dataclass
class Setting:
    """Runs that differ only in their seed."""

    runs: list[Run]
    label: str = ""

    @property
    def finals(self) -> np.ndarray:
        return np.array([r.final_return for r in self.runs])

    @property
    def bests(self) -> np.ndarray:
        return np.array([r.best_return for r in self.runs])


def group_settings(runs: Sequence[Run], warn: list[str]) -> tuple[list[Setting], list[str]]:
    """Settings in the order their first runs were found, labelled; also the bindings that
    every setting shares (left out of the labels, listed once in the report)."""
    groups: dict[tuple, Setting] = {}
    for run in runs:
        groups.setdefault(run.grouping_key(), Setting(runs=[])).runs.append(run)
    settings = list(groups.values())
    for setting in settings:
        setting.runs.sort(key=lambda r: (r.seed is None, r.seed or 0, natural_key(r.path)))
        seeds = [r.seed for r in setting.runs if r.seed is not None]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            warn.append(
                f"{len(setting.runs)} runs of one setting share seed(s) {repeated} "
                f"({', '.join(str(r.path) for r in setting.runs)}): each counts as a seed"
            )
    common = label_settings(settings)
    return settings, common


def label_settings(settings: list[Setting]) -> list[str]:
    """Gin file stems plus the command-line bindings that not every setting shares; where
    that still leaves two settings alike (a gin file edited between runs), the config.gin
    values that tell them apart. Returns the shared bindings."""
    binding_sets = [set(s.runs[0].non_seed_bindings()) for s in settings]
    common = set.intersection(*binding_sets) if binding_sets else set()
    for setting in settings:
        own = [b for b in setting.runs[0].non_seed_bindings() if b not in common]
        setting.label = setting.runs[0].stems() + (f" [{', '.join(own)}]" if own else "")
    by_label: dict[str, list[Setting]] = {}
    for setting in settings:
        by_label.setdefault(setting.label, []).append(setting)
    for alike in by_label.values():
        if len(alike) < 2:
            continue
        configs = [s.runs[0].config for s in alike]
        names = sorted({n for c in configs for n in c} - set(SEED_BINDINGS))
        differing = [n for n in names if len({c.get(n, "(unset)") for c in configs}) > 1]
        for number, (setting, config) in enumerate(zip(alike, configs, strict=True), 1):
            extra = [f"{n}={config.get(n, '(unset)')}" for n in differing]
            setting.label += f" {{{', '.join(extra)}}}" if extra else f" #{number}"
    return sorted(common)


# --- statistics ------------------------------------------------------------------------------


def mean_curve(
    runs: Sequence[Run], reps: int = DEFAULT_REPS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean return across seeds on the union of their eval steps, with a percentile bootstrap
    CI over seeds. Each seed is linearly interpolated between its own evaluations and never
    extrapolated, so eval schedules need not line up (on-policy runs overshoot by a batch)
    and a shorter run simply stops counting after its last evaluation.

    Returns (steps, mean, ci_low, ci_high, seeds_counted), one entry per step."""
    grid = np.unique(np.concatenate([r.steps for r in runs]))
    values = np.full((len(runs), len(grid)), np.nan)
    for i, run in enumerate(runs):
        inside = (grid >= run.steps[0]) & (grid <= run.steps[-1])
        values[i, inside] = np.interp(grid[inside], run.steps, run.returns)
    counted = ~np.isnan(values)
    count = counted.sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns cannot occur
        mean = np.nanmean(values, axis=0)
    low, high = mean.copy(), mean.copy()
    rng = np.random.default_rng(seed)
    alpha = (1 - CONFIDENCE) / 2
    patterns: dict[bytes, list[int]] = {}
    for column in range(len(grid)):
        patterns.setdefault(counted[:, column].tobytes(), []).append(column)
    for columns in patterns.values():
        rows = np.nonzero(counted[:, columns[0]])[0]
        if len(rows) < 2:
            continue  # one seed: no spread to show
        sample = values[np.ix_(rows, columns)]  # seeds x steps
        for start in range(0, len(columns), 256):  # bounded memory for long runs
            block = sample[:, start : start + 256]
            draws = rng.integers(0, len(rows), size=(reps, len(rows)))
            boot = block[draws].mean(axis=1)  # reps x steps
            cols = columns[start : start + 256]
            low[cols] = np.quantile(boot, alpha, axis=0)
            high[cols] = np.quantile(boot, 1 - alpha, axis=0)
    return grid, mean, low, high, count


def iqm_with_ci(finals: np.ndarray, reps: int = DEFAULT_REPS) -> tuple[float, float, float]:
    """IQM of the seeds' final returns and its 95% stratified bootstrap CI (rliable). One task,
    so the stratified bootstrap is the plain bootstrap over seeds; below 4 seeds the 25%
    trim removes nothing and the IQM is the mean."""
    from rliable import library as rly
    from rliable import metrics

    scores = np.asarray(finals, dtype=float).reshape(-1, 1)  # runs x tasks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arch: random_state is deprecated
        points, intervals = rly.get_interval_estimates(
            {"setting": scores},
            lambda s: np.array([metrics.aggregate_iqm(s)]),
            reps=reps,
            confidence_interval_size=CONFIDENCE,
            random_state=np.random.RandomState(0),
        )
    low, high = intervals["setting"][:, 0]
    return float(points["setting"][0]), float(low), float(high)


def sample_std(values: np.ndarray) -> float:
    """Across seeds, with n - 1 (seeds are a sample); nan for a single seed."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


# --- baselines and references ----------------------------------------------------------------


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


# --- the table -------------------------------------------------------------------------------


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


# --- the plot --------------------------------------------------------------------------------


def plot_png(
    settings: Sequence[Setting],
    baselines: Sequence[Row],
    references: Sequence[Row],
    threshold: float | None,
    reps: int,
) -> bytes:
    """Learning curves as PNG bytes (Agg canvas, no pyplot: no global backend state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    figure = Figure(figsize=(9, 5.5), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    colors = [f"C{i % 10}" for i in range(len(settings))]
    last_step = 0.0
    for setting, color in zip(settings, colors, strict=True):
        steps, mean, low, high, _ = mean_curve(setting.runs, reps)
        n = len(setting.runs)
        axes.plot(steps, mean, color=color, lw=1.8, label=f"{setting.label} ({n} seeds)")
        axes.fill_between(steps, low, high, color=color, alpha=0.2, lw=0)
        last_step = max(last_step, float(steps[-1]))
    styles = iter(["--", "-.", (0, (5, 1, 1, 1)), (0, (3, 3))] * 10)
    for row in baselines:
        axes.axhline(
            row.final_return_mean,
            color="0.35",
            ls=next(styles),
            lw=1.2,
            label=f"{row.setting} (baseline, no training): {row.final_return_mean:,.1f}",
        )
    markers = iter("*^sDvPX" * 10)
    for row in references:
        text = f"{row.setting} @ {row.reference_steps:,.0f} steps: {row.final_return_mean:,.1f}"
        if row.reference_steps <= 1.1 * last_step:
            axes.plot(
                [row.reference_steps],
                [row.final_return_mean],
                ls="none",
                marker=next(markers),
                ms=11,
                color="k",
                mfc="gold",
                label=f"{text} (reference)",
            )
        else:  # far past our runs: a level to compare against, not a point on our axis
            axes.axhline(
                row.final_return_mean,
                color="goldenrod",
                ls=next(styles),
                lw=1.5,
                label=f"{text} (reference, past this axis: drawn as a level)",
            )
    if threshold is not None:
        axes.axhline(threshold, color="red", ls=":", lw=1.2, label=f"threshold {threshold:g}")
    envs = sorted({r.env or "?" for s in settings for r in s.runs})
    atari = any(r.atari for s in settings for r in s.runs)
    axes.set_title(
        f"{', '.join(envs)}: evaluation return vs environment steps\n"
        f"lines: mean over seeds; shading: {CONFIDENCE:.0%} bootstrap CI over seeds",
        fontsize=11,
    )
    axes.set_xlabel(
        "environment steps (agent steps, 4 frames each)" if atari else "environment steps"
    )
    axes.set_ylabel("evaluation return (undiscounted, mean over eval episodes)")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    axes.set_xlim(left=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, frameon=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


# --- the command -----------------------------------------------------------------------------


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


def build_report(args: argparse.Namespace, argv: Sequence[str]) -> Report:
    """Reads the runs and the optional files, computes every number, renders every file."""
    warn: list[str] = []
    notes: list[str] = []  # for report.md only: expected, not worth a warning
    runs = load_runs(args.run_dirs, warn)
    out = Path(args.out) if args.out else default_out_dir(args.run_dirs)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} is a file: choose a directory")
    settings, common = group_settings(runs, warn)
    envs = {r.env for r in runs if r.env}
    baselines, references = [], []
    if args.baselines:
        baselines = for_envs(read_baselines(args.baselines), envs, "--baselines", notes)
    if args.references:
        references = for_envs(read_references(args.references), envs, "--references", notes)
    rows = [setting_row(s, args.threshold, args.reps, warn) for s in settings]
    rows += baselines + references
    png = plot_png(settings, baselines, references, args.threshold, args.reps)

    run_rows = []
    for setting in settings:
        for run in setting.runs:
            reach = run.steps_to(args.threshold) if args.threshold is not None else math.inf
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

    table = markdown_table(rows, args.threshold)
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
        _methods_text(args.reps, args.threshold),
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other error here
        raise ReportError(message)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = _Parser(
        prog="python -m pipeline.report",
        description="Learning curves and an aggregate table for runs grouped into settings.",
    )
    parser.add_argument("run_dirs", nargs="+", help="run directories or directories of runs")
    parser.add_argument("--out", help="output directory (default: report/ beside the runs)")
    parser.add_argument("--threshold", type=float, help="return level for 'steps to reach'")
    parser.add_argument("--baselines", type=Path, help="CSV/Markdown: policy,env,mean,std,...")
    parser.add_argument("--references", type=Path, help=f"CSV: {','.join(REFERENCE_COLUMNS)}")
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS, help="bootstrap resamples")
    args = parser.parse_args(argv)
    if args.reps < 100:
        raise ReportError(f"--reps {args.reps}: use at least 100 bootstrap resamples")
    return args


def write_files(out: Path, files: dict[str, bytes]) -> None:
    """Temporary siblings then renames: a reader never sees half a report."""
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        tmp = out / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, out / name)


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; returns the exit status (2 for a problem with the inputs, nothing written)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        report = build_report(parse_args(argv), argv)
        write_files(report.out, report.files)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot write the report: {error}", file=sys.stderr)
        return 2
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    print(report.table, end="")
    print(f"wrote {', '.join(report.files)} to {report.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
