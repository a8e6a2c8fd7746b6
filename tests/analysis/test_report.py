"""pipeline.report: grouping, curves, the table's numbers and its errors, on real tiny
CartPole runs and on hand-written run directories for the edge cases."""

from __future__ import annotations

import csv
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import report
from pipeline.analysis.report import stats, tables
from pipeline.analysis.runs import load_run
from tests import bootstrap_exact
from tests.conftest import REPO, TINY_RUN, bindings

FAST = ["--reps", "200"]  # bootstrap resamples: enough for the tests, quick on 2 cores


@pytest.fixture(scope="session")
def tiny_seeds(tiny_run: Path, tmp_path_factory) -> list[Path]:
    """Three tiny real CartPole runs, seeds 0-2: conftest's `tiny_run` (seed 0, shared with
    other tests) and seeds 1 and 2 trained side by side, laid out as a sweep: <dir>/tiny/s<seed>."""
    sweep = tmp_path_factory.mktemp("report_sweep")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.train",
                *bindings(*TINY_RUN, f"train.seed={seed}"),
                f"--root_dir={sweep / 'tiny' / f's{seed}'}",
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    return [tiny_run, sweep / "tiny" / "s1", sweep / "tiny" / "s2"]


def make_run(
    run_dir: Path,
    seed: int,
    evals: list[tuple[int, float]],
    *,
    gin_file: str = "dqn_cartpole",
    bindings: tuple[str, ...] = (),
    total_env_steps: int | None = None,
) -> Path:
    """A hand-written run directory: config.gin as gin writes it, run.json, metrics.jsonl."""
    run_dir.mkdir(parents=True)
    config = {
        "load_gymnasium.env_id": "'CartPole-v1'",
        "train.batch_size": "64",
        "train.seed": str(seed),
        "train.total_env_steps": str(total_env_steps or max(s for s, _ in evals or [(0, 0)])),
    }
    for binding in bindings:
        name, value = binding.split("=", 1)
        config[name] = value
    if gin_file != "dqn_cartpole":
        config["train.agent"] = f"@{gin_file}"
    lines = []
    for name in sorted(config):
        lines += [f"# Parameters for {name.split('.')[0]}:", "# " + "=" * 78, ""]
        lines.append(f"{name} = {config[name]}")
        lines.append("")
    (run_dir / "config.gin").write_text("\n".join(lines))
    info = {
        "seed": seed,
        "gin_files": [f"/somewhere/gin/{gin_file}.gin"],
        "gin_bindings": [*bindings, f"train.seed={seed}"],
    }
    (run_dir / "run.json").write_text(json.dumps(info))
    rows = [
        json.dumps({"env_steps": s, "eval_return_mean": r, "eval_episodes": 3}) for s, r in evals
    ]
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in rows))
    return run_dir


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_report(capsys, *args: object) -> tuple[int, str, str]:
    status = report.command([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_valid_png(path: Path) -> None:
    assert path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 100 and image.size[1] > 100
        image.verify()


# --- real runs -------------------------------------------------------------------------------


def test_report_on_real_tiny_runs_matches_their_metrics(tiny_seeds: list[Path], tmp_path: Path):
    """One run named, two found by searching their sweep directory: one setting, 3 seeds."""
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.report", str(tiny_seeds[0]), str(tiny_seeds[1].parent)]
        + ["--out", str(out)]
        + ["--threshold", "12", *FAST],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "| dqn_cartpole | setting | 3 seeds | 1,500 |" in result.stdout

    finals, bests, reach = [], [], []
    for run_dir in tiny_seeds:
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").open()]
        returns = [r["eval_return_mean"] for r in rows]
        finals.append(returns[-1])
        bests.append(max(returns))
        hits = [float(r["env_steps"]) for r in rows if r["eval_return_mean"] >= 12]
        reach.append(hits[0] if hits else math.inf)

    (row,) = read_csv(out / "report.csv")
    assert row["setting"] == "dqn_cartpole" and row["kind"] == "setting"
    assert int(row["n"]) == 3 and row["env_steps"] == "1500"
    assert float(row["final_return_mean"]) == pytest.approx(statistics.mean(finals))
    assert float(row["final_return_std"]) == pytest.approx(statistics.stdev(finals))
    assert float(row["iqm"]) == pytest.approx(statistics.mean(finals))  # 3 seeds: no trim
    # The CI is a 95% percentile bootstrap over these seeds: each bound within the data, and
    # past the exact bootstrap's 15% (85%) quantile, which 200 draws miss with p < 1e-6.
    low, high = float(row["iqm_ci_low"]), float(row["iqm_ci_high"])
    assert min(finals) - 1e-9 <= low <= bootstrap_exact.quantile(finals, 0.15) + 1e-9, low
    assert bootstrap_exact.quantile(finals, 0.85) - 1e-9 <= high <= max(finals) + 1e-9, high
    assert float(row["best_return_mean"]) == pytest.approx(statistics.mean(bests))
    assert float(row["best_return_max"]) == pytest.approx(max(bests))
    assert int(row["never_reached"]) == sum(math.isinf(x) for x in reach)
    median = statistics.median(reach)
    assert row["steps_to_threshold_median"] == ("" if math.isinf(median) else repr(median))
    runs = read_csv(out / "runs.csv")
    assert [r["seed"] for r in runs] == ["0", "1", "2"]
    assert_valid_png(out / "learning_curves.png")
    assert "![learning curves](learning_curves.png)" in (out / "report.md").read_text()


# --- synthetic runs --------------------------------------------------------------------------


def test_table_numbers_match_a_hand_computation(tmp_path: Path, capsys):
    finals = [100.0, 200.0, 450.0]
    for seed, final in enumerate(finals):
        evals = [(0, 10.0), (100, 300.0 if seed == 0 else 50.0), (200, final)]
        make_run(tmp_path / "runs" / f"s{seed}", seed, evals)
    status, _, err = run_report(
        capsys, tmp_path / "runs", "--out", tmp_path / "out", "--threshold", 250, *FAST
    )
    assert status == 0, err

    (row,) = read_csv(tmp_path / "out" / "report.csv")
    assert float(row["final_return_mean"]) == pytest.approx(250.0)
    assert float(row["final_return_std"]) == pytest.approx(statistics.stdev(finals))  # n - 1
    assert float(row["best_return_mean"]) == pytest.approx((300 + 200 + 450) / 3)
    assert float(row["best_return_max"]) == 450.0
    # Seeds reach 250 at 100, never, 200: the median counts "never" as infinite.
    assert float(row["steps_to_threshold_median"]) == 200.0
    assert row["never_reached"] == "1"
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| 250.0 ± 180.3 |" in md and "| 200 (1 of 3 never) |" in md


def test_iqm_ci_is_reproducible_and_leaves_the_global_generator_alone():
    """rliable draws its resamples from NumPy's global generator (np.random.choice), not the
    RandomState it is handed: the report seeds that generator for its draws and restores it."""
    finals = np.array([10.0, 55.0, 120.0, 300.0, 480.0])
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = stats.iqm_with_ci(finals, reps=300)
    assert np.array_equal(np.random.get_state()[1], before)
    np.random.random(7)  # the caller's draws in between change nothing
    assert stats.iqm_with_ci(finals, reps=300) == first


def test_iqm_trims_a_quarter_from_each_end():
    finals = [10.0, 20.0, 30.0, 400.0]
    iqm, low, high = stats.iqm_with_ci(np.array(finals), reps=500)
    assert iqm == pytest.approx(25.0) == bootstrap_exact.iqm(finals)  # mean of 20 and 30
    # 500 draws put the 2.5% quantile below the exact bootstrap's 10% one (p < 1e-9)
    assert 10.0 <= low <= bootstrap_exact.quantile(finals, 0.10) == 15.0
    assert 215.0 == bootstrap_exact.quantile(finals, 0.90) <= high <= 400.0


def test_iqm_ci_is_the_exact_bootstrap_percentile_interval():
    """On scores whose exact bootstrap distribution (all 6^6 resamples) puts the 2.5% and
    97.5% quantiles well inside one atom each, 10,000 draws give exactly those IQMs (a draw
    share off by 0.011, 7 standard deviations, would be needed to miss them); a 90% CI's
    quantiles are other atoms."""
    finals = [0.0, 1.0, 2.0, 2.0, 2.0, 8.0]
    assert bootstrap_exact.margin(finals, 0.025) > 0.011 < bootstrap_exact.margin(finals, 0.975)
    bounds = [bootstrap_exact.quantile(finals, p) for p in (0.025, 0.975)]
    expected = (bootstrap_exact.iqm(finals), *bounds)
    assert expected == pytest.approx((1.75, 0.75, 5.0))  # (0+0+1+2)/4, (2+2+8+8)/4
    assert [bootstrap_exact.quantile(finals, p) for p in (0.05, 0.95)] == [1.0, 4.75]
    assert stats.iqm_with_ci(np.array(finals), reps=10_000) == pytest.approx(expected)
    # All seeds alike: every resample is the same, a zero-width CI at that score.
    assert stats.iqm_with_ci(np.full(4, 7.5), reps=200) == (7.5, 7.5, 7.5)


def test_settings_group_by_config_and_are_labelled_by_what_differs(tmp_path: Path, capsys):
    sweep = tmp_path / "sweep"
    common = ("train.total_env_steps=200",)
    for seed in (0, 1):
        make_run(
            sweep / "base" / f"s{seed}", seed, [(0, 10.0), (200, 20.0 + seed)], bindings=common
        )
        make_run(
            sweep / "bs32" / f"s{seed}",
            seed,
            [(0, 10.0), (200, 40.0 + seed)],
            bindings=(*common, "train.batch_size = 32"),
        )
    make_run(
        sweep / "ddqn" / "s0",
        0,
        [(0, 10.0), (200, 60.0)],
        gin_file="ddqn_cartpole",
        bindings=common,
    )
    status, _, err = run_report(capsys, sweep, "--out", tmp_path / "out", *FAST)
    assert status == 0, err

    rows = read_csv(tmp_path / "out" / "report.csv")
    assert [(r["setting"], r["n"], r["final_return_mean"]) for r in rows] == [
        ("dqn_cartpole", "2", "20.5"),
        ("dqn_cartpole [train.batch_size=32]", "2", "40.5"),
        ("ddqn_cartpole", "1", "60.0"),
    ]
    assert rows[2]["final_return_std"] == ""  # one seed: no spread
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Bindings shared by every setting: `train.total_env_steps=200`" in md


def test_settings_with_the_same_bindings_but_other_configs_are_told_apart(tmp_path: Path):
    runs = [
        load_run(make_run(tmp_path / name, 0, [(0, 1.0)], bindings=extra), True)
        for name, extra in (("a", ()), ("b", ()))
    ]
    runs[1].config["DqnAgent.gamma"] = "0.9"  # a gin file edited between the two runs
    settings, _ = stats.group_settings(runs, [])
    assert [s.label for s in settings] == [
        "dqn_cartpole {DqnAgent.gamma=(unset)}",
        "dqn_cartpole {DqnAgent.gamma=0.9}",
    ]


def test_runs_of_different_lengths_are_interpolated_not_extrapolated(tmp_path: Path, capsys):
    short = make_run(
        tmp_path / "runs" / "s0", 0, [(0, 0.0), (100, 100.0), (200, 200.0)], total_env_steps=300
    )
    long = make_run(
        tmp_path / "runs" / "s1", 1, [(0, 0.0), (150, 30.0), (300, 60.0)], total_env_steps=300
    )
    runs = [load_run(p, True) for p in (short, long)]
    steps, mean, low, high, count = stats.mean_curve(runs, reps=300)
    assert steps.tolist() == [0, 100, 150, 200, 300]
    assert count.tolist() == [2, 2, 2, 2, 1]
    # At 100 the long run is interpolated (20); at 150 the short one (150); 300: long only.
    assert mean.tolist() == pytest.approx([0.0, 60.0, 90.0, 120.0, 60.0])
    assert low[-1] == high[-1] == 60.0  # a single seed: no band
    assert np.all(low <= mean + 1e-9) and np.all(mean <= high + 1e-9)
    assert low[2] == pytest.approx(30.0) and high[2] == pytest.approx(150.0)

    status, _, err = run_report(capsys, tmp_path / "runs", "--out", tmp_path / "out", *FAST)
    assert status == 0, err
    assert "run " + str(short) + " is unfinished (last eval at 200 of 300 env steps)" in err
    (row,) = read_csv(tmp_path / "out" / "report.csv")
    assert row["env_steps"] == "200-300" and row["note"] == "1 unfinished"
    assert float(row["final_return_mean"]) == pytest.approx(130.0)  # each run's last eval
    assert_valid_png(tmp_path / "out" / "learning_curves.png")


def test_a_named_run_without_evaluations_is_an_error_and_nothing_is_written(tmp_path: Path):
    good = make_run(tmp_path / "good", 0, [(0, 1.0)])
    empty = make_run(tmp_path / "empty", 1, [])
    (empty / "metrics.jsonl").write_text('{"env_steps": 0, "eval_ret')  # a torn first line
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.report", str(good), str(empty), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"error: run {empty} has no evaluations yet: wait for its first eval or remove it\n"
    )
    assert result.stdout == "" and not out.exists()


def test_a_found_run_without_evaluations_is_skipped_with_a_warning(tmp_path: Path, capsys):
    make_run(tmp_path / "sweep" / "s0", 0, [(0, 1.0), (100, 5.0)])
    waiting = make_run(tmp_path / "sweep" / "s1", 1, [])
    status, _, err = run_report(capsys, tmp_path / "sweep", *FAST)
    assert status == 0, err
    assert f"warning: skipped run {waiting}: no evaluations yet" in err
    out = tmp_path / "sweep" / "report"  # the default: report/ in the runs' common directory
    assert [r["n"] for r in read_csv(out / "report.csv")] == ["1"]
    assert "skipped run" in (out / "report.md").read_text()


def test_no_runs_at_all_is_an_error(tmp_path: Path, capsys):
    (tmp_path / "empty_sweep" / "a").mkdir(parents=True)
    status, out, err = run_report(capsys, tmp_path / "empty_sweep", "--out", tmp_path / "out")
    assert status == 2 and out == ""
    assert err.startswith("error: no run directories found under ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()

    only_waiting = make_run(tmp_path / "sweep" / "s0", 0, [])
    status, _, err = run_report(capsys, tmp_path / "sweep", "--out", tmp_path / "out")
    assert status == 2 and err.startswith(f"error: run {only_waiting} has no evaluations yet")
    assert not (tmp_path / "out").exists()

    status, _, err = run_report(capsys, tmp_path / "missing")
    assert status == 2 and err == f"error: {tmp_path / 'missing'} does not exist: " + (
        "pass run directories or a sweep directory\n"
    )


def test_baselines_and_references_join_the_table_for_the_runs_env(tmp_path: Path, capsys):
    make_run(tmp_path / "runs" / "s0", 0, [(0, 10.0), (50_000, 480.0)])
    make_run(tmp_path / "runs" / "s1", 1, [(0, 12.0), (50_000, 500.0)])
    baselines = tmp_path / "baselines.md"
    baselines.write_text(
        "# Baselines\n\n| policy | env | episodes | return mean ± std | min / max |\n"
        "|---|---|---:|---:|---:|\n"
        "| uniform random | CartPole-v1 | 20 | 22.4 ± 10.5 | 10 / 49 |\n"
        "| uniform random | Breakout (cap 27,000 frames) | 20 | 1.4 ± 1.5 | 0 / 5 |\n"
    )
    references = REPO / "data" / "reference_points.csv"
    status, _, err = run_report(
        capsys,
        tmp_path / "runs",
        "--out",
        tmp_path / "out",
        "--threshold",
        475,
        "--baselines",
        baselines,
        "--references",
        references,
        *FAST,
    )
    assert status == 0, err
    rows = read_csv(tmp_path / "out" / "report.csv")
    kinds = [r["kind"] for r in rows]
    assert kinds[:2] == ["setting", "baseline"] and set(kinds[2:]) == {"reference"}
    assert (rows[1]["setting"], rows[1]["final_return_mean"], rows[1]["final_return_std"]) == (
        "uniform random",
        "22.4",
        "10.5",
    )
    assert rows[1]["n"] == "20" and rows[1]["n_unit"] == "episodes"
    shipped = read_csv(references)
    cartpole = [r for r in shipped if r["env"] == "CartPole-v1"]
    assert len(rows) == 2 + len(cartpole) and len(cartpole) < len(shipped)  # Breakout left out
    assert {r["final_return_mean"] for r in rows[2:]} == {
        repr(float(r["return"])) for r in cartpole
    }
    assert_valid_png(tmp_path / "out" / "learning_curves.png")


def test_a_bad_baselines_file_is_one_line(tmp_path: Path, capsys):
    make_run(tmp_path / "run", 0, [(0, 1.0)])
    bad = tmp_path / "b.csv"
    bad.write_text("name,score\nrandom,20\n")
    status, _, err = run_report(
        capsys, tmp_path / "run", "--baselines", bad, "--out", tmp_path / "o"
    )
    assert status == 2 and err.startswith("error: --baselines ") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_env_names_are_matched_loosely():
    keys = {tables.env_key(n) for n in ("CartPole-v1", "cartpole", "CartPole-v0")}
    assert keys == {"cartpole"}
    names = (
        "Breakout",
        "BreakoutNoFrameskip-v4",
        "ALE/Breakout-v5",
        "Breakout (cap 27,000 frames)",
    )
    assert {tables.env_key(n) for n in names} == {"breakout"}
