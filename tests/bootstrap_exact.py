"""The exact bootstrap distribution of the IQM of a few seeds' scores, by hand: every one of
the n^n resamples (equally likely), each one's 25% trimmed mean. The report's percentile CIs
(rliable's stratified bootstrap, one task) are draws from it, so their bounds can be checked
against its quantiles without rliable or its random numbers."""

from __future__ import annotations

import itertools

import numpy as np


def iqm(scores) -> float:
    """The mean of the scores left after dropping floor(n / 4) from each end."""
    ordered = sorted(float(s) for s in scores)
    cut = len(ordered) // 4
    kept = ordered[cut : len(ordered) - cut]
    return sum(kept) / len(kept)


def distribution(scores) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct IQMs of all resamples, ascending; the probability of each or below)."""
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    resamples = np.sort(scores[np.array(list(itertools.product(range(n), repeat=n)))], axis=1)
    cut = n // 4  # iqm(), for all resamples at once
    values = resamples[:, cut : n - cut].mean(axis=1)
    atoms, counts = np.unique(np.round(values, 9), return_counts=True)
    return atoms, np.cumsum(counts) / counts.sum()


def quantile(scores, p: float) -> float:
    """The exact bootstrap quantile: the smallest IQM with at least `p` of resamples at or
    below it."""
    atoms, cdf = distribution(scores)
    return float(atoms[np.searchsorted(cdf, p - 1e-12)])


def margin(scores, p: float) -> float:
    """How far `p` is from either edge of the probability its quantile's atom spans: an
    empirical quantile from R draws is that atom unless the draws' share below or at it is
    off by that much (binomial, standard deviation sqrt(p (1 - p) / R))."""
    atoms, cdf = distribution(scores)
    index = int(np.searchsorted(cdf, p - 1e-12))
    below = cdf[index - 1] if index else 0.0
    return float(min(p - below, cdf[index] - p))
