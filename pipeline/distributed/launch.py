"""Starts a distributed run and keeps it going: server, learner and N collectors.

    python -m pipeline.distributed.launch --gin_file=dqn_cartpole.gin --num_collectors=2 \
        --gin_bindings=DqnAgent.n_step_update=1 --root_dir=runs/cartpole-dist

Locally every role is a child process and they talk over loopback, but the Reverb server
listens on every interface without authentication (Reverb takes no bind address): the log's
`warning:` line names the port to keep firewalled. Inside a Slurm allocation
(`--backend=srun`, what `pipeline.distributed.slurm` submits) every role is a job step on the
allocation's nodes, the server on the first node, and collectors get its address. Either way
this supervisor restarts a role that dies (a collector starts new episodes, the learner
resumes from its checkpoint, the server from its Reverb checkpoint) up to `--max_restarts`
times each, and stops everything when the learner finishes, when a role reports bad input
(exit 2), or on SIGTERM/SIGINT (the learner then checkpoints: exit 75, rerun to resume).
Each role's output goes to `<root_dir>/logs/<role>.log`; the learner's also to stderr.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from absl import flags

from pipeline import cli, config
from pipeline.distributed import common
from pipeline.errors import UserError
from pipeline.run import preemption, rundir

flags.DEFINE_integer("num_collectors", 2, "Collector processes.")
flags.DEFINE_integer("port", 0, "Reverb server port; 0 picks a free one.")
flags.DEFINE_integer("max_restarts", 5, "Restarts allowed per role before the run gives up.")
flags.DEFINE_enum("backend", "local", ["local", "srun"], "Child processes, or Slurm job steps.")
flags.DEFINE_float("server_start_timeout_s", 120.0, "How long to wait for the server to serve.")
cli.define_run_flags()
FLAGS = flags.FLAGS

POLL_S = 0.2
STOP_GRACE_S = 30.0  # SIGTERM, then SIGKILL after this long
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Child side of Popen: the kernel sends SIGTERM if the launcher dies (no orphans)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Role:
    name: str
    module: str
    extra: list[str]
    echo: bool = False  # follow its log on our stderr
    node: str | None = None  # where srun places it (local: None); kept across restarts
    restarts: int = 0
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    followed: bool = False

    def argv(self, gin_args: list[str]) -> list[str]:
        extra = [a.replace("{restart}", str(self.restarts)) for a in self.extra]
        return [sys.executable, "-m", self.module, *gin_args, *extra]


class Supervisor:
    def __init__(self, root_dir: Path, gin_args: list[str], backend: str, max_restarts: int):
        self.root_dir = root_dir
        self.gin_args = gin_args
        self.backend = backend
        self.max_restarts = max_restarts
        self.logs = root_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def _command(self, role: Role) -> list[str]:
        argv = role.argv(self.gin_args)
        if self.backend == "local":
            return argv
        place = ["--nodelist", role.node] if role.node else []
        # Slurm 22.05's srun no longer takes --cpus-per-task from the allocation: pass it on.
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        per_task = [f"--cpus-per-task={cpus}"] if cpus else []
        # --mem=0: the role may use the job's memory without reserving it. A step otherwise
        # asks for all of it (SLURM_MEM_PER_NODE) and, where memory is scheduled, the next
        # role's step waits for the first to end.
        srun = ["srun", "--ntasks=1", "--nodes=1", "--exact", "--mem=0", *per_task,
                "--kill-on-bad-exit=1", *place, f"--job-name={role.name}", *argv]  # fmt: skip
        # srun answers SIGTERM by killing its step outright (the learner could not checkpoint,
        # nor the server save its replay) but passes SIGUSR1 on, which the roles take as
        # SIGTERM: this shell turns our SIGTERM into SIGUSR1 and exits with srun's status.
        relay = (
            'trap \'kill -USR1 "$step" 2>/dev/null\' TERM; "$@" & step=$!; '
            'while :; do wait "$step"; s=$?; kill -0 "$step" 2>/dev/null || exit "$s"; done'
        )
        return ["bash", "-c", relay, "srun", *srun]

    def start(self, role: Role) -> None:
        """Starts the role with its output appended to its log (it outlives a dead reader)."""
        role.log_path = self.logs / f"{role.name}.log"
        with open(role.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} start {role.restarts}\n".encode())
            log.flush()
            role.process = subprocess.Popen(
                self._command(role),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        if role.echo and not role.followed:
            threading.Thread(target=_follow, args=(role.log_path,), daemon=True).start()
            role.followed = True

    def stop(self, roles: list[Role]) -> None:
        """SIGTERM to every live role, SIGKILL to any still there after the grace period."""
        live = [r for r in roles if r.process and r.process.poll() is None]
        for role in live:
            role.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for role in live:
            try:
                role.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                role.process.kill()
                role.process.wait()

    def last_error(self, role: Role) -> str:
        lines = role.log_path.read_text(errors="replace").splitlines() if role.log_path else []
        errors = [line for line in lines if line.startswith("error:")]
        return errors[-1] if errors else (lines[-1] if lines else "no output")


def _follow(path: Path) -> None:
    """Copies new lines of a log to our stderr as they come (the learner's progress)."""
    with open(path, "rb") as log:
        log.seek(0, os.SEEK_END)
        while True:
            line = log.readline()
            if line:
                sys.stderr.buffer.write(line)
                sys.stderr.flush()
            else:
                time.sleep(0.2)


def _wait_until_serving(supervisor: Supervisor, server: Role, address: str) -> None:
    deadline = time.monotonic() + FLAGS.server_start_timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise UserError(f"the server did not start: {supervisor.last_error(server)}")
        try:
            common.wait_for_server(address, timeout_s=1)
            return
        except UserError:
            time.sleep(0.5)
    raise UserError(
        f"the server did not answer at {address} within {FLAGS.server_start_timeout_s:.0f} s: "
        f"see {server.log_path}"
    )


def _nodes() -> list[str | None]:
    if FLAGS.backend == "local":
        return [None]
    if "SLURM_JOB_NODELIST" not in os.environ:
        raise UserError(
            "--backend=srun runs inside a Slurm allocation and there is none here: submit with "
            "python -m pipeline.distributed.slurm"
        )
    listed = subprocess.run(
        ["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return listed or [None]


def exposure_warning(port: int, machine: str) -> str:
    """The one line that says who can reach the server: Reverb (0.14) binds `[::]:port`, every
    interface, IPv4 too, with gRPC's insecure credentials, and takes no address to bind."""
    return (
        f"warning: the Reverb server listens on port {port} on every network interface of "
        f"{machine} and accepts unauthenticated connections from any host that can reach it "
        f"(they can read and write the replay and the weights): keep port {port} firewalled"
    )


def supervise(root_dir: Path, gin_args: list[str], num_collectors: int, stop) -> int:
    """Runs the roles to the learner's end; returns the exit status for the launcher."""
    nodes = _nodes()
    host = "localhost" if FLAGS.backend == "local" else socket.getfqdn(nodes[0])
    port = FLAGS.port or common.free_port()
    address = f"{host}:{port}"
    supervisor = Supervisor(root_dir, gin_args, FLAGS.backend, FLAGS.max_restarts)
    root = f"--root_dir={root_dir}"
    server = Role("server", "pipeline.distributed.server", [root, f"--port={port}"], node=nodes[0])
    learner = Role("learner", "pipeline.distributed.learner",
                   [root, f"--server={address}", *common.learner_switches()], echo=True,
                   node=nodes[0])  # fmt: skip
    collectors = [
        Role(f"collector-{i}", "pipeline.distributed.collector",
             [f"--server={address}", f"--index={i}", "--restart={restart}"],
             node=nodes[(i + 1) % len(nodes)])
        for i in range(num_collectors)
    ]  # fmt: skip
    roles = [server, learner, *collectors]
    print(f"launching server at {address}, learner, {num_collectors} collectors; logs in "
          f"{supervisor.logs}", file=sys.stderr, flush=True)  # fmt: skip
    print(exposure_warning(port, "this machine" if FLAGS.backend == "local" else host),
          file=sys.stderr, flush=True)  # fmt: skip
    try:
        supervisor.start(server)
        _wait_until_serving(supervisor, server, address)
        for role in [learner, *collectors]:
            supervisor.start(role)
        finished: list[Role] = []  # collectors done before the learner exits: not deaths
        while True:
            if stop.requested:
                supervisor.stop([*collectors, learner])  # the learner checkpoints (exit 75)
                supervisor.stop([server])
                return preemption.EXIT_PREEMPTED
            for role in roles:
                status = role.process.poll()
                if status is None or role in finished:
                    continue
                if role is learner and status == 0:
                    supervisor.stop(collectors)
                    supervisor.stop([server])
                    return 0
                if role in collectors and status == 0:  # it saw the learner's finished flag
                    finished.append(role)
                    print(f"{role.name} finished", file=sys.stderr, flush=True)
                    continue
                if status == 2:
                    supervisor.stop(roles)
                    raise UserError(f"{role.name} refused to run: {supervisor.last_error(role)}")
                if role.restarts >= supervisor.max_restarts:
                    supervisor.stop(roles)
                    print(f"error: {role.name} died {role.restarts + 1} times (last: "
                          f"{supervisor.last_error(role)}); see {role.log_path}",
                          file=sys.stderr)  # fmt: skip
                    return 1
                role.restarts += 1
                print(f"{role.name} exited with status {status}: restarting "
                      f"({role.restarts} of {supervisor.max_restarts})",
                      file=sys.stderr, flush=True)  # fmt: skip
                supervisor.start(role)
                if role is server:
                    _wait_until_serving(supervisor, server, address)
            time.sleep(POLL_S)
    finally:
        supervisor.stop(roles)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}: pass settings as --gin_bindings")
    stop = preemption.PreemptionFlag().__enter__()
    try:
        config.parse(FLAGS.gin_file, FLAGS.gin_bindings)  # bad settings fail here, once
        common.settings()
        common.check_dqn_family()
        if FLAGS.num_collectors < 1:
            raise UserError("--num_collectors must be at least 1")
        if FLAGS.port:
            common.check_port_free(FLAGS.port)
        seed = config.run_settings().seed
        root_dir = Path(
            FLAGS.root_dir or rundir.default_root_dir(FLAGS.gin_file, FLAGS.gin_bindings, seed)
        ).resolve()
        if FLAGS.backend == "local":  # an srun launch was checked by its submitter
            rundir.check_writable_run(root_dir)
        rundir.prepare(root_dir)
        gin_args = [f"--gin_file={f}" for f in FLAGS.gin_file]
        gin_args += [f"--gin_bindings={b}" for b in FLAGS.gin_bindings]
        status = supervise(root_dir, gin_args, FLAGS.num_collectors, stop)
    except UserError as error:
        cli.fail(str(error).splitlines()[0])
    if status == 0:
        print(f"distributed run finished; run directory: {root_dir}")
    elif status == preemption.EXIT_PREEMPTED:
        print(f"stopped by {stop.signal_name}: the learner checkpointed; run the same command "
              f"to resume (exit status {status}); run directory: {root_dir}")  # fmt: skip
    sys.exit(status)


if __name__ == "__main__":
    cli.run(main)
