"""The distributed mode on one machine: a real Reverb server, learner and collectors.

The long test is the issue's must-show in one run: CartPole with 2 collectors and prioritized
replay learns, a killed collector and a killed learner are restarted (the learner resumes
from its checkpoint), a stopped server comes back from its Reverb checkpoint, the learner's
|TD error| priorities reach the replay, and nothing is left running afterwards. (The Slurm
test, tests/distributed/test_distributed_slurm.py, runs the uniform table.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, read_metrics, requires_reverb
from tests.exports import CARTPOLE_OBSERVATIONS, export_acts_as_checkpoint

pytestmark = requires_reverb

CARTPOLE_BINDINGS = [
    "DqnAgent.n_step_update=1",  # the replay server stores 2-step items (README)
    "train.total_env_steps=8_000",
    "train.eval_interval=2_000",
    "train.eval_episodes=5",
    "train.checkpoint_interval=2_000",
    "distributed.server_checkpoint_interval_s=5.0",
    "distributed.prioritized=True",
]
ONE_STEP = f"--gin_bindings={CARTPOLE_BINDINGS[0]}"
CARTPOLE = ["--gin_file=dqn_cartpole.gin", *[f"--gin_bindings={b}" for b in CARTPOLE_BINDINGS]]
RANDOM_CARTPOLE = 22.4  # mean return of uniform-random play (scripts/bench/baselines.py)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def live_processes(*needles: str) -> dict[int, str]:
    """Pid -> command line of live processes whose command line holds every needle."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if all(needle in cmdline for needle in needles):
            found[int(entry.name)] = cmdline
    return found


def wait_for(condition, timeout_s: float, what: str, process=None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"launcher exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.3)


def role(port: int, name: str, index: int | None = None) -> int:
    needles = [f"pipeline.distributed.{name}", f"localhost:{port}" if name != "server" else
               f"--port={port}"]  # fmt: skip
    if index is not None:
        needles.append(f"--index={index}")
    pids = list(live_processes(*needles))
    assert len(pids) == 1, (name, index, pids)
    return pids[0]


def exposure_warnings(stderr: str) -> list[str]:
    """The launcher's line on who can reach the Reverb server (every interface, no auth)."""
    return [line for line in stderr.splitlines() if line.startswith("warning: the Reverb server")]


def log_of(root: Path, name: str) -> str:
    path = root / "logs" / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def test_distributed_cartpole_learns_and_survives_killed_roles(tmp_path):
    root, port = tmp_path / "run", free_port()
    launcher = subprocess.Popen(
        [sys.executable, "-m", "pipeline.distributed.launch", *CARTPOLE,
         f"--root_dir={root}", f"--port={port}", "--num_collectors=2"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        checkpoints = root / "checkpoints"
        wait_for(
            lambda: checkpoints.exists() and any(p.name.startswith("ckpt-") for p in
                                                 checkpoints.iterdir()),  # fmt: skip
            240, "the learner's first checkpoint", launcher,
        )  # fmt: skip
        os.kill(role(port, "collector", index=1), signal.SIGKILL)
        os.kill(role(port, "learner"), signal.SIGKILL)
        wait_for(lambda: "resumed from checkpoint" in log_of(root, "learner"), 120,
                 "the learner's resume", launcher)  # fmt: skip
        wait_for(lambda: list((root / "reverb").glob("*/DONE")), 60, "a Reverb checkpoint")
        os.kill(role(port, "server"), signal.SIGTERM)  # it checkpoints, exits, comes back
        wait_for(lambda: log_of(root, "server").count("restored from") >= 2, 120,
                 "the server's restart", launcher)  # fmt: skip
        out, err = launcher.communicate(timeout=400)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 0, err[-3000:]
    assert exposure_warnings(err) == [
        f"warning: the Reverb server listens on port {port} on every network interface of this "
        "machine and accepts unauthenticated connections from any host that can reach it (they "
        f"can read and write the replay and the weights): keep port {port} firewalled"
    ], err[-3000:]
    assert "collector-1 exited with status -9: restarting" in err
    assert "learner exited with status -9: restarting" in err
    assert "server exited with status 0: restarting" in err
    server_log = log_of(root, "server")
    restored = [line for line in server_log.splitlines() if "restored from" in line]
    assert " 0 transitions" not in restored[-1], restored  # the replay came back

    rows = [row for row in read_metrics(root) if "eval_return_mean" in row]
    assert rows[-1]["env_steps"] == 8_000
    steps = [row["env_steps"] for row in rows]
    assert steps == sorted(steps) and len(set(steps)) == len(steps), steps
    best = max(row["eval_return_mean"] for row in rows)
    assert best >= 3 * RANDOM_CARTPOLE, [row["eval_return_mean"] for row in rows]
    assert rows[-1]["train_return_mean10"] > 0  # collectors' episodes reached the learner
    assert live_processes(str(port)) == {}, "roles outlived the launcher"
    # the export is a whole model: the learner's final weights, as its checkpoint holds them
    export_acts_as_checkpoint(root, fresh_learner(tmp_path), 8_000, CARTPOLE_OBSERVATIONS)
    priorities = replay_priorities(root, tmp_path)
    assert len(set(priorities)) > 20 and min(priorities) < 0.5 < max(priorities), priorities[:20]

    # Extended, with other run-only settings: it resumes at 8,000 instead of being refused.
    more = [
        "train.total_env_steps=10_000",
        "train.checkpoint_interval=1_000",
        "distributed.server_checkpoint_interval_s=7.0",
        "distributed.connect_timeout_s=90.0",
    ]
    # And with --no_lock, which the launcher hands to the learner (the run's lock holder).
    extended = subprocess.run(
        [sys.executable, "-m", "pipeline.distributed.launch", *CARTPOLE,
         *[f"--gin_bindings={b}" for b in more], f"--root_dir={root}", f"--port={free_port()}",
         "--num_collectors=2", "--no_lock"],
        cwd=REPO, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert len(exposure_warnings(extended.stderr)) == 1
    lines = extended.stderr.splitlines()
    no_lock = [line for line in lines if line.startswith("warning: --no_lock")]
    assert len(no_lock) == 1 and str(root) in no_lock[0], extended.stderr[-3000:]
    assert "resumed from checkpoint at 8,000 env steps" in log_of(root, "learner")
    assert [r for r in read_metrics(root) if "eval_return_mean" in r][-1]["env_steps"] == 10_000
    assert "exited with status 0: restarting" not in extended.stderr  # done is not dead


def fresh_learner(tmp_path: Path):
    """An experiment of the learner's settings, built in this process (its gin cleared)."""
    import gin

    from pipeline import config
    from pipeline.distributed import common

    config.parse(["dqn_cartpole.gin"], CARTPOLE_BINDINGS)
    try:
        return common.RoleExperiment(tmp_path / "fresh")
    finally:
        gin.clear_config()


def replay_priorities(root: Path, tmp_path: Path, samples: int = 200) -> list[float]:
    """Priorities of items sampled from the stopped server's newest Reverb checkpoint."""
    import reverb

    from pipeline import config
    from pipeline.distributed import common

    config.parse(["dqn_cartpole.gin"], CARTPOLE_BINDINGS)
    tables = common.build_tables(common.RoleExperiment(tmp_path / "unused"), common.settings())
    checkpointer = reverb.checkpointers.DefaultCheckpointer(str(root / "reverb"))
    server = reverb.Server(tables, port=None, checkpointer=checkpointer)
    try:
        client = reverb.Client(f"localhost:{server.port}")
        return [s[0].info.priority for s in client.sample(common.REPLAY_TABLE, samples)]
    finally:
        server.stop()


def test_busy_port_is_refused_with_one_line(tmp_path):
    with socket.socket() as holder:
        holder.bind(("", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.distributed.launch", "--gin_file=dqn_cartpole.gin",
             ONE_STEP, f"--root_dir={tmp_path / 'run'}", f"--port={port}"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: port {port} is not free (Address already in use): pick another with --port "
        "or stop the process that holds it"
    ]
    assert time.monotonic() - started < 60
    assert not (tmp_path / "run").exists()


def test_unreachable_server_fails_within_the_timeout():
    port = free_port()
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.distributed.collector", "--gin_file=dqn_cartpole.gin",
         ONE_STEP, "--gin_bindings=distributed.connect_timeout_s=3", f"--server=localhost:{port}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: no Reverb server answered at localhost:{port} within 3 s: start "
        "python -m pipeline.distributed.server first or fix --server"
    ], result.stderr
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(
    "binding, message",
    [
        ("distributed.weight_pull_interval=0", "weight_pull_interval=0 must be an integer >= 1"),
        ("distributed.samples_per_insert=-1", "samples_per_insert=-1 must be a number > 0"),
        ("DqnAgent.n_step_update=3", "the distributed mode stores 2-step items"),
    ],
)
def test_bad_distributed_settings_are_refused(tmp_path, binding, message):
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.distributed.server", "--gin_file=dqn_cartpole.gin",
         ONE_STEP, f"--gin_bindings={binding}", f"--root_dir={tmp_path / 'run'}", f"--port={port}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "gin_file, ratio",
    [("dqn_cartpole.gin", 64 * 32 / 64), ("dqn_breakout.gin", 32 * 1 / 4)],
)
def test_rate_limiter_holds_the_single_process_update_ratio(gin_file, ratio, tmp_path):
    from pipeline import config
    from pipeline.distributed import common

    config.parse([gin_file], ["train.replay_capacity=1_000", "DqnAgent.n_step_update=1"])
    experiment = common.RoleExperiment(tmp_path)
    replay = common.build_tables(experiment, common.settings())[0]
    limiter = replay.info.rate_limiter_info
    assert limiter.samples_per_insert == ratio
    assert limiter.min_size_to_sample == experiment.initial_collect_steps
    # The slack is 10% of the samples the random start allows for.
    slack = (limiter.max_diff - limiter.min_diff) / 2
    assert slack == pytest.approx(0.1 * ratio * experiment.initial_collect_steps)


def test_role_with_other_settings_than_the_server_is_refused(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.distributed.server", "--gin_file=dqn_cartpole.gin",
         ONE_STEP, f"--root_dir={tmp_path / 'run'}", f"--port={port}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.distributed.collector", "--gin_file=dqn_cartpole.gin",
             ONE_STEP, "--gin_bindings=train.batch_size=32", f"--server=localhost:{port}"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: the Reverb server at localhost:{port} was started with other settings (data "
        "shapes or samples per insert differ): start every role with the same --gin_file and "
        "--gin_bindings"
    ], result.stderr
    assert server.returncode == 0  # SIGTERM: checkpoint and a clean stop


def test_launcher_refuses_an_on_policy_gin_file(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.distributed.launch", "--gin_file=ppo_cartpole.gin",
         f"--root_dir={tmp_path / 'run'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: the distributed mode trains the DQN family (@train) and these gin files ask for "
        "another loop (run_experiment.loop): run them with python -m pipeline.train"
    ]
    assert not (tmp_path / "run").exists()
