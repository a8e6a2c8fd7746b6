"""The distributed mode as one real Slurm job on the local cluster (scripts/slurm_local.sh).

The long test submits a small CartPole run with 2 collectors, sends the batch shell the
time-limit warning (SIGUSR1, as `--signal=B:USR1@120` would) halfway, and checks that the job
requeued itself, resumed (learner checkpoint, Reverb replay) and completed. The fast tests
need no cluster: the dry run and refused settings.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, read_metrics, requires_reverb
from tests.distributed.test_distributed import live_processes
from tests.sweep.test_slurm import slurm_cluster  # noqa: F401 (the fixture)

pytestmark = requires_reverb

SMALL = [
    "DqnAgent.n_step_update=1",  # the replay server stores 2-step items (README)
    "train.total_env_steps=4000",
    "train.eval_interval=2000",
    "train.eval_episodes=3",
    "train.progress_interval_s=2.0",  # a progress line to act on mid-run
]
ROLES = ["server", "learner", "collector-0", "collector-1"]
JOB_TIMEOUT_S = 240


def slurm_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.distributed.slurm", "--gin_file=dqn_cartpole.gin", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def command_lines(*needles: str) -> list[str]:
    return list(live_processes(*needles).values())


def job_fields(job_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict (the cluster keeps finished jobs for MinJobAge=600 s)."""
    out = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=60
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def diagnostics(root: Path, job_id: str) -> str:
    fields = job_fields(job_id)
    state = " ".join(f"{k}={fields.get(k)}" for k in ("JobState", "Reason", "Restarts", "ExitCode"))
    parts = [f"job {job_id}: {state}"]
    for path in [root / "slurm" / f"{job_id}.out", *(root / "logs" / f"{r}.log" for r in ROLES)]:
        parts.append(f"--- {path.name}\n" + "\n".join(text(path).splitlines()[-20:]))
    return "\n".join(parts)


def test_distributed_run_on_slurm_requeues_at_the_time_limit_warning_and_completes(
    slurm_cluster,  # noqa: F811
    tmp_path,
):
    root = tmp_path / "run"
    submit = slurm_cli(
        *[f"--gin_bindings={b}" for b in SMALL],
        f"--root_dir={root}",
        "--num_collectors=2",
        "--overcommit",  # 4 roles on the cluster's 2 CPUs
        "--cpus_per_task=2",
        "--time=10",
        "--mem=4G",
    )
    assert submit.returncode == 0, submit.stdout + submit.stderr
    job_id = re.search(r"submitted job (\d+)", submit.stdout).group(1)
    assert f"{root}/slurm/{job_id}.out" in submit.stdout
    assert (root / "slurm" / "distributed.sbatch").read_text().startswith("#!/bin/bash")

    collectors_seen: set[str] = set()  # their command lines: which server they were given

    def watch(condition, what: str) -> None:
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}\n" + diagnostics(root, job_id))
            lines = command_lines("pipeline.distributed.collector", "--server=")
            collectors_seen.update(x for x in lines if x.startswith(sys.executable))  # not srun
            time.sleep(0.5)

    learner_log = root / "logs" / "learner.log"
    started = time.monotonic()
    deadline = started + JOB_TIMEOUT_S
    try:
        # Mid-run: the learner reports env steps. Then the warning Slurm sends before the limit.
        progress = re.compile(r"env steps [1-9][\d,]*/4,000")
        watch(lambda: progress.search(text(learner_log)), "the learner's progress")
        warn = ["scancel", "--batch", "--signal=USR1", job_id]
        assert subprocess.run(warn, capture_output=True, timeout=60).returncode == 0
        ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")
        watch(lambda: job_fields(job_id).get("JobState") in ended, f"job {job_id} to end")
    finally:
        if job_fields(job_id).get("JobState") in ("PENDING", "RUNNING", "REQUEUED"):
            subprocess.run(["scancel", job_id], capture_output=True, timeout=60)
    elapsed = time.monotonic() - started

    fields, report = job_fields(job_id), diagnostics(root, job_id)
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", report
    assert fields["Restarts"] == "1", report
    job_out = text(root / "slurm" / f"{job_id}.out")  # appended to across the two attempts
    assert job_out.count(f"job {job_id}, restart") == 2, report
    assert f"requeueing job {job_id}" in job_out, report
    assert "resumed from checkpoint at" in text(learner_log), report
    restored = re.findall(r"([\d,]+) transitions \(of", text(root / "logs" / "server.log"))
    assert len(restored) == 2 and restored[1] != "0", report  # the replay came back

    rows = [row for row in read_metrics(root) if "eval_return_mean" in row]
    steps = [row["env_steps"] for row in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 4000, steps

    for role in ROLES:
        assert (root / "logs" / f"{role}.log").exists(), role
    addresses = re.findall(r"launching server at (\S+?),", job_out)
    assert len(addresses) == 2, report
    exposed = re.findall(
        r"warning: the Reverb server listens on port (\d+) on every network "
        r"interface of (\S+) and accepts unauthenticated connections",
        job_out,
    )
    assert exposed == [(a.rsplit(":", 1)[1], a.rsplit(":", 1)[0]) for a in addresses], report
    for address in addresses:  # each attempt's collectors were handed that attempt's server
        for index in (0, 1):
            assert any(f"--server={address} --index={index}" in line for line in collectors_seen), (
                address,
                index,
                collectors_seen,
            )
    ports = [address.rsplit(":", 1)[1] for address in addresses]
    left = [
        line
        for line in command_lines("pipeline.distributed")
        if str(root) in line or any(f":{port}" in line or f"={port}" in line for port in ports)
    ]
    assert left == [], left
    print(f"slurm job {job_id}: submitted to completed in {elapsed:.0f} s")


def test_dry_run_prints_the_batch_script_and_writes_nothing(tmp_path):
    root = tmp_path / "run"
    result = slurm_cli(
        "--gin_bindings=train.total_env_steps=4000",
        f"--root_dir={root}",
        "--num_collectors=3",
        "--partition=debug",
        "--time=1:30:00",
        "--mem=2G",
        "--cpus_per_task=1",
        "--dry_run",
    )
    assert result.returncode == 0, result.stderr
    script = result.stdout
    assert script.startswith("#!/bin/bash\n")
    for line in [
        "#SBATCH --ntasks=5",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --mem=2G",
        "#SBATCH --time=1:30:00",
        "#SBATCH --partition=debug",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@120",
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={root}/slurm/%j.out",
        f"#SBATCH --chdir={REPO}",
    ]:
        assert line in script.splitlines(), line
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script
    assert "--overcommit" not in script
    assert "-m pipeline.distributed.launch --backend=srun" in script
    assert f"--gin_file={REPO}/gin/dqn_cartpole.gin" in script
    assert "--gin_bindings=train.total_env_steps=4000" in script
    assert f"--root_dir={root} --num_collectors=3 &" in script
    syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    assert "dry run: nothing written or submitted" in result.stderr
    assert not root.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gin_bindings=train.total_env_step=4000"], "unknown parameter train.total_env_step"),
        (["--gin_bindings=distributed.weight_pull_interval=0"], "weight_pull_interval=0 must be"),
        (["--time=3"], "--time=3 is too short"),
    ],
)
def test_bad_settings_are_refused_with_one_line_before_anything_is_written(tmp_path, args, message):
    root = tmp_path / "run"
    result = slurm_cli(*args, f"--root_dir={root}", "--num_collectors=2")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert result.stdout == ""
    assert not root.exists()
