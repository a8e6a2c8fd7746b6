"""`python -m pipeline.atari100k` without training: which runs count as finished, the records
that outlive run directories (the suite's `<Game>/sS` and the Breakout bench's older `sS`),
the one-config check, bad input, the plan a dry run prints."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.atari100k import records
from pipeline.atari100k import suite as suites
from pipeline.run import rundir
from pipeline.run.checkpoints import CheckpointStore
from pipeline.sweep import usage
from tests.conftest import REPO

FFA91B0 = REPO / "data" / "results" / "atari100k" / "drq_breakout-ffa91b0"


def fake_run(
    run_dir: Path,
    seed: int,
    curve: list[tuple[int, float]],
    wall_s: float,
    game: str = "Breakout",
    lr: float = 1e-4,
    eval_s: dict[str, float] | None = None,
    dirty: bool = False,
) -> None:
    """A run directory as pipeline.train leaves it: config, metrics rows, a checkpoint."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.gin").write_text(
        f"train.seed = {seed}\ntrain.total_env_steps = 100000\nload_atari.game = '{game}'\n"
        f"Adam.learning_rate = {lr}\n"
    )
    git = {"revision": "abcdef123", "dirty": dirty}
    rundir.write_json(run_dir / "run.json", {"seed": seed, "git": git})
    rows = [
        {"env_steps": steps, "eval_return_mean": score, "eval_return_std": 1.0,
         "eval_episodes": 100 if steps == 100_000 else 10}
        for steps, score in curve
    ]  # fmt: skip
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = CheckpointStore(run_dir / "checkpoints", keep=2)
    loop = {"wall_s": wall_s} if eval_s is None else {"wall_s": wall_s, "eval_s": eval_s}
    store.save(curve[-1][0], lambda d: rundir.write_json(d / "loop.json", loop))


def a_suite(out: Path, archive: Path | None, games: str = "Breakout", seeds: str = "0-4"):
    return suites.build_suite("atari100k.gin", [], games, None, seeds, str(out), str(archive))


def test_results_count_finished_runs_with_their_wall_times_and_memory(tmp_path: Path):
    out = tmp_path / "out"
    timed = {"20000": 60.0, "100000": 300.0}  # seconds each evaluation took
    for seed, score in enumerate([12.0, 18.0, 15.0, 25.0]):
        fake_run(
            out / "Breakout" / f"s{seed}", seed, [(20_000, 2.0), (100_000, score)],
            2_400.0 + seed, eval_s=timed if seed == 0 else None, dirty=seed == 2,
        )  # fmt: skip
    fake_run(  # cut off mid-way
        out / "Breakout" / "s4", 4, [(20_000, 3.0), (40_000, 5.0)], 900.0,
        eval_s={"20000": 30.0, "40000": 42.0},
    )  # fmt: skip
    usage.record(out / "Breakout" / "s0.log", "local", 1_000.0, 75, 900.0)  # two attempts
    usage.record(out / "Breakout" / "s0.log", "local", 1_400.0, 0, 1_250.5)
    suite = a_suite(out, archive=None)
    runs = {r.seed: r.game_run(suite.label) for r in suite.results()}
    assert [runs[s].final_score for s in range(5)] == [12.0, 18.0, 15.0, 25.0, None]
    first = runs[0]
    assert (first.config, first.game, first.env_steps, first.wall_s) == (
        "out",
        "Breakout",
        100_000,
        2_400.0,
    )
    assert (first.eval_wall_s, first.final_eval_wall_s) == (60.0, 300.0)  # along the way; final
    assert first.peak_rss_mb == 1_250.5  # the larger of its two attempts
    assert runs[1].peak_rss_mb is None and runs[1].eval_wall_s == 0.0  # not measured then
    assert runs[2].revision == "abcdef1+dirty" and runs[3].revision == "abcdef1"
    unfinished = runs[4]
    assert unfinished.env_steps == 40_000 and unfinished.wall_s == 900.0
    assert (unfinished.eval_wall_s, unfinished.final_eval_wall_s) == (72.0, 0.0)


def test_an_unfinished_run_stands_at_its_newest_checkpoint(tmp_path: Path):
    """A run stopped by SIGTERM checkpoints past its last evaluation: the report counts the
    checkpoint's steps (what a resume starts from), not the evaluation's."""
    run_dir = tmp_path / "out" / "Pong" / "s0"
    fake_run(run_dir, 0, [(0, -21.0)], 10.0, game="Pong")
    store = CheckpointStore(run_dir / "checkpoints", keep=2)
    store.save(7_808, lambda d: rundir.write_json(d / "loop.json", {"wall_s": 190.0}))
    (result,) = a_suite(tmp_path / "out", None, games="Pong", seeds="0").results()
    run = result.game_run("out")
    assert (run.env_steps, run.wall_s, run.final_score) == (7_808, 190.0, None)


def test_finished_runs_outlive_their_run_directories_in_the_archive(tmp_path: Path, capsys):
    """runs/ is gone on the next machine: the records still make the report, and the suite
    trains only the runs that have none."""
    out, archive = tmp_path / "runs", tmp_path / "archive"
    for seed, score in enumerate([12.0, 18.0]):
        fake_run(
            out / "Pong" / f"s{seed}", seed, [(20_000, -20.0), (100_000, score)],
            2_400.0 + seed, game="Pong", eval_s={"20000": 60.0, "100000": 300.0},
        )  # fmt: skip
    fake_run(out / "Pong" / "s2", 2, [(20_000, -19.0)], 500.0, game="Pong")  # unfinished
    usage.record(out / "Pong" / "s1.log", "local", 2_500.0, 0, 812.0)
    suite = a_suite(out, archive, games="Pong", seeds="0-2")
    suites.write_report(suite, reps=200)
    assert sorted(p.name for p in (archive / "Pong").iterdir()) == ["s0", "s1"]
    assert not (archive / "Pong" / "s0" / "checkpoints").exists()
    kept = json.loads((archive / "Pong" / "s1" / "bench.json").read_text())
    assert kept["peak_rss_mb"] == 812.0 and kept["final_eval_wall_s"] == 300.0
    assert kept["eval_s"] == {"20000": 60.0, "100000": 300.0} and kept["attempts"][0]["exit"] == 0
    record = archive / "Pong" / "s0" / "bench.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "archived": "earlier"}))
    suites.write_report(suite, reps=200)  # the runs are still there
    assert json.loads(record.read_text())["archived"] == "earlier"  # not written again

    shutil.rmtree(out)
    suite = a_suite(out, archive, games="Pong", seeds="0-1")
    results = suite.results()
    assert [r.archived for r in results] == [True, True]
    assert [r.final_score for r in results] == [12.0, 18.0] and results[1].peak_rss_mb == 812.0
    assert results[1].run_dir == archive / "Pong" / "s1"
    # Every run archived: nothing is trained (training would fail on these fake records).
    assert suites.run_local(suite) == 0
    assert not (out / "Pong" / "s0.log").exists()
    assert "Pong/s1: finished earlier, record in" in capsys.readouterr().out


def test_the_breakout_bench_records_count_for_breakout(tmp_path: Path):
    """The five DrQ(ε) seeds archived before the suite (`<archive>/sS`, no game level) are
    Breakout's in a suite that reads that archive, and no other game's."""
    suite = a_suite(tmp_path / "out", FFA91B0, games="Breakout,Pong", seeds="0-4")
    results = {(r.game, r.seed): r for r in suite.results()}
    breakout = [results["Breakout", s] for s in range(5)]
    assert all(r.archived and r.finished and r.env_steps == 100_000 for r in breakout)
    assert [r.run_dir for r in breakout] == [FFA91B0 / f"s{s}" for s in range(5)]
    assert not any(results["Pong", s].archived or results["Pong", s].started for s in range(5))
    records.check_one_config(breakout)  # one config: atari100k.gin's, Breakout bound
    found = records.results_in(FFA91B0)  # as --compare reads an archive
    assert [(r.game, r.seed, r.finished) for r in found] == [
        ("Breakout", s, True) for s in range(5)
    ]


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.atari100k", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_report_over_the_breakout_archive_and_the_command_that_compares(tmp_path: Path):
    out = tmp_path / "suite"
    result = cli(
        "--games=Breakout", "--seeds=0-4", f"--archive={FFA91B0}", f"--out={out}",
        "--report_only", "--reps=200", f"--compare={FFA91B0}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    (breakout,) = report["per_game"]
    assert breakout["game"] == "Breakout" and breakout["seeds"] == [0, 1, 2, 3, 4]
    assert report["compare"]["config"] == "drq_breakout-ffa91b0"
    assert (out / "report.md").is_file() and f"wrote {out / 'report.md'}" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(report["files"])  # nothing else


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--games=Breakout,PacMan"], "unknown game PacMan in --games: the Atari 100k games "
         "are Alien,Amidar,"),
        (["--games=Breakout", "--suite=atari100k"], "give --games or --suite, not both"),
        (["--suite=atari57"], "unknown --suite=atari57: the suite is --suite=atari100k"),
        (["--seeds=4-1", "--games=Pong"], "the range 4-1 is empty; write 1-4"),
        (["--seeds=one", "--games=Pong"], "bad --seeds='one'"),
        (["--games=Pong", "--gin_bindings=load_atari.game='Alien'"],
         "load_atari.game is set by --games"),
        (["--games=Pong", "--report_only"], "nothing to report: no run of these games and seeds"),
        (["--games=Pong", "--compare=/nonexistent/suite"], "--compare=/nonexistent/suite is not"),
        (["--games=Pong", "--launcher=pbs"], "launcher"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, flags, expected):
    out, archive = tmp_path / "out", tmp_path / "archive"
    line = one_error_line(cli(*flags, f"--out={out}", f"--archive={archive}"))
    assert expected in line, line
    assert not out.exists() and not archive.exists()


def test_runs_from_two_configs_are_refused(tmp_path: Path):
    fake_run(tmp_path / "Breakout" / "s0", 0, [(100_000, 12.0)], 2_400.0)
    fake_run(tmp_path / "Breakout" / "s1", 1, [(100_000, 18.0)], 2_400.0, lr=3e-4)
    line = one_error_line(
        cli("--games=Breakout", "--seeds=0-1", f"--out={tmp_path}", "--report_only", "--archive=")
    )
    assert "2 different configs (Breakout/s0; Breakout/s1)" in line
    assert not (tmp_path / "report.md").exists()


def test_a_gin_file_without_atari_is_refused_before_anything_is_written(tmp_path: Path):
    out = tmp_path / "out"
    line = one_error_line(cli("--games=Pong", "--gin_file=dqn_cartpole.gin", f"--out={out}"))
    assert "--gin_file=dqn_cartpole.gin plays no Atari game" in line
    assert not out.exists()


def test_a_dry_run_prints_which_runs_are_skipped_resumed_and_new(tmp_path: Path):
    """A record makes a run finished, a run directory cut short resumes, the rest are new;
    seeds outermost, so a suite cut short still has every game."""
    out, archive = tmp_path / "out", tmp_path / "archive"
    fake_run(archive / "Breakout" / "s0", 0, [(100_000, 12.0)], 2_400.0)
    rundir.write_json(archive / "Breakout" / "s0" / "bench.json", {"wall_s": 2_400.0})
    fake_run(out / "Pong" / "s0", 0, [(20_000, -20.0)], 600.0, game="Pong")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = cli(
        "--games=Breakout,Pong", "--seeds=0-1", f"--out={out}", f"--archive={archive}",
        "--dry_run", "--launcher=slurm",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "2 games x 2 seeds = 4 runs" in text
    plan = [line.split(":")[0] for line in text.splitlines() if line.startswith("[")]
    assert plan == ["[1/4] Breakout/s0", "[2/4] Pong/s0", "[3/4] Breakout/s1", "[4/4] Pong/s1"]
    assert f"Breakout/s0: finished, record in {archive / 'Breakout' / 's0'}" in text
    assert "Pong/s0: resumes (evaluated at 20,000 env steps)" in text
    assert "Pong/s1: new" in text
    assert f"--gin_bindings=train.seed=1 --root_dir={out / 'Pong' / 's1'}" in text
    assert "load_atari.game=" in text and "--array=0-3%4" in text
    assert text.rstrip().endswith("dry run: nothing written")
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_the_suite_and_its_report_job_import_no_tensorflow():
    """The Slurm report job and a login node's submission start in seconds, as sweeps do."""
    code = "import sys, pipeline.atari100k.__main__; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
