"""The learning-curve figure: each setting's mean curve and CI, baselines and references."""

from __future__ import annotations

import io
from collections.abc import Sequence

from pipeline.analysis.report.stats import CONFIDENCE, Setting, mean_curve
from pipeline.analysis.report.tables import Row


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
