"""The report of an Atari 100k suite: per-game scores beside DrQ(ε)'s published figures,
human-normalized aggregates with stratified-bootstrap CIs (rliable), performance profiles,
timings and memory, and, given a second config, the probability of improvement. A suite
that covers fewer than the 26 games says so in its title and on every aggregate line.
Reads only the runs' summaries: no TensorFlow (docs/reports.md, "The report of an Atari-100k
suite")."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.analysis.report.stats import CONFIDENCE, DEFAULT_REPS
from pipeline.atari100k import suite_plots, suite_stats
from pipeline.atari100k.references import (
    ATARI100K_GAMES,
    check_game,
    human_normalized,
    load_drq_eps_runs,
    load_references,
)

DRQ_EPS = "DrQ(ε) published"


@dataclass
class GameRun:
    """One seed of one config on one game. `final_score` is the final evaluation's mean
    return, None while the run is unfinished (listed, never scored). `wall_s` is the run's
    whole wall time; `eval_wall_s` the periodic evaluations within it, `final_eval_wall_s`
    the final evaluation within it; training is the rest. `peak_rss_mb`: None if unknown."""

    config: str
    game: str
    seed: int
    final_score: float | None
    env_steps: int
    wall_s: float
    eval_wall_s: float
    final_eval_wall_s: float
    peak_rss_mb: float | None
    revision: str

    @property
    def training_wall_s(self) -> float:
        """Wall time outside evaluations."""
        return max(0.0, self.wall_s - self.eval_wall_s - self.final_eval_wall_s)


def coverage_label(games: Sequence[str]) -> str:
    """ "over all 26 games", or "over N of 26 games: <list>" for a subset, so that a subset's
    figure is never read as the 26-game one."""
    if set(games) == set(ATARI100K_GAMES):
        return "over all 26 games"
    return f"over {len(games)} of 26 games: {', '.join(games)}"


def _validate(runs: Sequence[GameRun], what: str) -> str:
    """The runs' one config; mixed configs, unknown games, repeated seeds or a non-finite
    score are errors, not silently merged."""
    if not runs:
        raise ValueError(f"{what}: no runs")
    configs = sorted({r.config for r in runs})
    if len(configs) > 1:
        raise ValueError(f"{what}: runs of several configs {configs}; pass one as `compare`")
    seen: set[tuple[str, int]] = set()
    for r in runs:
        check_game(r.game)
        if (r.game, r.seed) in seen:
            raise ValueError(f"{what}: {r.game} seed {r.seed} appears twice")
        seen.add((r.game, r.seed))
        if r.final_score is not None and not math.isfinite(r.final_score):
            raise ValueError(f"{what}: {r.game} seed {r.seed} has final score {r.final_score}")
    return configs[0]


def _scores(runs: Sequence[GameRun]) -> dict[str, dict[int, float]]:
    """Finished seeds' final scores per game, games in suite order."""
    by_game: dict[str, dict[int, float]] = {}
    for game in ATARI100K_GAMES:
        seeds = {
            r.seed: float(r.final_score)
            for r in runs
            if r.game == game and r.final_score is not None
        }
        if seeds:
            by_game[game] = seeds
    return by_game


def _timing(runs: Sequence[GameRun]) -> dict:
    """Mean and max per run of each part of the wall time (finished runs: an unfinished run's
    time is partial), max peak RSS over all runs; `final_eval_long_pole` when the final
    evaluation takes longer than training."""
    done = [r for r in runs if r.final_score is not None]
    parts = {
        "wall": [r.wall_s for r in done],
        "training": [r.training_wall_s for r in done],
        "evaluations": [r.eval_wall_s for r in done],
        "final_eval": [r.final_eval_wall_s for r in done],
    }
    out: dict = {
        f"{k}_s": ({"mean": float(np.mean(v)), "max": float(np.max(v))} if v else None)
        for k, v in parts.items()
    }
    rss = [r.peak_rss_mb for r in runs if r.peak_rss_mb is not None]
    out["peak_rss_mb"] = float(max(rss)) if rss else None
    out["final_eval_long_pole"] = bool(
        done and np.mean(parts["final_eval"]) > np.mean(parts["training"])
    )
    return out


def _per_game(runs: Sequence[GameRun], reps: int, seed: int) -> list[dict]:
    """A row per game that has runs: ours beside DrQ(ε)'s published per-game mean."""
    refs = load_references()
    scores = _scores(runs)
    rows = []
    for game in ATARI100K_GAMES:
        game_runs = [r for r in runs if r.game == game]
        if not game_runs:
            continue
        ref = refs[game]
        row: dict = {
            "game": game,
            "n": len(scores.get(game, {})),
            "seeds": sorted(scores.get(game, {})),
            "unfinished": sum(r.final_score is None for r in game_runs),
            "drq_eps_mean": ref.drq_eps_mean,
            "drq_eps_mean_ci_low": ref.drq_eps_mean_ci_low,
            "drq_eps_mean_ci_high": ref.drq_eps_mean_ci_high,
            "drq_eps_iqm": ref.drq_eps_iqm,
            "drq_eps_hns_mean": ref.drq_eps_hns_mean,
        }
        if game in scores:
            x = np.array([scores[game][s] for s in row["seeds"]])
            mean, low, high = suite_stats.mean_with_ci(x, reps, seed)
            row.update(
                mean=mean,
                mean_ci_low=low,
                mean_ci_high=high,
                iqm=suite_stats.iqm(x.reshape(-1, 1)) if len(x) >= 4 else None,
                hns_mean=human_normalized(game, mean),
                vs_drq_eps=suite_stats.versus(
                    mean, ref.drq_eps_mean_ci_low, ref.drq_eps_mean_ci_high
                ),
                ci_overlap=None
                if low is None
                else bool(low <= ref.drq_eps_mean_ci_high and high >= ref.drq_eps_mean_ci_low),
            )
        else:
            row.update(mean=None, vs_drq_eps="missing")
        row["timing"] = _timing(game_runs)
        rows.append(row)
    return rows


def _normalized_matrix(by_game: dict[str, dict[int, float]]) -> tuple[np.ndarray, int, dict]:
    matrix, k, dropped = suite_stats.rectangular(by_game)
    for j, game in enumerate(by_game):
        matrix[:, j] = human_normalized(game, matrix[:, j])
    return matrix, k, dropped


def _drq_eps_matrix(games: Sequence[str]) -> np.ndarray:
    published = load_drq_eps_runs()
    return np.stack([human_normalized(g, published[g]) for g in games], axis=1)


def _aggregate_section(
    matrices: dict[str, np.ndarray], games: list[str], reps: int, seed: int
) -> dict:
    """Aggregates and profiles of each labelled matrix over the same games."""
    estimates = {label: suite_stats.aggregates(m, reps, seed) for label, m in matrices.items()}
    profiles, cis = suite_stats.performance_profiles(matrices, reps, seed)
    return {
        "games": games,
        "games_label": coverage_label(games),
        "runs_per_game": {label: int(m.shape[0]) for label, m in matrices.items()},
        "estimates": estimates,
        "profiles": {
            "tau": suite_stats.TAU.tolist(),
            "fraction_above": {label: p.tolist() for label, p in profiles.items()},
            "ci_low": {label: c[0].tolist() for label, c in cis.items()},
            "ci_high": {label: c[1].tolist() for label, c in cis.items()},
        },
    }


def write_suite_report(
    runs: list[GameRun],
    out: Path,
    compare: list[GameRun] | None = None,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
) -> dict:
    """Write `report.md`, `report.json` and the PNGs into `out`; return the JSON's content.
    `runs` are one config's seeds on any of the 26 games; `compare`, another config's, adds
    the probability of improvement and a side-by-side aggregate on the games both have.
    `reps` bootstrap resamples, `seed` for every resampling (the same inputs give the same
    report)."""
    from pipeline.atari100k.suite_markdown import render_markdown

    config = _validate(runs, "runs")
    by_game = _scores(runs)
    covered = list(by_game)
    label = coverage_label(covered) if covered else "over 0 of 26 games"
    complete = len(covered) == len(ATARI100K_GAMES)
    report: dict = {
        "title": f"Atari 100k suite: {config}, " + ("all 26 games" if complete else label),
        "config": config,
        "revisions": sorted({r.revision for r in runs}),
        "suite_complete": complete,
        "games_covered": covered,
        "n_games_covered": len(covered),
        "games_missing": [g for g in ATARI100K_GAMES if g not in by_game],
        "games_label": label,
        "confidence": CONFIDENCE,
        "reps": reps,
        "seed": seed,
        "per_game": _per_game(runs, reps, seed),
        "unfinished": [
            {"game": r.game, "seed": r.seed, "env_steps": r.env_steps, "wall_s": r.wall_s}
            for r in sorted(runs, key=lambda r: (ATARI100K_GAMES.index(r.game), r.seed))
            if r.final_score is None
        ],
        "aggregate": None,
        "compare": None,
        "files": ["report.md", "report.json"],
    }
    out = Path(out)
    figures: list[tuple] = []
    if covered:
        matrix, k, dropped = _normalized_matrix(by_game)
        section = _aggregate_section(
            {config: matrix, DRQ_EPS: _drq_eps_matrix(covered)}, covered, reps, seed
        )
        section.update(seeds_per_game=k, dropped_seeds=dropped)
        report["aggregate"] = section
        figures.append(("", section))
    if compare is not None:
        report["compare"] = _compare_section(runs, compare, config, reps, seed)
        if report["compare"]["aggregate"] is not None:
            figures.append(("compare_", report["compare"]["aggregate"]))
    out.mkdir(parents=True, exist_ok=True)
    for prefix, section in figures:
        title = f"{section['games_label']} (human-normalized, {CONFIDENCE:.0%} CIs)"
        p = section["profiles"]
        profiles = {k: np.array(v) for k, v in p["fraction_above"].items()}
        cis = {k: np.array([p["ci_low"][k], p["ci_high"][k]]) for k in profiles}
        suite_plots.plot_aggregates(section["estimates"], title, out / f"{prefix}aggregates.png")
        suite_plots.plot_profiles(profiles, cis, title, out / f"{prefix}profiles.png")
        report["files"] += [f"{prefix}aggregates.png", f"{prefix}profiles.png"]
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return report


def _compare_section(
    runs: Sequence[GameRun], compare: Sequence[GameRun], config: str, reps: int, seed: int
) -> dict:
    """`runs` against `compare` on the games both finished: aggregates side by side with
    DrQ(ε)'s, P(ours > compare) overall with its CI, and per game."""
    other = _validate(compare, "compare")
    if other == config:
        other = f"{other} (compare)"
    ours, theirs = _scores(runs), _scores(compare)
    common = [g for g in ATARI100K_GAMES if g in ours and g in theirs]
    section: dict = {
        "config": other,
        "revisions": sorted({r.revision for r in compare}),
        "games": common,
        "games_label": coverage_label(common) if common else "over 0 of 26 games",
        "aggregate": None,
        "probability_of_improvement": None,
        "per_game": [],
    }
    if not common:
        return section
    x, kx, dropped_x = _normalized_matrix({g: ours[g] for g in common})
    y, ky, dropped_y = _normalized_matrix({g: theirs[g] for g in common})
    section["aggregate"] = _aggregate_section(
        {config: x, other: y, DRQ_EPS: _drq_eps_matrix(common)}, common, reps, seed
    )
    section["aggregate"].update(
        seeds_per_game={config: kx, other: ky}, dropped_seeds={config: dropped_x, other: dropped_y}
    )
    section["probability_of_improvement"] = suite_stats.probability_of_improvement(x, y, reps, seed)
    for game in common:
        a, b = np.array(list(ours[game].values())), np.array(list(theirs[game].values()))
        section["per_game"].append(
            {
                "game": game,
                "mean": float(a.mean()),
                "compare_mean": float(b.mean()),
                "probability_of_improvement": float(
                    suite_stats.poi_point(a.reshape(-1, 1), b.reshape(-1, 1))
                ),
            }
        )
    return section
