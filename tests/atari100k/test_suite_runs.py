"""The suite for real at a tiny budget: two games trained here, archived and reported; and
the same as a Slurm array on the local cluster, one task requeued mid-run, the report job
writing the suite report after the array."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipeline.sweep import usage
from tests.agents.test_agents import TINY_BREAKOUT
from tests.conftest import REPO
from tests.sweep.test_slurm import (
    diagnostics,
    requeue_once_checkpointed,
    squeue_states,
    wait_for,
)

GAMES = ("Breakout", "Pong")


def suite_command(out: Path, archive: Path, *flags: str, bindings=TINY_BREAKOUT) -> list[str]:
    return [
        sys.executable, "-m", "pipeline.atari100k", f"--games={','.join(GAMES)}", "--seeds=0",
        *(f"--gin_bindings={b}" for b in bindings), f"--out={out}", f"--archive={archive}",
        *flags,
    ]  # fmt: skip


def test_two_games_train_one_at_a_time_and_are_archived_and_reported(tmp_path: Path):
    out, archive = tmp_path / "suite", tmp_path / "archive"
    result = subprocess.run(
        suite_command(out, archive, "--reps=200"), cwd=REPO, capture_output=True, text=True,
        timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.index("starting Breakout/s0") < result.stdout.index("starting Pong/s0")
    for game in GAMES:
        (attempt,) = usage.attempts(out / game / "s0.log")
        assert attempt["exit"] == 0 and attempt["peak_rss_mb"] > 100, attempt
        record = archive / game / "s0"
        assert sorted(p.name for p in record.iterdir()) == [
            "bench.json", "config.gin", "metrics.jsonl", "run.json",
        ]  # fmt: skip
        bench = json.loads((record / "bench.json").read_text())
        assert bench["peak_rss_mb"] == attempt["peak_rss_mb"]
        assert 0 < bench["final_eval_wall_s"] == bench["eval_s"]["400"] < bench["wall_s"]
        assert f"load_atari.game = '{game}'" in (record / "config.gin").read_text()
    report = json.loads((out / "report.json").read_text())
    assert [(row["game"], row["n"]) for row in report["per_game"]] == [(g, 1) for g in GAMES]
    assert report["config"] == "suite" and not report["unfinished"]
    assert (out / "report.md").is_file() and (out / "suite.json").is_file()


def test_the_suite_as_a_slurm_array_requeued_mid_run_then_reported(slurm_cluster, tmp_path):
    out, archive = tmp_path / "suite", tmp_path / "archive"
    longer = [*TINY_BREAKOUT, "train.total_env_steps=600"]  # time to requeue after a checkpoint
    submit = subprocess.run(
        suite_command(
            out, archive, "--launcher=slurm", "--slurm_cpus_per_task=1", "--slurm_mem_gb=2",
            "--slurm_time_min=15", bindings=longer,
        ),
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert submit.returncode == 0, submit.stdout + submit.stderr
    record = json.loads((out / "slurm" / "submissions.jsonl").read_text().splitlines()[-1])
    tasks = {run_dir: task for task, run_dir in record["tasks"].items()}
    assert sorted(tasks) == ["Breakout/s0", "Pong/s0"]
    ours = {*tasks.values(), record["aggregate_job_id"]}
    task, run = tasks["Breakout/s0"], out / "Breakout" / "s0"
    try:
        requeue_once_checkpointed(task, run, out)
        wait_for(
            lambda: not ours & set(squeue_states()) and (out / "report.json").exists(),
            400, "the array and the report job to finish", out,
        )  # fmt: skip
    finally:
        left = ours & set(squeue_states())
        if left:
            subprocess.run(["scancel", *sorted(left)], capture_output=True, timeout=60)

    log = (out / "Breakout" / "s0.log").read_text()
    assert log.count(f"slurm job {task} on") == 2, diagnostics(out)  # two attempts
    assert "resumed from checkpoint at" in log, diagnostics(out)
    attempts = usage.attempts(out / "Breakout" / "s0.log")
    assert [a["exit"] for a in attempts] == [75, 0], attempts
    assert all(a["peak_rss_mb"] > 100 for a in attempts), attempts
    bench = json.loads((archive / "Breakout" / "s0" / "bench.json").read_text())
    assert len(bench["attempts"]) == 2 and bench["wall_s"] > 0  # archived by the report job
    assert (archive / "Pong" / "s0" / "bench.json").is_file()
    report = json.loads((out / "report.json").read_text())
    assert [(row["game"], row["n"]) for row in report["per_game"]] == [(g, 1) for g in GAMES]
