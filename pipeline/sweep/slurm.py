"""A sweep as one Slurm array job (submitit), requeued on pre-emption, then aggregated."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import submitit

from pipeline.analysis import aggregate as aggregation
from pipeline.run.preemption import EXIT_PREEMPTED
from pipeline.sweep import usage
from pipeline.sweep.grid import REPO_ROOT, child_env
from pipeline.sweep.plan import Sweep, last_line

SUBMISSIONS_FILE = "submissions.jsonl"  # under <sweep_dir>/slurm/


def _ignore_usr2() -> None:
    # Slurm's --signal=USR2@N (submitit's time-limit warning) reaches every process of the job
    # step; the trainer must not die of it. Its wrapper (TrainTask) turns it into SIGUSR1.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _wait_pid(process: subprocess.Popen, timeout_s: float) -> tuple[int, float | None] | None:
    """Waits for a child with os.wait4 (`usage.reap`), safe inside a signal handler that
    interrupted the task's own wait (Popen's lock is never taken); returns its exit code and
    peak RSS in MB, None on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reaped = usage.reap(process)
        if reaped is not None:
            return reaped
        time.sleep(0.2)
    return None


def _slurm_job_state(job_id: str) -> str:
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.strip().splitlines()[0] if out.strip() else ""


class TrainTask(submitit.helpers.Checkpointable):
    """One array task: runs one train command in a subprocess.

    On submitit's pre-emption/time-limit signal, `checkpoint` sends SIGUSR1 to the trainer
    (which writes a checkpoint and exits 75) and resubmits the same command, which resumes.
    A trainer that exits 75 by itself (SIGTERM from `scontrol requeue`, pre-emption or a
    person) requeues the task if Slurm still counts it as running; otherwise Slurm is already
    requeueing or cancelling it.
    """

    def __init__(self, stop_timeout_s: float = 80.0, max_restarts: int = 100):
        self.stop_timeout_s = stop_timeout_s
        self.max_restarts = max_restarts
        self._process: subprocess.Popen | None = None
        self._started = 0.0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_process"] = None  # a live process does not travel to the next attempt
        return state

    def __call__(self, run: dict[str, Any]) -> dict[str, Any]:
        env = submitit.JobEnvironment()
        where = f"slurm job {env.job_id} on {env.hostname}"
        Path(run["log"]).parent.mkdir(parents=True, exist_ok=True)
        with open(run["log"], "a", encoding="utf-8") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {where}\n")
            log.flush()
            print(f"{where}: {shlex.join(run['command'])}\nlog: {run['log']}", flush=True)
            self._started = time.monotonic()
            self._process = subprocess.Popen(
                run["command"],
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(),
                preexec_fn=_ignore_usr2,
            )
            while (reaped := usage.reap(self._process)) is None:
                time.sleep(1.0)
        code, peak_rss_mb = reaped
        seconds = time.monotonic() - self._started
        usage.record(run["log"], f"slurm job {env.job_id}", seconds, code, peak_rss_mb)
        print(f"train exited with status {code}", flush=True)
        if code == 0:
            return {"run_dir": run["run_dir"], "status": "finished"}
        if code == EXIT_PREEMPTED:
            self._requeue_if_running()
            sys.exit(EXIT_PREEMPTED)  # SystemExit: submitit records no result, as for requeue
        line = last_line(Path(run["log"]), "error:") or last_line(Path(run["log"]))
        raise RuntimeError(f"train exited with status {code}: {line} (log: {run['log']})")

    def _requeue_if_running(self) -> None:
        job_id = os.environ.get("SLURM_JOB_ID", "")
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        state = _slurm_job_state(job_id) if job_id else ""
        if state != "RUNNING":
            print(f"pre-empted; Slurm has the job as {state or 'gone'}: not requeueing it")
            return
        if restarts >= self.max_restarts:
            raise RuntimeError(f"pre-empted {restarts} times: not requeueing again")
        print(f"pre-empted: requeueing job {job_id}", flush=True)
        subprocess.run(["scontrol", "requeue", job_id], check=False, timeout=60)

    def checkpoint(self, run: dict[str, Any]) -> submitit.helpers.DelayedSubmission:
        """Called by submitit in its signal handler: stop the trainer at a checkpoint first."""
        process = self._process
        if process is not None and process.returncode is None:
            print(f"asking the trainer (pid {process.pid}) to checkpoint and stop", flush=True)
            try:
                process.send_signal(signal.SIGUSR1)
            except ProcessLookupError:
                pass
            reaped = _wait_pid(process, self.stop_timeout_s)
            code = reaped[0] if reaped else None
            if reaped is not None:
                seconds = time.monotonic() - self._started
                where = f"slurm job {os.environ.get('SLURM_JOB_ID', '?')}"
                usage.record(run["log"], where, seconds, code, reaped[1])
            print(f"trainer stopped with status {code}", flush=True)
        return super().checkpoint(run)


def aggregate_job(sweep_dir: str) -> str:
    """The small Slurm job that runs after the array: writes aggregate.md and .csv."""
    markdown, _ = aggregation.aggregate(Path(sweep_dir))
    print(markdown.read_text(encoding="utf-8"))
    return str(markdown)


SBATCH_MISSING = (
    "sbatch not found: run on a Slurm login node, or start a local cluster with "
    "scripts/slurm_local.sh start"
)


def define_slurm_flags(time_min: int) -> None:
    """The --slurm_* flags of every command that submits arrays (sweeps, the Atari-100k
    suite); `time_min` is the default limit of one run attempt."""
    from absl import flags

    flags.DEFINE_string("slurm_partition", None, "slurm: partition (default: the cluster's).")
    flags.DEFINE_integer("slurm_time_min", time_min, "slurm: time limit per run attempt, minutes.")
    flags.DEFINE_integer("slurm_cpus_per_task", 2, "slurm: CPUs per run.")
    flags.DEFINE_float("slurm_mem_gb", 8.0, "slurm: memory per run, GB.")
    flags.DEFINE_integer("slurm_max_parallel", 64, "slurm: array tasks running at once.")


@dataclass
class SlurmOptions:
    partition: str | None
    time_min: int
    cpus_per_task: int
    mem_gb: float
    max_parallel: int

    @classmethod
    def from_flags(cls) -> SlurmOptions:
        """The options `define_slurm_flags` defined, as parsed."""
        from absl import flags

        values = flags.FLAGS
        return cls(
            partition=values.slurm_partition,
            time_min=values.slurm_time_min,
            cpus_per_task=values.slurm_cpus_per_task,
            mem_gb=values.slurm_mem_gb,
            max_parallel=values.slurm_max_parallel,
        )

    def parameters(self, array_size: int) -> dict[str, Any]:
        """What `update_parameters` gets (submitit names), for the array job."""
        params: dict[str, Any] = {
            "timeout_min": self.time_min,
            "cpus_per_task": self.cpus_per_task,
            "mem_gb": self.mem_gb,
            "nodes": 1,
            "tasks_per_node": 1,
            "slurm_array_parallelism": max(1, min(self.max_parallel, array_size)),
            "slurm_setup": [
                f"cd {shlex.quote(str(REPO_ROOT))}",
                f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}",
            ],
            "slurm_additional_parameters": {"requeue": True},
        }
        if self.partition:
            params["slurm_partition"] = self.partition
        return params

    def describe(self, array_size: int, folder: Path) -> str:
        parallel = max(1, min(self.max_parallel, array_size))
        return " ".join(
            [
                f"--array=0-{array_size - 1}%{parallel}",
                *([f"--partition={self.partition}"] if self.partition else []),
                f"--time={self.time_min}",
                f"--cpus-per-task={self.cpus_per_task}",
                f"--mem={self.mem_gb:g}G",
                "--nodes=1 --ntasks-per-node=1 --requeue --signal=USR2@90 --open-mode=append",
                f"--output={folder}/%A_%a_0_log.out --error={folder}/%A_%a_0_log.err",
                f"(python {sys.executable}, cwd {REPO_ROOT}); then an afterany:<array> job "
                "aggregates",
            ]
        )


def _active_slurm_runs(slurm_dir: Path) -> dict[str, str]:
    """run_dir -> task id, for runs of earlier submissions that are still queued or running."""
    path = slurm_dir / SUBMISSIONS_FILE
    if not path.is_file() or not shutil.which("squeue"):
        return {}
    tasks: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            tasks.update(json.loads(line).get("tasks", {}))
        except json.JSONDecodeError:
            continue
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    active = {line.split("|")[0] for line in out.splitlines() if "|" in line}
    return {run_dir: task for task, run_dir in tasks.items() if task in active}


def submit_slurm(
    sweep: Sweep,
    options: SlurmOptions,
    after: Callable[[str], Any] = aggregate_job,
    after_name: str = "aggregate",
    results: str = "aggregate.md",
) -> int:
    """Submits the unfinished runs as one array job, then an afterany job that calls
    `after(sweep_dir)`: the sweep's aggregation, or (the Atari-100k suite) its report. With
    nothing left to submit, calls `after` here instead."""
    slurm_dir = sweep.sweep_dir / "slurm"
    active = _active_slurm_runs(slurm_dir)
    todo = []
    for run in sweep.runs:
        if run.finished():
            print(f"{run.run_dir}: already finished")
        elif run.run_dir in active:
            print(f"{run.run_dir}: still queued or running as job {active[run.run_dir]}")
        else:
            todo.append(run)
    if not todo:
        written = after(str(sweep.sweep_dir))
        print(f"nothing new to submit; wrote what the runs logged so far into {written}")
        return 0
    executor = submitit.AutoExecutor(folder=slurm_dir, cluster="slurm", slurm_python=sys.executable)
    executor.update_parameters(
        name=f"sweep-{sweep.sweep_dir.name}", **options.parameters(len(todo))
    )
    task = TrainTask()
    with executor.batch():
        jobs = [executor.submit(task, asdict(run)) for run in todo]
    array_id = jobs[0].job_id.split("_")[0]

    after_executor = submitit.AutoExecutor(
        folder=slurm_dir, cluster="slurm", slurm_python=sys.executable
    )
    params = {
        "name": f"{after_name}-{sweep.sweep_dir.name}",
        "timeout_min": 15,
        "cpus_per_task": 1,
        "mem_gb": 1,
        "slurm_setup": options.parameters(1)["slurm_setup"],
        "slurm_additional_parameters": {"dependency": f"afterany:{array_id}"},
    }
    if options.partition:
        params["slurm_partition"] = options.partition
    after_executor.update_parameters(**params)
    aggregate = after_executor.submit(after, str(sweep.sweep_dir))

    tasks = {job.job_id: run.run_dir for job, run in zip(jobs, todo, strict=True)}
    record = {
        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "array_job_id": array_id,
        "tasks": tasks,
        "aggregate_job_id": aggregate.job_id,
    }
    with open(slurm_dir / SUBMISSIONS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    print(f"submitted array job {array_id} ({len(todo)} runs):")
    for job_id, run_dir in tasks.items():
        print(f"  {job_id}: {run_dir}")
    print(f"{after_name} job {aggregate.job_id} runs after the array (afterany)")
    print(
        f"Slurm logs: {slurm_dir}/<job id>_0_log.out and .err; each run's trainer output: <run>.log"
    )
    print(f"watch: squeue -j {array_id},{aggregate.job_id}; results: {sweep.sweep_dir / results}")
    return 0
