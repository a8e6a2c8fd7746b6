"""A sweep as a real Slurm array job on a local one-node cluster: requeue, resume, aggregate.

The cluster comes from scripts/slurm_local.sh (root, apt). It stays up for the whole test
session and is stopped at the end if this session started it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_RUN, read_metrics, skip_unless_ci

SCRIPT = REPO / "scripts" / "slurm_local.sh"
LONG = "total_env_steps=20000"


@pytest.fixture(scope="session")
def slurm_cluster():
    """Starts the local cluster once per session; where it cannot exist, skips (a failure
    in CI: `skip_unless_ci`)."""
    if os.geteuid() != 0:
        skip_unless_ci("the local Slurm cluster needs root (slurm_local.sh starts daemons)")
    installed = all(shutil.which(t) for t in ("slurmctld", "slurmd", "sbatch", "munged"))
    if not installed and not shutil.which("apt-get"):
        skip_unless_ci("slurm-wlm/munge are not installed and there is no apt-get to install them")
    was_running = subprocess.run(["bash", SCRIPT, "status"], capture_output=True).returncode == 0
    started = subprocess.run(["bash", SCRIPT, "start"], capture_output=True, text=True, timeout=900)
    assert started.returncode == 0, started.stdout + started.stderr
    yield
    if not was_running:
        subprocess.run(["bash", SCRIPT, "stop"], capture_output=True, timeout=120)


def squeue_states() -> dict[str, str]:
    out = subprocess.run(
        ["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, timeout=60
    ).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if "|" in line)


def diagnostics(sweep_dir: Path) -> str:
    parts = [f"squeue: {squeue_states()}"]
    for path in sorted(sweep_dir.glob("slurm/*_log.*")) + sorted(sweep_dir.glob("*/s*.log")):
        lines = path.read_text(errors="replace").splitlines()[-15:]
        parts.append(f"--- {path.name}\n" + "\n".join(lines))
    return "\n".join(parts)


def wait_for(condition, timeout_s: float, what: str, sweep_dir: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {timeout_s:.0f} s waiting for {what}\n" + diagnostics(sweep_dir)
            )
        time.sleep(1.0)


def requeue_once_checkpointed(task: str, run: Path, sweep_dir: Path) -> None:
    """Requeues array task `task` (as a pre-emption would) once it runs and `run` holds a
    checkpoint to resume from."""
    wait_for(
        lambda: squeue_states().get(task) == "RUNNING" and any(run.glob("checkpoints/ckpt-*")),
        240, f"task {task} running with a checkpoint", sweep_dir,
    )  # fmt: skip
    requeue = subprocess.run(
        ["scontrol", "requeue", task], capture_output=True, text=True, timeout=60
    )
    assert requeue.returncode == 0, requeue.stderr


def test_array_task_requeued_mid_run_resumes_and_the_sweep_aggregates(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "sw"
    bindings = [f"--gin_bindings={b}" for b in TINY_RUN if "total_env_steps" not in b]
    submit = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.sweep",
            "--launcher=slurm",
            f"--grid=train.total_env_steps={LONG.split('=')[1]},2000,3000",
            "--seeds=0",
            *bindings,
            "--gin_bindings=train.checkpoint_interval=2000",
            "--slurm_cpus_per_task=1",
            "--slurm_mem_gb=2",
            "--slurm_time_min=15",
            f"--sweep_dir={sweep_dir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert submit.returncode == 0, submit.stdout + submit.stderr
    record = json.loads((sweep_dir / "slurm" / "submissions.jsonl").read_text().splitlines()[-1])
    assert len(record["tasks"]) == 3
    task = next(t for t, run_dir in record["tasks"].items() if run_dir.startswith(LONG))
    ours = {*record["tasks"], record["aggregate_job_id"]}
    assert task in submit.stdout and record["aggregate_job_id"] in submit.stdout
    long_run = sweep_dir / LONG / "s0"
    try:
        wait_for(
            lambda: (
                squeue_states().get(task) == "RUNNING" and any(long_run.glob("checkpoints/ckpt-*"))
            ),
            180,
            f"task {task} running with a checkpoint",
            sweep_dir,
        )
        requeue = subprocess.run(
            ["scontrol", "requeue", task], capture_output=True, text=True, timeout=60
        )
        assert requeue.returncode == 0, requeue.stderr
        wait_for(
            lambda: not ours & set(squeue_states()) and (sweep_dir / "aggregate.md").exists(),
            300,
            "the array and the aggregation job to finish",
            sweep_dir,
        )
    finally:
        left = ours & set(squeue_states())
        if left:
            subprocess.run(["scancel", *sorted(left)], capture_output=True, timeout=60)

    log = (sweep_dir / LONG / "s0.log").read_text()
    assert log.count(f"slurm job {task} on") == 2, diagnostics(sweep_dir)  # two attempts
    assert "resumed from checkpoint at" in log, diagnostics(sweep_dir)
    steps = [row["env_steps"] for row in read_metrics(long_run)]
    assert all(a < b for a, b in zip(steps, steps[1:], strict=False)), steps
    assert steps[-1] == 20000
    markdown = (sweep_dir / "aggregate.md").read_text()
    for setting, steps_text in [(LONG, "20,000"), ("total_env_steps=2000", "2,000")]:
        assert f"| `{setting}` | 1/1 |" in markdown and f"| {steps_text} |" in markdown
    assert "All runs finished." in markdown, markdown


BREAKOUT = [
    "train.total_env_steps=3_000",
    "train.initial_collect_steps=200",
    "train.replay_capacity=4_000",
    "train.eval_interval=1_500",
    "train.eval_episodes=1",
    "train.checkpoint_interval=500",
    "load_atari.max_episode_frames=4_000",
    "QNetwork.conv_layer_params=((8, 8, 4),)",
    "QNetwork.fc_layer_params=(16,)",
]


def test_a_requeued_breakout_job_resumes_from_the_step_it_stopped_at(slurm_cluster, tmp_path):
    """SIGTERM from Slurm mid-run: the run checkpoints that step, exits 75, and the requeued
    attempt resumes there, in the very episode it was in (the emulator is checkpointed)."""
    sweep_dir = tmp_path / "breakout"
    submit = subprocess.run(
        [sys.executable, "-m", "pipeline.sweep", "--launcher=slurm", "--gin_file=dqn_breakout.gin",
         "--seeds=0", *[f"--gin_bindings={b}" for b in BREAKOUT], "--slurm_cpus_per_task=1",
         "--slurm_mem_gb=2", "--slurm_time_min=15", f"--sweep_dir={sweep_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert submit.returncode == 0, submit.stdout + submit.stderr
    record = json.loads((sweep_dir / "slurm" / "submissions.jsonl").read_text().splitlines()[-1])
    ((task, run_dir),) = record["tasks"].items()
    run = sweep_dir / run_dir
    ours = {task, record["aggregate_job_id"]}
    try:
        requeue_once_checkpointed(task, run, sweep_dir)
        wait_for(lambda: not ours & set(squeue_states()), 400, "the job to finish", sweep_dir)
    finally:
        left = ours & set(squeue_states())
        if left:
            subprocess.run(["scancel", *sorted(left)], capture_output=True, timeout=60)

    log = (sweep_dir / f"{run_dir}.log").read_text()
    assert log.count(f"slurm job {task} on") == 2, diagnostics(sweep_dir)
    stopped = re.search(r"stopped by SIG\w+ at ([\d,]+) env steps", log)
    assert stopped, diagnostics(sweep_dir)
    assert f"resumed from checkpoint at {stopped.group(1)} env steps" in log
    assert "the train env's state is not in the checkpoint" not in log
    assert read_metrics(run)[-1]["env_steps"] == 3_000
