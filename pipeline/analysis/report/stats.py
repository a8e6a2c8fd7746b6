"""Seeds grouped into settings, and the statistics over them: mean curves with bootstrap
CIs, and the IQM of final returns with rliable's stratified bootstrap CI."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.analysis.runs import Run, natural_key
from pipeline.run_settings import SEED_BINDINGS

CONFIDENCE = 0.95
DEFAULT_REPS = 2_000  # bootstrap resamples; rliable's 50,000 takes ~20 s a setting on 2 cores


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


@contextlib.contextmanager
def seeded_global_numpy(seed: int) -> Iterator[None]:
    """rliable's bootstraps draw from NumPy's global generator (`np.random.choice`), whatever
    `random_state` they are given: seed it for the draws, then give the caller's state back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def iqm_with_ci(finals: np.ndarray, reps: int = DEFAULT_REPS) -> tuple[float, float, float]:
    """IQM of the seeds' final returns and its 95% stratified bootstrap CI (rliable). One task,
    so the stratified bootstrap is the plain bootstrap over seeds; below 4 seeds the 25%
    trim removes nothing and the IQM is the mean."""
    from rliable import library as rly
    from rliable import metrics

    scores = np.asarray(finals, dtype=float).reshape(-1, 1)  # runs x tasks
    with warnings.catch_warnings(), seeded_global_numpy(0):
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
