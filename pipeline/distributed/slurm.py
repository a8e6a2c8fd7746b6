"""Submits a distributed run (server, learner, N collectors) as one Slurm batch job.

    python -m pipeline.distributed.slurm --gin_file=dqn_cartpole.gin --root_dir=runs/dist \
        --gin_bindings=DqnAgent.n_step_update=1 --num_collectors=2 \
        [--partition=P --time=2:00:00 --mem=8G --cpus_per_task=2] [--dry_run]

The settings are checked here, before anything is written or queued. The job is one
allocation of num_collectors + 2 tasks, one per role; inside it `pipeline.distributed.launch
--backend=srun` starts each role as a job step (the server on the first node) and restarts
roles that die. The script is kept in `<root_dir>/slurm/distributed.sbatch`, so
`sbatch` on it again resumes the run by hand.

Time limit: Slurm sends SIGUSR1 to the batch shell `WARN_S` seconds ahead, the shell passes it
to the launcher, which stops every role (the learner checkpoints, the server saves its replay
to `<root_dir>/reverb`) and exits 75; the shell then requeues the job, and the next attempt
resumes from those checkpoints. A job cancelled or requeued by Slurm itself is not requeued
again by the script. `--dry_run` prints the script and writes nothing.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import gin
from absl import flags

from pipeline import cli, config
from pipeline.distributed import common
from pipeline.errors import UserError
from pipeline.run import rundir
from pipeline.run.files import atomic_write_text

flags.DEFINE_integer("num_collectors", 2, "Collectors; the job has num_collectors + 2 tasks.")
flags.DEFINE_string("partition", None, "Slurm partition (default: the cluster's).")
flags.DEFINE_string("time", "2:00:00", "Time limit of each attempt: minutes, H:MM:SS or D-HH.")
flags.DEFINE_string("mem", "8G", "Memory per node, as sbatch --mem takes it (e.g. 8G, 16000M).")
flags.DEFINE_integer("cpus_per_task", 2, "CPUs of each role's task.")
flags.DEFINE_bool(
    "overcommit",
    False,
    "Share cpus_per_task CPUs per node among all roles (sbatch --overcommit): for nodes with "
    "fewer CPUs than roles, such as the local test cluster.",
)
flags.DEFINE_bool("dry_run", False, "Print the batch script; write and submit nothing.")
cli.define_run_flags()
FLAGS = flags.FLAGS

SCRIPT_NAME = "distributed.sbatch"
WARN_S = 120  # the launcher stops within about 60 s (30 s grace for roles, then the server)
MIN_TIME_MIN = 5  # below this the warning would come before the roles have even started
REPO_ROOT = Path(__file__).resolve().parents[2]

BODY = """\
# One task per role: the launcher runs the server, the learner and each collector as a job
# step (srun), restarts roles that die, and exits 75 once a signal stopped it (the learner
# checkpointed, the server saved its replay). A requeued job starts here again and resumes.
export PYTHONPATH={repo}${{PYTHONPATH:+:$PYTHONPATH}}
echo "=== $(date '+%F %T') job $SLURM_JOB_ID, restart ${{SLURM_RESTART_COUNT:-0}}, on $(hostname)"

requeue=no
on_usr1() {{  # the time limit is near: stop at a checkpoint, then requeue
  echo "$(date '+%F %T') time limit near: stopping the run to requeue it"
  requeue=yes
  kill -USR1 "$launcher" 2>/dev/null
}}
on_term() {{  # cancelled or requeued by Slurm: stop at a checkpoint, leave the rest to Slurm
  echo "$(date '+%F %T') SIGTERM from Slurm: stopping the run"
  requeue=no
  kill -TERM "$launcher" 2>/dev/null
}}
trap on_usr1 USR1
trap on_term TERM

{launch} &
launcher=$!
while :; do
  wait "$launcher"
  status=$?
  kill -0 "$launcher" 2>/dev/null || break  # still running: a signal only cut the wait short
done

echo "$(date '+%F %T') launcher exited with status $status"
if [ "$status" = 75 ] && [ "$requeue" = yes ]; then
  echo "requeueing job $SLURM_JOB_ID: the next attempt resumes from the checkpoints"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
"""


def time_minutes(text: str) -> float:
    """Minutes in a Slurm time limit (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S)."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise UserError(f"--time={text} is not a Slurm time: give minutes, H:MM:SS or D-HH")
    days, first, second, third = (int(g) if g else None for g in match.groups())
    if days is not None:  # D-H[:M[:S]]
        return days * 1440 + first * 60 + (second or 0) + (third or 0) / 60
    if third is not None:  # H:M:S
        return first * 60 + second + third / 60
    return first + (second or 0) / 60  # M or M:S


def check_options() -> None:
    """Slurm options sbatch would accept but that cannot work, refused before queueing."""
    if FLAGS.num_collectors < 1:
        raise UserError("--num_collectors must be at least 1")
    if FLAGS.cpus_per_task < 1:
        raise UserError("--cpus_per_task must be at least 1")
    if time_minutes(FLAGS.time) < MIN_TIME_MIN:
        raise UserError(
            f"--time={FLAGS.time} is too short: the job is told to stop {WARN_S} s before its "
            f"limit; give at least {MIN_TIME_MIN} minutes"
        )
    if not re.fullmatch(r"\d+[KMGT]?", FLAGS.mem):
        raise UserError(f"--mem={FLAGS.mem} is not a Slurm memory size: give e.g. 8G or 16000M")
    if FLAGS.partition is not None and not re.fullmatch(r"[\w.,-]+", FLAGS.partition):
        raise UserError(f"--partition={FLAGS.partition!r} is not a partition name")


def sbatch_script(root_dir: Path, gin_files: list[Path], gin_bindings: list[str]) -> str:
    """The batch script: #SBATCH lines, then the launcher wrapped for the time-limit signal."""
    options = [
        f"--job-name=dist-{root_dir.name}",
        f"--ntasks={FLAGS.num_collectors + 2}",
        f"--cpus-per-task={FLAGS.cpus_per_task}",
        f"--mem={FLAGS.mem}",
        f"--time={FLAGS.time}",
        *([f"--partition={FLAGS.partition}"] if FLAGS.partition else []),
        *(["--overcommit"] if FLAGS.overcommit else []),
        "--requeue",
        f"--signal=B:USR1@{WARN_S}",
        "--open-mode=append",
        f"--output={root_dir}/slurm/%j.out",
        f"--chdir={REPO_ROOT}",
    ]
    launch = [  # one line per group of arguments
        [sys.executable, "-m", "pipeline.distributed.launch", "--backend=srun"],
        *[[f"--gin_file={path}"] for path in gin_files],
        *[[f"--gin_bindings={binding}"] for binding in gin_bindings],
        [f"--root_dir={root_dir}", f"--num_collectors={FLAGS.num_collectors}"],
        *[[switch] for switch in common.learner_switches()],
    ]
    header = [
        "#!/bin/bash",
        f"# A distributed run ({FLAGS.num_collectors} collectors), written by "
        "python -m pipeline.distributed.slurm.",
        *[f"#SBATCH {option}" for option in options],
        "",
    ]
    body = BODY.format(
        repo=shlex.quote(str(REPO_ROOT)), launch=" \\\n  ".join(shlex.join(g) for g in launch)
    )
    return "\n".join(header) + "\n" + body


def submit(script_path: Path) -> str:
    """sbatch's job id; a one-line UserError with sbatch's reason if it refuses."""
    result = subprocess.run(
        ["sbatch", "--parsable", str(script_path)], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise UserError(f"sbatch refused {script_path} ({reason}): fix the Slurm options")
    return result.stdout.strip().split(";")[0]


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}: pass settings as --gin_bindings")
    try:
        gin_files = config.parse(FLAGS.gin_file, FLAGS.gin_bindings)  # bad settings fail here
        common.settings()  # and bad distributed.* ones here, not in the queue
        common.check_dqn_family()
        check_options()
        if not FLAGS.dry_run and not shutil.which("sbatch"):
            raise UserError(
                "sbatch not found: run on a Slurm login node, or start a local cluster with "
                "scripts/slurm_local.sh start"
            )
        seed = config.run_settings().seed
        root_dir = Path(
            FLAGS.root_dir or rundir.default_root_dir(FLAGS.gin_file, FLAGS.gin_bindings, seed)
        ).resolve()
        if re.search(r"[\s%]", str(root_dir)):
            raise UserError(f"--root_dir {root_dir} has a space or %: #SBATCH lines cannot hold it")
        rundir.check_writable_run(root_dir)
        rundir.check_same_settings(root_dir, gin.config_str())  # resuming another run's dir
        script = sbatch_script(root_dir, gin_files, FLAGS.gin_bindings)
        if FLAGS.dry_run:
            print(script, end="")
            print("dry run: nothing written or submitted", file=sys.stderr)
            return
        folder = rundir.prepare(root_dir) / "slurm"
        folder.mkdir(exist_ok=True)
        script_path = folder / SCRIPT_NAME
        atomic_write_text(script_path, script)
        job_id = submit(script_path)
    except UserError as error:
        cli.fail(str(error).splitlines()[0])
    print(f"submitted job {job_id}: server, learner and {FLAGS.num_collectors} collectors")
    print(f"script: {script_path}")
    print(f"logs: {folder}/{job_id}.out (launcher), {root_dir}/logs/<role>.log (each role)")
    print(f"watch: squeue -j {job_id}; results: {root_dir}/metrics.jsonl")


if __name__ == "__main__":
    cli.run(main)
