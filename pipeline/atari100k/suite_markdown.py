"""`report.md` of an Atari 100k suite, rendered from the report's JSON content so that the
two files cannot disagree."""

from __future__ import annotations

from pipeline.atari100k.suite_stats import AGGREGATE_METRICS


def _score(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def _ci(point: float | None, low: float | None, high: float | None, fmt=_score) -> str:
    if point is None:
        return "-"
    if low is None:
        return fmt(point)
    return f"{fmt(point)} [{fmt(low)}, {fmt(high)}]"


def _hns(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _minutes(part: dict | None) -> str:
    if part is None:
        return "-"
    return f"{part['mean'] / 60:,.1f} / {part['max'] / 60:,.1f}"


def _vs(row: dict) -> str:
    verdict = row["vs_drq_eps"]
    if row.get("ci_overlap") and verdict != "inside":
        verdict += " (CIs overlap)"
    return verdict


def _per_game(report: dict) -> list[str]:
    lines = [
        "## Per game",
        "",
        "| game | n | mean [95% CI] | IQM | HNS of mean | DrQ(ε) mean [95% CI] | vs DrQ(ε) CI |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["per_game"]:
        n = str(row["n"]) + (f" (+{row['unfinished']} unfinished)" if row["unfinished"] else "")
        lines.append(
            f"| {row['game']} | {n} | "
            f"{_ci(row['mean'], row.get('mean_ci_low'), row.get('mean_ci_high'))} | "
            f"{_score(row.get('iqm'))} | {_hns(row.get('hns_mean'))} | "
            f"{_ci(row['drq_eps_mean'], row['drq_eps_mean_ci_low'], row['drq_eps_mean_ci_high'])}"
            f" | {_vs(row)} |"
        )
    lines += [
        "",
        "n: finished seeds. Mean over seeds with a 95% percentile bootstrap CI over seeds (none "
        "for one seed); IQM (25% trimmed mean) from 4 seeds. HNS: (mean - random) / (human - "
        "random). DrQ(ε): mean of its 100 released runs and the bootstrap CI of that mean. "
        "vs DrQ(ε) CI: whether our mean lies inside (edges included), above or below the "
        'published CI; "CIs overlap" when ours reaches into it.',
        "",
    ]
    return lines


def _timing(report: dict) -> list[str]:
    lines = [
        "## Time and memory per game",
        "",
        "| game | wall min mean / max | training | evaluations | final eval | peak RSS MB | "
        "long pole |",
        "|---|---|---|---|---|---|---|",
    ]
    slowest = None
    for row in report["per_game"]:
        t = row["timing"]
        rss = "-" if t["peak_rss_mb"] is None else f"{t['peak_rss_mb']:,.0f}"
        pole = "**final eval > training**" if t["final_eval_long_pole"] else ""
        lines.append(
            f"| {row['game']} | {_minutes(t['wall_s'])} | {_minutes(t['training_s'])} | "
            f"{_minutes(t['evaluations_s'])} | {_minutes(t['final_eval_s'])} | {rss} | {pole} |"
        )
        if t["wall_s"] and (slowest is None or t["wall_s"]["max"] > slowest[1]):
            slowest = (row["game"], t["wall_s"]["max"])
    lines += [
        "",
        "Minutes per run, mean / max over the game's finished runs; training is the wall time "
        "outside evaluations. Peak RSS: the largest over all the game's runs.",
    ]
    if slowest:
        lines.append(f"Longest run: {slowest[0]}, {slowest[1] / 60:,.1f} min.")
    return lines + [""]


def _aggregate_table(section: dict) -> list[str]:
    label = section["games_label"]
    lines = [
        "| config | " + " | ".join(AGGREGATE_METRICS) + " |",
        "|---" * (len(AGGREGATE_METRICS) + 1) + "|",
    ]
    for name, estimates in section["estimates"].items():
        cells = [_ci(e["point"], e["ci_low"], e["ci_high"], _hns) for e in estimates.values()]
        runs = section["runs_per_game"][name]
        lines.append(f"| {name}, {runs} runs per game, {label} | " + " | ".join(cells) + " |")
    return lines


def _aggregate(report: dict) -> list[str]:
    section = report["aggregate"]
    if section is None:
        return ["## Aggregate", "", "No finished run: nothing to aggregate.", ""]
    lines = [f"## Aggregate, human-normalized, {section['games_label']}", ""]
    lines += _aggregate_table(section)
    lines += [
        "",
        "Point estimates with rliable's 95% stratified-bootstrap CIs (runs resampled within "
        f"each game, {report['reps']:,} resamples). IQM: 25% trimmed mean of all runs x games; "
        "median and mean: of the per-game means; optimality gap: mean of max(0, 1 - score) "
        "(lower is better). DrQ(ε): its 100 released runs per game on the same games.",
    ]
    lines += _dropped(section)
    return lines + ["", "![aggregates](aggregates.png)", "", "![profiles](profiles.png)", ""]


def _dropped(section: dict) -> list[str]:
    """The seeds left out to make the runs x games matrix rectangular, per config."""
    per_config = section["dropped_seeds"]
    counts = section["seeds_per_game"]
    if not isinstance(counts, dict):  # the main aggregate: one config
        per_config, counts = {"": per_config}, {"": counts}
    lines = []
    for name, dropped in per_config.items():
        if dropped:
            listed = "; ".join(f"{g} {', '.join(map(str, s))}" for g, s in dropped.items())
            lines.append(
                f"{name + ': ' if name else ''}rliable needs the same number of runs per game: "
                f"each game's {counts[name]} lowest seeds are used; dropped seeds: {listed}."
            )
    return lines


def _compare(report: dict) -> list[str]:
    section = report["compare"]
    if section is None:
        return []
    ours, theirs, label = report["config"], section["config"], section["games_label"]
    lines = [f"## {ours} vs {theirs}, {label}", ""]
    if section["aggregate"] is None:
        return lines + ["No game has finished seeds of both configs.", ""]
    poi = section["probability_of_improvement"]
    lines += [
        f"P({ours} > {theirs}) = {_ci(poi['point'], poi['ci_low'], poi['ci_high'], _hns)}, "
        f"{label}: the chance that a run of {ours} scores above one of {theirs} on the same "
        "game, averaged over games (0.5: no difference).",
        "",
        *_aggregate_table(section["aggregate"]),
        "",
        *_dropped(section["aggregate"]),
        f"| game | {ours} mean | {theirs} mean | P({ours} > {theirs}) |",
        "|---|---|---|---|",
    ]
    for row in section["per_game"]:
        lines.append(
            f"| {row['game']} | {_score(row['mean'])} | {_score(row['compare_mean'])} | "
            f"{row['probability_of_improvement']:.2f} |"
        )
    return lines + [
        "",
        "![aggregates](compare_aggregates.png)",
        "",
        "![profiles](compare_profiles.png)",
        "",
    ]


def render_markdown(report: dict) -> str:
    """The whole `report.md`."""
    lines = [f"# {report['title']}", ""]
    if not report["suite_complete"]:
        lines += [
            f"**A subset, {report['games_label']}: not the 26-game Atari 100k figure.**",
            "",
        ]
    missing = report["games_missing"]
    lines += [
        f"Config `{report['config']}`, revision {', '.join(report['revisions'])}. "
        f"Games missing (no finished seed): {', '.join(missing) if missing else 'none'}.",
        "",
    ]
    lines += _per_game(report) + _timing(report) + _aggregate(report) + _compare(report)
    if report["unfinished"]:
        lines += [
            "## Unfinished runs (not scored)",
            "",
            "| game | seed | env steps | wall min |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {u['game']} | {u['seed']} | {u['env_steps']:,} | {u['wall_s'] / 60:,.1f} |"
            for u in report["unfinished"]
        ]
        lines.append("")
    return "\n".join(lines)
