"""The statistics of the Atari 100k suite report: per-game bootstrap CIs and the comparison
with a published CI, and rliable's aggregates (IQM, median, mean, optimality gap),
performance profiles and probability of improvement over human-normalized runs x games
matrices, with NumPy's global generator seeded so that a report is reproducible."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np

from pipeline.analysis.report.stats import CONFIDENCE, seeded_global_numpy

AGGREGATE_METRICS = ("IQM", "Median", "Mean", "Optimality gap")
GAMMA = 1.0  # optimality gap threshold: human level
# Performance profile thresholds (human-normalized score): 0 = random, 1 = human.
TAU = np.linspace(0.0, 2.0, 81)


def mean_with_ci(
    scores: np.ndarray, reps: int, seed: int = 0
) -> tuple[float, float | None, float | None]:
    """The mean of one game's seeds and its 95% percentile bootstrap CI over seeds (a fresh
    generator per call, so one game's CI does not depend on which other games ran). One seed
    has no spread to resample: its CI is None, not a zero-width interval."""
    scores = np.asarray(scores, dtype=float)
    mean = float(scores.mean())
    if len(scores) < 2:
        return mean, None, None
    rng = np.random.default_rng(seed)
    means = scores[rng.integers(0, len(scores), size=(reps, len(scores)))].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return mean, float(low), float(high)


def iqm(scores: np.ndarray) -> float:
    """rliable's IQM: the 25% trimmed mean over every entry (all runs of all games)."""
    from rliable import metrics

    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=float)))


def versus(value: float, low: float, high: float) -> str:
    """Where a point estimate lies relative to a published CI: "inside" (edges included),
    "above" or "below"."""
    if value > high:
        return "above"
    if value < low:
        return "below"
    return "inside"


def aggregate_funcs() -> Callable[[np.ndarray], np.ndarray]:
    """The four aggregates of a runs x games matrix, in `AGGREGATE_METRICS` order."""
    from rliable import metrics

    return lambda x: np.array(
        [
            metrics.aggregate_iqm(x),
            metrics.aggregate_median(x),
            metrics.aggregate_mean(x),
            metrics.aggregate_optimality_gap(x, GAMMA),
        ]
    )


def _interval_estimates(score_dict: Mapping, func: Callable, reps: int, seed: int):
    from rliable import library as rly

    with warnings.catch_warnings(), seeded_global_numpy(seed):
        warnings.simplefilter("ignore", FutureWarning)  # arch: random_state is deprecated
        return rly.get_interval_estimates(
            dict(score_dict),
            func,
            reps=reps,
            confidence_interval_size=CONFIDENCE,
            random_state=np.random.RandomState(seed),
        )


def aggregates(matrix: np.ndarray, reps: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """IQM, median, mean and optimality gap of a runs x games matrix of human-normalized
    scores, each with rliable's stratified-bootstrap 95% CI (runs resampled within each game).
    Seeded per call: one matrix's CIs do not depend on what else the report computes."""
    points, intervals = _interval_estimates({"x": matrix}, aggregate_funcs(), reps, seed)
    return {
        name: {
            "point": float(points["x"][i]),
            "ci_low": float(intervals["x"][0, i]),
            "ci_high": float(intervals["x"][1, i]),
        }
        for i, name in enumerate(AGGREGATE_METRICS)
    }


def probability_of_improvement(
    x: np.ndarray, y: np.ndarray, reps: int, seed: int = 0
) -> dict[str, float]:
    """P(X > Y): for each game the probability that a run of X scores above a run of Y (ties
    count half; Mann-Whitney U / (n_x n_y)), averaged over games; CI from rliable's
    independent stratified bootstrap of both matrices (columns: the same games)."""
    from rliable import metrics

    def func(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.array([metrics.probability_of_improvement(a, b)])

    points, intervals = _interval_estimates({"x": [x, y]}, func, reps, seed)
    return {
        "point": float(points["x"][0]),
        "ci_low": float(intervals["x"][0, 0]),
        "ci_high": float(intervals["x"][1, 0]),
    }


def poi_point(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) without a CI (one game: too few runs for a useful one)."""
    from rliable import metrics

    return float(metrics.probability_of_improvement(x, y))


def performance_profiles(
    matrices: Mapping[str, np.ndarray], reps: int, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """For each matrix, the fraction of its runs x games entries above each threshold in
    `TAU`, with stratified-bootstrap 95% CIs (rliable's score distributions)."""
    from rliable import library as rly

    profiles, cis = {}, {}
    for label, matrix in matrices.items():
        with warnings.catch_warnings(), seeded_global_numpy(seed):
            warnings.simplefilter("ignore", FutureWarning)
            p, c = rly.create_performance_profile(
                {label: matrix}, TAU, reps=reps, confidence_interval_size=CONFIDENCE
            )
        profiles[label], cis[label] = p[label], c[label]
    return profiles, cis


def rectangular(
    scores_by_game: Mapping[str, Mapping[int, float]],
) -> tuple[np.ndarray, int, dict[str, list[int]]]:
    """A runs x games matrix for rliable, which needs the same number of runs per game: each
    game keeps its k lowest-numbered seeds, k = the fewest any game has. Returns (matrix,
    k, the seeds dropped per game). The stratified bootstrap resamples each game's column on
    its own, so which seeds share a row does not matter, only how many each game has."""
    k = min(len(seeds) for seeds in scores_by_game.values())
    columns, dropped = [], {}
    for game, seeds in scores_by_game.items():
        ordered = sorted(seeds)
        columns.append([seeds[s] for s in ordered[:k]])
        if ordered[k:]:
            dropped[game] = ordered[k:]
    return np.array(columns, dtype=float).T, k, dropped
