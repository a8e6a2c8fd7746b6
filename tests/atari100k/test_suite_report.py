"""The Atari 100k suite report against values computed by hand on small fixtures: human
normalization, rliable's aggregates (IQM, median, mean, optimality gap), the inside / above /
below verdict at the CI's edges, the subset label, reproducible and exactly bounded bootstrap
CIs, the probability of improvement, the figures. No TensorFlow; a few seconds."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from matplotlib import image

from pipeline.atari100k import suite_stats
from pipeline.atari100k.references import (
    ATARI100K_GAMES,
    GAMES_CSV,
    human_normalized,
    load_drq_eps_runs,
    load_references,
)
from pipeline.atari100k.report import DRQ_EPS, GameRun, write_suite_report
from tests.conftest import REPO

REPS = 100  # bootstrap resamples: enough for these checks, quick on 2 cores

# Human-normalized scores by hand, 4 seeds per game (games in suite order). Breakout's 1.5
# is above human: the optimality gap clips it at 0.
HNS = {
    "Boxing": [0.05, 0.05, 0.05, 0.25],  # mean 0.10
    "Breakout": [0.1, 0.2, 0.4, 1.5],  # mean 0.55
    "Pong": [0.0, 0.3, 0.6, 0.9],  # mean 0.45
}
# All 12 sorted: 0, .05, .05, .05, .1, .2, .25, .3, .4, .6, .9, 1.5; IQM drops 3 each end:
IQM = (0.05 + 0.1 + 0.2 + 0.25 + 0.3 + 0.4) / 6  # 0.21667
MEDIAN = 0.45  # of the per-game means 0.10, 0.45, 0.55
MEAN = (0.10 + 0.55 + 0.45) / 3
# max(0, 1 - x): Boxing .95 .95 .95 .75, Breakout .9 .8 .6 0 (not -0.5), Pong 1 .7 .4 .1
GAP = (0.95 * 3 + 0.75 + 0.9 + 0.8 + 0.6 + 0.0 + 1.0 + 0.7 + 0.4 + 0.1) / 12  # 0.675


def raw(game: str, hns: float) -> float:
    """The game score whose human-normalized score is `hns`, from the CSV's columns."""
    ref = load_references()[game]
    return ref.random + hns * (ref.human - ref.random)


def run(game: str, seed: int, score: float | None, config: str = "ours", **kw) -> GameRun:
    fields = dict(
        env_steps=100_000 if score is not None else 40_000,
        wall_s=100.0,
        eval_wall_s=10.0,
        final_eval_wall_s=20.0,
        peak_rss_mb=1000.0,
        revision="abc1234",
    )
    fields.update(kw)
    return GameRun(config=config, game=game, seed=seed, final_score=score, **fields)


def fixture_runs(config: str = "ours", shift: float = 0.0) -> list[GameRun]:
    return [
        run(game, seed, raw(game, h + shift), config)
        for game, values in HNS.items()
        for seed, h in enumerate(values)
    ]


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """The 3-game fixture plus an unfinished Breakout seed and an Alien run with no finished
    seed; its report and output directory."""
    out = tmp_path_factory.mktemp("suite_subset")
    runs = fixture_runs() + [run("Breakout", 9, None), run("Alien", 0, None, env_steps=12_345)]
    return write_suite_report(runs, out, reps=REPS), out


def test_games_and_references_match_the_csv():
    with open(GAMES_CSV, newline="") as f:
        assert tuple(row["game"] for row in csv.DictReader(f)) == ATARI100K_GAMES
    assert len(set(ATARI100K_GAMES)) == 26
    refs = load_references()
    assert (refs["Breakout"].random, refs["Breakout"].human) == (1.7, 30.5)
    assert refs["Breakout"].drq_eps_runs == 100 and isinstance(refs["Breakout"].drq_eps_runs, int)
    assert (refs["Breakout"].drq_eps_mean_ci_low, refs["Breakout"].drq_eps_mean_ci_high) == (
        17.2,
        23.0,
    )
    runs = load_drq_eps_runs()
    assert all(len(runs[g]) == 100 for g in ATARI100K_GAMES)
    assert np.mean(runs["Breakout"]) == pytest.approx(19.8, abs=0.05)


def test_human_normalized_breakout_and_pong():
    # Breakout: random 1.7, human 30.5 -> (16.1 - 1.7) / 28.8
    assert human_normalized("Breakout", 16.1) == pytest.approx(0.5)
    assert human_normalized("Breakout", 1.7) == 0.0
    # Pong: random -20.7, human 14.6: -3.05 is half way
    assert human_normalized("Pong", -3.05) == pytest.approx(0.5)
    np.testing.assert_allclose(human_normalized("Pong", np.array([-20.7, 14.6])), [0.0, 1.0])
    with pytest.raises(ValueError, match="not an Atari 100k game"):
        human_normalized("Pacman", 1.0)


def test_aggregates_by_hand(subset):
    report, _ = subset
    ours = report["aggregate"]["estimates"]["ours"]
    assert ours["IQM"]["point"] == pytest.approx(IQM)
    assert ours["Median"]["point"] == pytest.approx(MEDIAN)
    assert ours["Mean"]["point"] == pytest.approx(MEAN)
    assert ours["Optimality gap"]["point"] == pytest.approx(GAP)
    for e in ours.values():
        assert e["ci_low"] <= e["point"] <= e["ci_high"]
    # every entry of the fixture lies in [0, 1.5]: so must every bound of every aggregate
    assert all(0.0 <= e[k] <= 1.5 for e in ours.values() for k in ("ci_low", "ci_high"))


def test_drq_eps_aggregate_over_all_26_games_is_the_published_figure():
    """anchors.md: DrQ(ε) over all 2,600 runs, IQM 0.280; median and mean of the per-game
    means as printed by the rliable colab."""
    published = load_drq_eps_runs()
    matrix = np.stack([human_normalized(g, published[g]) for g in ATARI100K_GAMES], axis=1)
    estimates = suite_stats.aggregates(matrix, reps=10)
    assert estimates["IQM"]["point"] == pytest.approx(0.280, abs=5e-4)
    assert estimates["Median"]["point"] == pytest.approx(0.312901399063074, abs=1e-6)
    assert estimates["Mean"]["point"] == pytest.approx(0.4647412513971657, abs=1e-6)


def test_per_game_rows(subset):
    report, _ = subset
    rows = {r["game"]: r for r in report["per_game"]}
    breakout = rows["Breakout"]
    assert breakout["n"] == 4 and breakout["unfinished"] == 1
    assert breakout["mean"] == pytest.approx(raw("Breakout", 0.55))
    assert breakout["hns_mean"] == pytest.approx(0.55)
    assert breakout["iqm"] == pytest.approx(raw("Breakout", 0.3))  # mean of the middle two
    assert (breakout["drq_eps_mean"], breakout["drq_eps_mean_ci_low"]) == (19.8, 17.2)
    # Breakout mean 1.7 + .55 x 28.8 = 17.54: inside DrQ(ε)'s [17.2, 23.0]
    assert breakout["vs_drq_eps"] == "inside"
    assert rows["Pong"]["vs_drq_eps"] == "above"  # -20.7 + .45 x 35.3 = -4.8 > -7.2
    assert rows["Boxing"]["vs_drq_eps"] == "below"  # 0.1 + .10 x 12 = 1.3 < 8.5
    assert rows["Alien"]["n"] == 0 and rows["Alien"]["vs_drq_eps"] == "missing"


def test_versus_at_the_edges(tmp_path):
    assert suite_stats.versus(17.2, 17.2, 23.0) == "inside"
    assert suite_stats.versus(23.0, 17.2, 23.0) == "inside"
    assert suite_stats.versus(17.19, 17.2, 23.0) == "below"
    assert suite_stats.versus(23.01, 17.2, 23.0) == "above"
    # through the report: one seed at each edge of Breakout's published CI and just past it
    runs = [run("Breakout", 0, 17.2), run("Pong", 0, -7.2), run("Alien", 0, 909.4)]
    runs += [run("Boxing", 0, 8.49)]
    rows = {r["game"]: r for r in write_suite_report(runs, tmp_path, reps=REPS)["per_game"]}
    assert rows["Breakout"]["vs_drq_eps"] == "inside"  # DrQ(ε) [17.2, 23.0]
    assert rows["Pong"]["vs_drq_eps"] == "inside"  # [-10.8, -7.2]
    assert rows["Alien"]["vs_drq_eps"] == "above"  # [823.9, 909.3]
    assert rows["Boxing"]["vs_drq_eps"] == "below"  # [8.5, 9.6]


def test_subset_is_labelled_a_subset(subset):
    report, out = subset
    label = "over 3 of 26 games: Boxing, Breakout, Pong"
    assert label in report["title"]
    assert report["suite_complete"] is False
    assert report["games_covered"] == ["Boxing", "Breakout", "Pong"]
    assert report["n_games_covered"] == 3
    assert "Alien" in report["games_missing"] and len(report["games_missing"]) == 23
    assert report["aggregate"]["games_label"] == label
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["suite_complete"] is False and on_disk["games_covered"] == [
        "Boxing",
        "Breakout",
        "Pong",
    ]
    md = (out / "report.md").read_text()
    assert md.splitlines()[0] == f"# Atari 100k suite: ours, {label}"
    aggregate_rows = [
        line for line in md.splitlines() if line.startswith(("| ours,", f"| {DRQ_EPS},"))
    ]
    assert len(aggregate_rows) == 2 and all(label in line for line in aggregate_rows)
    assert "all 26 games" not in md


def test_full_suite_is_not_labelled_a_subset(tmp_path):
    runs = [run(game, 0, load_references()[game].human) for game in ATARI100K_GAMES]
    report = write_suite_report(runs, tmp_path, reps=REPS)
    assert report["suite_complete"] is True and report["games_missing"] == []
    assert report["title"] == "Atari 100k suite: ours, all 26 games"
    assert "of 26 games" not in (tmp_path / "report.md").read_text()
    # every run at human level: every aggregate exactly 1 (gap 0), with zero-width CIs
    for name, e in report["aggregate"]["estimates"]["ours"].items():
        value = 0.0 if name == "Optimality gap" else 1.0
        assert (e["ci_low"], e["point"], e["ci_high"]) == pytest.approx((value,) * 3)


def test_unfinished_runs_are_listed_not_scored(subset):
    report, out = subset
    unfinished = {(u["game"], u["seed"]): u["env_steps"] for u in report["unfinished"]}
    assert unfinished == {("Breakout", 9): 40_000, ("Alien", 0): 12_345}
    assert report["aggregate"]["seeds_per_game"] == 4 and report["aggregate"]["dropped_seeds"] == {}
    assert "| Alien | 0 | 12,345 |" in (out / "report.md").read_text()


def test_bootstrap_is_reproducible_and_exactly_bounded(tmp_path):
    runs = fixture_runs() + [run("Alien", s, v) for s, v in enumerate([300.0, 500.0])]
    state = np.random.get_state()
    first = write_suite_report(runs, tmp_path / "a", reps=REPS)
    second = write_suite_report(runs, tmp_path / "b", reps=REPS)
    assert first == second  # rliable draws from the global generator: seeded, and restored
    assert np.array_equal(np.random.get_state()[1], state[1])
    # Two seeds a < b: a bootstrap mean is a (1/4), (a+b)/2 (1/2) or b (1/4), so the 2.5th and
    # 97.5th percentiles of 100 draws are a and b unless under 3 of them are a or b.
    alien = next(r for r in first["per_game"] if r["game"] == "Alien")
    assert (alien["mean_ci_low"], alien["mean"], alien["mean_ci_high"]) == (300.0, 400.0, 500.0)
    # Alien has 2 seeds: the aggregate keeps 2 per game and says which it dropped
    assert first["aggregate"]["seeds_per_game"] == 2
    assert first["aggregate"]["dropped_seeds"] == {g: [2, 3] for g in HNS}
    # All-equal seeds: zero-width CIs at that value
    mean, low, high = suite_stats.mean_with_ci(np.full(5, 7.5), reps=REPS)
    assert (low, mean, high) == (7.5, 7.5, 7.5)
    assert suite_stats.mean_with_ci(np.array([7.5]), reps=REPS) == (7.5, None, None)
    flat = suite_stats.aggregates(np.full((3, 4), 0.25), reps=REPS)
    for name, e in flat.items():
        value = 0.75 if name == "Optimality gap" else 0.25
        assert (e["ci_low"], e["point"], e["ci_high"]) == pytest.approx((value,) * 3)


def test_probability_of_improvement(tmp_path):
    better = write_suite_report(
        fixture_runs(shift=0.01), tmp_path / "a", compare=fixture_runs("theirs"), reps=REPS
    )["compare"]
    # P(ours > theirs) per game, pairs won of 16 (no ties): Boxing .06 x3 beat the three .05s,
    # .26 beats all four: 13; Breakout .11 .21 .41 1.51 beat 1, 2, 3, 4: 10; Pong likewise 10
    assert better["probability_of_improvement"]["point"] == pytest.approx((13 + 10 + 10) / 48)
    # every run of A above every run of B on each game: exactly 1.0, CI [1, 1]
    worse = [run(g, s, raw(g, -1.0 - s), "theirs") for g in HNS for s in range(4)]
    poi = write_suite_report(fixture_runs(), tmp_path / "b", compare=worse, reps=REPS)["compare"]
    assert poi["games"] == ["Boxing", "Breakout", "Pong"]
    p = poi["probability_of_improvement"]
    assert (p["ci_low"], p["point"], p["ci_high"]) == (1.0, 1.0, 1.0)
    assert [row["probability_of_improvement"] for row in poi["per_game"]] == [1.0, 1.0, 1.0]
    # identical runs: 0.5
    same = write_suite_report(
        fixture_runs(), tmp_path / "c", compare=fixture_runs("theirs"), reps=REPS
    )
    assert same["compare"]["probability_of_improvement"]["point"] == 0.5
    assert (tmp_path / "c" / "compare_aggregates.png").exists()


def test_figures_are_nontrivial_pngs(subset):
    report, out = subset
    assert set(report["files"]) == {"report.md", "report.json", "aggregates.png", "profiles.png"}
    for name in ("aggregates.png", "profiles.png"):
        pixels = image.imread(out / name)
        assert pixels.shape[0] > 150 and pixels.shape[1] > 400
        assert np.ptp(pixels[..., :3]) > 0.5  # ink on paper, not one flat colour


def test_timing_memory_and_the_long_pole(tmp_path):
    runs = [
        run("Pong", 0, -10.0, wall_s=100.0, eval_wall_s=10.0, final_eval_wall_s=60.0),
        run(
            "Pong",
            1,
            -11.0,
            wall_s=200.0,
            eval_wall_s=10.0,
            final_eval_wall_s=60.0,
            peak_rss_mb=None,
        ),
        run("Pong", 2, None, wall_s=900.0, peak_rss_mb=3000.0),  # unfinished: memory counts
        run("Breakout", 0, 10.0, wall_s=100.0, eval_wall_s=10.0, final_eval_wall_s=20.0),
    ]
    rows = {
        r["game"]: r["timing"] for r in write_suite_report(runs, tmp_path, reps=REPS)["per_game"]
    }
    pong = rows["Pong"]
    assert pong["wall_s"] == {"mean": 150.0, "max": 200.0}  # finished runs only
    assert pong["training_s"] == {"mean": 80.0, "max": 130.0}  # 100-70, 200-70
    assert pong["final_eval_s"] == {"mean": 60.0, "max": 60.0}
    assert pong["peak_rss_mb"] == 3000.0
    assert pong["final_eval_long_pole"] is False  # 60 < 80
    runs[1] = run("Pong", 1, -11.0, wall_s=100.0, eval_wall_s=10.0, final_eval_wall_s=60.0)
    rows = {
        r["game"]: r["timing"] for r in write_suite_report(runs, tmp_path, reps=REPS)["per_game"]
    }
    assert rows["Pong"]["final_eval_long_pole"] is True  # 60 > 30
    assert rows["Breakout"]["final_eval_long_pole"] is False  # 20 < 70
    assert "**final eval > training**" in (tmp_path / "report.md").read_text()


def test_bad_input_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="several configs"):
        write_suite_report([run("Pong", 0, 1.0), run("Pong", 1, 1.0, "b")], tmp_path)
    with pytest.raises(ValueError, match="appears twice"):
        write_suite_report([run("Pong", 0, 1.0), run("Pong", 0, 2.0)], tmp_path)
    with pytest.raises(ValueError, match="not an Atari 100k game"):
        write_suite_report([run("Pacman", 0, 1.0)], tmp_path)
    with pytest.raises(ValueError, match="no runs"):
        write_suite_report([], tmp_path)


def test_no_tensorflow(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from pipeline.atari100k.report import GameRun, write_suite_report
        runs = [GameRun("a", "Pong", s, -10.0 + s, 100000, 1.0, 0.1, 0.1, None, "r")
                for s in range(2)]
        write_suite_report(runs, Path({str(tmp_path)!r}), reps=20)
        assert "tensorflow" not in sys.modules, "the report imported TensorFlow"
        """
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
