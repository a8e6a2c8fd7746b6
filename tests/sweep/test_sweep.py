"""Sweeps: grid expansion, stable run directories, clean errors, a real local sweep, aggregation."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.sweep import grid as sweep
from pipeline.sweep.grid import SweepError
from tests.conftest import REPO, TINY_RUN, read_metrics

TINY = [f"--gin_bindings={b}" for b in TINY_RUN]


def sweep_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_TF_LOGS"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.sweep", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# --- expansion and directories (no subprocess) ------------------------------------------------


def test_grid_is_a_cartesian_product_in_flag_order():
    grid = sweep.parse_grid(["train.batch_size=32,64", "Adam.learning_rate=1e-3,1e-4,3e-4"])
    settings = sweep.expand(grid)
    assert len(settings) == 6
    assert settings[0] == {"train.batch_size": "32", "Adam.learning_rate": "1e-3"}
    assert settings[-1] == {"train.batch_size": "64", "Adam.learning_rate": "3e-4"}
    assert sweep.expand({}) == [{}]


def test_values_split_at_top_level_commas_only():
    grid = sweep.parse_grid(["QNetwork.fc_layer_params=(64, 64),(32,)", "x.s='a,b',\"c\""])
    assert grid["QNetwork.fc_layer_params"] == ["(64, 64)", "(32,)"]
    assert grid["x.s"] == ["'a,b'", '"c"']


def test_seeds():
    assert sweep.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert sweep.parse_seeds("3,0-1,3") == [3, 0, 1]
    for bad in ["", "a", "4-2", "1,,2", "-1"]:
        with pytest.raises(SweepError):
            sweep.parse_seeds(bad)


def test_slugs_are_readable_stable_and_distinct():
    grid = sweep.parse_grid(
        [
            "train.batch_size=32,64",
            "train.agent=@DqnAgent,@DdqnAgent",
            "QNetwork.fc_layer_params=(64,64),(64_64),(32,)",
        ]
    )
    slugs = [sweep.setting_slug(s) for s in sweep.expand(grid)]
    assert slugs == [sweep.setting_slug(s) for s in sweep.expand(grid)]  # stable
    assert len(set(slugs)) == len(slugs)  # distinct, even where characters were replaced
    assert slugs[0].startswith("batch_size=32,agent=DqnAgent,fc_layer_params=64_64-")
    assert sweep.setting_slug({"train.batch_size": "32", "Adam.learning_rate": "0.001"}) == (
        "batch_size=32,learning_rate=0.001"
    )
    # The same parameter name under two configurables keeps the full names apart.
    both = {"Adam.learning_rate": "1e-3", "RMSprop.learning_rate": "1e-3"}
    assert sweep.setting_slug(both) == "Adam.learning_rate=1e-3,RMSprop.learning_rate=1e-3"
    long = sweep.setting_slug({"a.b": "x" * 200})
    assert len(long) <= sweep.MAX_SLUG and long != sweep.setting_slug({"a.b": "x" * 201})
    for slug in slugs + [long]:
        assert "/" not in slug and not slug.startswith(".")


@pytest.mark.parametrize(
    "grid, fragment",
    [
        (["train.batch_size"], "malformed --grid"),
        (["batch_size=32,64"], "malformed --grid"),
        (["train.batch_size=32,,64"], "empty value"),
        (["train.batch_size="], "empty value"),
        (["train.batch_size=(32,64"], "unclosed"),
        (["train.batch_size=32,32"], "repeated value"),
        (["train.batch_size=32", "train.batch_size=64"], "twice"),
    ],
)
def test_malformed_grids_are_refused(grid, fragment):
    with pytest.raises(SweepError, match=fragment.replace("-", r"\-")):
        sweep.parse_grid(grid)


# --- the command line ---------------------------------------------------------------------------


def test_a_folder_that_holds_no_sweep_is_refused(tmp_path: Path):
    """sweep.json, aggregate.md and the logs would land among someone else's files."""
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "aggregate.md").write_text("a user's table")
    result = sweep_cli(
        "--gin_file=dqn_cartpole.gin", "--grid=train.batch_size=32,64", "--seeds=0",
        f"--sweep_dir={folder}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "holds no sweep" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in folder.iterdir()] == ["aggregate.md"]
    assert (folder / "aggregate.md").read_text() == "a user's table"


def test_dry_run_prints_stable_commands_and_writes_nothing(tmp_path: Path):
    args = [
        "--gin_file=dqn_cartpole.gin",
        "--grid=train.batch_size=32,64",
        "--seeds=0-1",
        "--gin_bindings=train.total_env_steps=3000",
        "--sweep_dir=sw",
        "--launcher=slurm",
        "--slurm_partition=debug",
        "--dry_run",
    ]
    first = sweep_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert list(tmp_path.iterdir()) == [], "a dry run must write nothing"
    again = sweep_cli(*args, cwd=tmp_path)
    assert again.stdout == first.stdout, "the same sweep must give the same runs"
    root_dirs = [
        line.split("root_dir:", 1)[1].strip()
        for line in first.stdout.splitlines()
        if "root_dir:" in line
    ]
    base = tmp_path.resolve() / "sw"
    assert root_dirs == [
        str(base / "batch_size=32/s0"),
        str(base / "batch_size=32/s1"),
        str(base / "batch_size=64/s0"),
        str(base / "batch_size=64/s1"),
    ]
    commands = [
        line.split("command:", 1)[1] for line in first.stdout.splitlines() if "command:" in line
    ]
    assert len(commands) == 4
    assert "-m pipeline.train --gin_file=dqn_cartpole.gin" in commands[0]
    assert "--gin_bindings=train.batch_size=32 --gin_bindings=train.seed=0" in commands[0]
    assert f"--root_dir={base}/batch_size=64/s1" in commands[3]
    assert "--array=0-3%4" in first.stdout and "--partition=debug" in first.stdout
    assert "dry run: nothing written" in first.stdout


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--grid=train.batch_size"], ["malformed --grid", "train.batch_size=32,64"]),
        (["--grid=train.batch_size=32,,64"], ["empty value"]),
        (["--seeds="], ["no seeds"]),
        (["--grid=train.batch_sze=32,64"], ["train.batch_sze", "did you mean batch_size"]),
        (["--gin_bindings=DqnAgent.gama=0.9"], ["DqnAgent.gama", "did you mean gamma"]),
        (["--gin_file=dqn_cartpol.gin"], ["dqn_cartpol.gin", "did you mean dqn_cartpole.gin"]),
        (["--grid=train.seed=1,2"], ["--seeds"]),
    ],
    ids=["grid-form", "grid-empty", "no-seeds", "grid-name", "binding", "gin-file", "seed"],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, args, fragments):
    result = sweep_cli(*args, "--sweep_dir=sw", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert list(tmp_path.iterdir()) == []


# --- a real local sweep -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """2 settings x 1 seed of tiny CartPole runs, two at a time."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "sw"
    result = sweep_cli(
        "--grid=train.batch_size=32,64",
        "--seeds=0",
        *TINY,
        "--parallel=2",
        f"--sweep_dir={sweep_dir}",
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return sweep_dir, result


def test_local_sweep_runs_every_setting_and_aggregates(local_sweep):
    sweep_dir, result = local_sweep
    spec = json.loads((sweep_dir / "sweep.json").read_text())
    assert [run["run_dir"] for run in spec["runs"]] == ["batch_size=32/s0", "batch_size=64/s0"]
    assert "[2/2]" in result.stdout and "0 failed" in result.stdout
    with open(sweep_dir / "aggregate.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["setting"] for row in rows] == ["batch_size=32", "batch_size=64"]
    markdown = (sweep_dir / "aggregate.md").read_text()
    for row in rows:
        metrics = read_metrics(sweep_dir / row["setting"] / "s0")
        evals = [m for m in metrics if "eval_return_mean" in m]
        assert evals[-1]["env_steps"] == 1500
        assert row["seeds_finished"] == "1" and row["env_steps"] == "1500"
        assert float(row["final_return_mean"]) == pytest.approx(evals[-1]["eval_return_mean"])
        assert row["final_return_std"] == ""  # one seed: a sample std (n - 1) needs two
        best = max(m["eval_return_mean"] for m in evals)
        assert float(row["best_return_mean"]) == pytest.approx(best)
        final = f"{evals[-1]['eval_return_mean']:.1f}"  # one seed: no +- std
        assert f"| `{row['setting']}` | 1/1 | {final} | {best:.1f} | 1,500 |" in markdown
    assert "All runs finished." in markdown


def test_running_the_same_sweep_again_skips_finished_runs(local_sweep):
    sweep_dir, _ = local_sweep
    before = {p: p.read_bytes() for p in sweep_dir.glob("*/s0/metrics.jsonl")}
    result = sweep_cli(
        "--grid=train.batch_size=32,64", "--seeds=0", *TINY, f"--sweep_dir={sweep_dir}", cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    skipped = [line for line in result.stdout.splitlines() if line.endswith("already finished")]
    assert len(skipped) == 2, result.stdout
    assert {p: p.read_bytes() for p in before} == before


def test_aggregate_lists_missing_and_unfinished_runs(local_sweep, tmp_path: Path):
    sweep_dir, _ = local_sweep
    copy = tmp_path / "copy"
    shutil.copytree(sweep_dir, copy)
    (copy / "batch_size=32/s0/metrics.jsonl").unlink()
    metrics = copy / "batch_size=64/s0/metrics.jsonl"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:2]) + '{"torn')
    result = sweep_cli(f"--sweep_dir={copy}", "--aggregate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    markdown = (copy / "aggregate.md").read_text()
    assert "| `batch_size=32` | 0/1 | - | - | 1,500 |" in markdown
    assert "`batch_size=32/s0`: missing" in markdown
    assert "`batch_size=64/s0`: unfinished (500 of 1,500 env steps)" in markdown
    with open(copy / "aggregate.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["not_finished"] for row in rows] == ["batch_size=32/s0", "batch_size=64/s0"]
    assert rows[0]["final_return_mean"] == ""


def test_sigterm_reaches_the_runs_and_the_sweep_resumes(tmp_path: Path):
    """SIGTERM to the sweep: each run checkpoints and exits 75; the same command finishes."""
    sweep_dir = tmp_path / "sw"
    args = [
        sys.executable,
        "-m",
        "pipeline.sweep",
        "--grid=train.total_env_steps=5000",
        "--seeds=0",
        *[b for b in TINY if "total_env_steps" not in b],
        "--gin_bindings=train.checkpoint_interval=1000",
        f"--sweep_dir={sweep_dir}",
    ]
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    checkpoints = sweep_dir / "total_env_steps=5000/s0/checkpoints"
    deadline = time.monotonic() + 120
    while not list(checkpoints.glob("ckpt-*")) and time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 75, output
    assert "pre-empted" in output
    resumed = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    log = (sweep_dir / "total_env_steps=5000/s0.log").read_text()
    assert "resumed from checkpoint at" in log
    steps = [m["env_steps"] for m in read_metrics(sweep_dir / "total_env_steps=5000/s0")]
    assert steps == sorted(set(steps)) and steps[-1] == 5000
