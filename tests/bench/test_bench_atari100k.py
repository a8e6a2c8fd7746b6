"""The Atari-100k benchmark's report: finished and unfinished seeds, IQM, wall times."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from pipeline.run import rundir
from pipeline.run.checkpoints import CheckpointStore
from tests import bootstrap_exact
from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("atari100k", REPO / "scripts/bench/atari100k.py")
atari100k = importlib.util.module_from_spec(spec)
spec.loader.exec_module(atari100k)


def fake_run(
    run_dir: Path,
    seed: int,
    curve: list[tuple[int, float]],
    wall_s: float,
    lr: float = 1e-4,
    eval_s: dict[str, float] | None = None,
    dirty: bool = False,
) -> None:
    """A run directory as pipeline.train leaves it: config, metrics rows, a checkpoint."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.gin").write_text(
        f"train.seed = {seed}\ntrain.total_env_steps = 100000\nload_atari.game = 'Breakout'\n"
        f"Adam.learning_rate = {lr}\n"
    )
    git = {"revision": "abc", "dirty": dirty}
    rundir.write_json(run_dir / "run.json", {"seed": seed, "git": git})
    rows = [
        {"env_steps": steps, "eval_return_mean": score, "eval_return_std": 1.0,
         "eval_episodes": 100 if steps == 100_000 else 10}
        for steps, score in curve
    ]  # fmt: skip
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = CheckpointStore(run_dir / "checkpoints", keep=2)
    last = curve[-1][0]
    loop = {"wall_s": wall_s} if eval_s is None else {"wall_s": wall_s, "eval_s": eval_s}
    store.save(last, lambda d: rundir.write_json(d / "loop.json", loop))


def test_report_counts_finished_seeds_and_their_wall_times(tmp_path: Path, capsys):
    scores = [12.0, 18.0, 15.0, 25.0]
    timed = {"20000": 60.0, "100000": 300.0}  # seconds each evaluation took
    for seed, score in enumerate(scores):
        fake_run(
            tmp_path / f"s{seed}", seed, [(20_000, 2.0), (100_000, score)], 2_400.0 + seed,
            eval_s=timed if seed == 0 else None,  # seeds 1-3: runs from before the timing
            dirty=seed == 2,
        )  # fmt: skip
    fake_run(  # cut off mid-way
        tmp_path / "s4", 4, [(20_000, 3.0), (40_000, 5.0)], 900.0,
        eval_s={"20000": 30.0, "40000": 42.0},
    )  # fmt: skip
    args = bench_args([0, 1, 2, 3, 4], archive=None)
    summary = atari100k.write_report(args, tmp_path)
    assert summary["seeds_finished"] == 4
    assert summary["iqm"] == pytest.approx(16.5)  # the middle two of 12, 15, 18, 25
    assert summary["median"] == pytest.approx(16.5)
    assert summary["min"] == 12.0 and summary["seeds_at_least_10"] == 4
    assert summary["wall_s_max"] == pytest.approx(2_403.0)
    # A 95% percentile bootstrap of the finished seeds' IQM: between the extreme scores and
    # past the exact bootstrap's 10% (90%) quantile, which 500 draws miss with p < 1e-9.
    low, high = summary["iqm_ci95"]
    assert bootstrap_exact.quantile(scores, 0.10) == 13.5  # (12 + 15) / 2
    assert bootstrap_exact.quantile(scores, 0.90) == 21.5  # (18 + 25) / 2
    assert 12.0 <= low <= 13.5 and 21.5 <= high <= 25.0, (low, high)
    report = json.loads((tmp_path / "report.json").read_text())
    unfinished = report["seeds"][4]
    assert not unfinished["finished"] and unfinished["env_steps"] == 40_000
    markdown = (tmp_path / "report.md").read_text()
    assert "| 4 | 40,000 (unfinished) | - | - | 15.0 min | 1.2 min |" in markdown
    assert "| 0 | 100,000 | 12.0 +- 1.0 | 100 | 40.0 min | 6.0 min (5.0 min) |" in markdown
    assert "| 1 | 100,000 | 18.0 +- 1.0 | 100 | 40.0 min | - |" in markdown
    assert "| DrQ(eps) IQM | 16.4 |" in markdown  # from data/atari100k_breakout.csv
    assert f"--seeds=0,1,2,3,4 --out={tmp_path}`" in markdown  # the command that reruns it
    assert "revision each seed ran): abc: seeds 0,1,3,4; abc (uncommitted changes): seeds 2." in (
        markdown
    )
    assert (tmp_path / "curve" / "learning_curves.png").stat().st_size > 0
    capsys.readouterr()


def bench_args(seeds: list[int], archive: Path | None) -> argparse.Namespace:
    return argparse.Namespace(
        seeds=seeds, gin_file="drq_breakout.gin", gin_bindings=[], reps=500, archive=archive
    )


def test_finished_seeds_outlive_their_run_directories_in_the_archive(tmp_path: Path, capsys):
    """runs/ is gone on the next machine: the archived records still make the report, and
    the bench trains only the seeds that have none."""
    out, archive = tmp_path / "runs", tmp_path / "archive"
    for seed, score in enumerate([12.0, 18.0]):
        fake_run(
            out / f"s{seed}", seed, [(20_000, 2.0), (100_000, score)], 2_400.0 + seed,
            eval_s={"20000": 60.0, "100000": 300.0},
        )  # fmt: skip
    fake_run(out / "s2", 2, [(20_000, 3.0)], 500.0)  # unfinished: nothing to keep yet
    before = atari100k.write_report(bench_args([0, 1, 2], archive), out)
    assert sorted(p.name for p in archive.iterdir()) == ["s0", "s1"]
    assert (archive / "s0" / "checkpoints").exists() is False
    record = archive / "s0" / "bench.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "archived": "earlier"}))
    atari100k.write_report(bench_args([0, 1, 2], archive), out)  # the runs are still there
    assert json.loads(record.read_text())["archived"] == "earlier"  # not written again

    for seed in range(3):
        shutil.rmtree(out / f"s{seed}")
    after = atari100k.write_report(bench_args([0, 1], archive), out)
    assert after["iqm"] == before["iqm"] and after["wall_s_max"] == pytest.approx(2_401.0)
    report = json.loads((out / "report.json").read_text())
    assert [s["archived"] for s in report["seeds"]] == [True, True]
    assert report["seeds"][1]["run_dir"] == str(archive / "s1")
    assert report["seeds"][1]["eval_s"] == {"20000": 60.0, "100000": 300.0}  # kept too
    # Every seed archived: nothing is trained (training would fail on these fake records).
    forwarder = atari100k.Forwarder()
    assert atari100k.train_seeds(bench_args([0, 1], archive), out, forwarder) is None
    assert not (out / "s0.log").exists()
    capsys.readouterr()


def test_a_report_refuses_seeds_from_two_configs(tmp_path: Path, monkeypatch, capsys):
    fake_run(tmp_path / "s0", 0, [(100_000, 12.0)], 2_400.0)
    fake_run(tmp_path / "s1", 1, [(100_000, 18.0)], 2_400.0, lr=3e-4)
    monkeypatch.setattr(
        "sys.argv", ["atari100k.py", "--seeds=0-1", f"--out={tmp_path}", "--report_only",
                     "--archive="],
    )  # fmt: skip
    assert atari100k.main() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 different configs (seeds 0; seeds 1)" in err
    assert not (tmp_path / "report.md").exists()


def test_bad_seeds_are_one_line(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["atari100k.py", "--seeds=4-1"])
    assert atari100k.main() == 2
    assert capsys.readouterr().err.count("\n") == 1
