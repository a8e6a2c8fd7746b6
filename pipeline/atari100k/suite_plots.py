"""The suite report's figures: rliable's aggregate interval plot and performance profiles,
drawn on Matplotlib's Agg backend (the report runs headless, beside training)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.atari100k.suite_stats import AGGREGATE_METRICS, TAU


def _pyplot():
    """pyplot on Agg unless the process already chose a backend (rliable's interval plot
    makes its figure with `plt.subplots`); a PNG is written the same either way."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_aggregates(
    estimates: Mapping[str, Mapping[str, Mapping[str, float]]], title: str, path: Path
) -> None:
    """One bar per config and metric: the 95% CI as the bar, the point estimate as a tick.
    `estimates` maps a label to `suite_stats.aggregates()`'s result."""
    plt = _pyplot()
    from rliable import plot_utils

    labels = list(estimates)
    points = {k: np.array([estimates[k][m]["point"] for m in AGGREGATE_METRICS]) for k in labels}
    intervals = {
        k: np.array(
            [
                [estimates[k][m]["ci_low"] for m in AGGREGATE_METRICS],
                [estimates[k][m]["ci_high"] for m in AGGREGATE_METRICS],
            ]
        )
        for k in labels
    }
    row_height = 0.6  # inches per config; rliable's default 0.37 squeezes two or three rows
    height = row_height * len(labels)
    fig, _ = plot_utils.plot_interval_estimates(
        points,
        intervals,
        metric_names=list(AGGREGATE_METRICS),
        algorithms=labels,
        xlabel="Human-normalized score",
        row_height=row_height,
        xlabel_y_coordinate=-0.55 / height,
    )
    try:
        fig.suptitle(title, y=1 + 0.55 / height, fontsize="x-large", wrap=True)
        fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_profiles(
    profiles: Mapping[str, np.ndarray],
    cis: Mapping[str, np.ndarray],
    title: str,
    path: Path,
) -> None:
    """Performance profiles: the fraction of runs x games above each human-normalized
    threshold, with 95% CI bands; a curve above another everywhere dominates it."""
    _pyplot()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from rliable import plot_utils

    figure = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    plot_utils.plot_performance_profiles(
        dict(profiles),
        TAU,
        performance_profile_cis=dict(cis),
        ax=axes,
        xlabel=r"Human-normalized score ($\tau$)",
        ylabel=r"Fraction of runs with score $> \tau$",
        labelsize="large",
        ticklabelsize="large",
    )
    axes.axvline(1.0, color="0.5", ls=":", lw=1)
    axes.legend(loc="upper right", fontsize="medium")
    axes.set_title(title, fontsize="medium", wrap=True)
    figure.savefig(path, format="png", bbox_inches="tight")
