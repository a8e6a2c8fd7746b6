"""Resume through the real CLI: kills, signals, torn and corrupt checkpoints, locks.

The reference for every interrupted run is an uninterrupted one with the same settings: a
resumed run must end bit-identical to it (metrics.jsonl and every checkpointed variable).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipeline.run import preemption
from tests.conftest import REPO, TINY_RUN, bindings, read_metrics, train_cli

FAULTY_TRAIN = ["-m", "tests.faulty_train"]  # a module: tests/ itself must not be on sys.path
SPLIT_RUN = [
    "train.total_env_steps=4_000",
    "train.initial_collect_steps=300",
    "train.collect_steps_per_iteration=50",
    "train.train_steps_per_iteration=25",
    "train.eval_interval=700",
    "train.eval_episodes=3",
    "train.checkpoint_interval=400",
    "train.checkpoints_to_keep=2",
    "TorchInitQNetwork.fc_layer_params=(32,)",
    "train.seed=7",
]


def start(root_dir: Path, *extra: str, fault: str | None = None, env=None) -> subprocess.Popen:
    """Starts a run in the background; its stderr goes to `<root_dir>.stderr` (readable live).

    `fault`: run it through tests/faulty_train.py with that fault.
    """
    runner = ["-m", "pipeline.train"] if fault is None else [*FAULTY_TRAIN, fault]
    args = [sys.executable, *runner, *bindings(*SPLIT_RUN, *extra)]
    log = open(f"{root_dir}.stderr", "w")
    return subprocess.Popen(
        [*args, f"--root_dir={root_dir}"], cwd=REPO, stdout=subprocess.PIPE, stderr=log,
        text=True, env=env,
    )  # fmt: skip


def stderr_of(root_dir: Path) -> str:
    return Path(f"{root_dir}.stderr").read_text()


def finish(root_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    result = train_cli(*bindings(*SPLIT_RUN, *extra), f"--root_dir={root_dir}", cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def complete_checkpoints(root_dir: Path) -> list[int]:
    folder = root_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(
        int(p.name.removeprefix("ckpt-"))
        for p in folder.glob("ckpt-*")
        if (p / "MANIFEST.json").exists()
    )


def wait_for(condition, process: subprocess.Popen, poll: float = 0.01, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"run ended early: {process.communicate()[0][-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(poll)


def writing_since(folder: Path, since: float) -> bool:
    """A checkpoint write begun after `since` is under way (a killed one may be left over)."""
    for partial in folder.glob(".ckpt-*.partial") if folder.is_dir() else []:
        try:
            if partial.stat().st_ctime >= since:
                return True
        except FileNotFoundError:  # renamed into place meanwhile
            pass
    return False


def final_variables(root_dir: Path) -> dict[str, np.ndarray]:
    newest = max(complete_checkpoints(root_dir))
    prefix = str(root_dir / "checkpoints" / f"ckpt-{newest:012d}" / "tf" / "state")
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix)}


def resumed_from(result: subprocess.CompletedProcess) -> int | None:
    for line in result.stderr.splitlines():
        if "resumed from checkpoint at" in line:
            return int(line.rsplit(" at ", 1)[1].split()[0].replace(",", ""))
    return None


def assert_same_run(run: Path, reference: Path) -> None:
    assert (run / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()
    ours, theirs = final_variables(run), final_variables(reference)
    assert ours.keys() == theirs.keys()
    different = [k for k in ours if not np.array_equal(ours[k], theirs[k])]
    assert not different, f"variables differ after resume: {different}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one is compared with."""
    root_dir = tmp_path_factory.mktemp("reference") / "run"
    finish(root_dir)
    return root_dir


def test_sigkill_then_resume_is_bit_identical(reference: Path, tmp_path: Path):
    root_dir = tmp_path / "run"
    process = start(root_dir)
    wait_for(lambda: 1_200 in complete_checkpoints(root_dir), process)
    time.sleep(0.3)  # past the checkpoint, so the kill loses work the resume must redo
    process.kill()
    process.wait()
    result = finish(root_dir)
    assert resumed_from(result) is not None and resumed_from(result) >= 1_200
    assert_same_run(root_dir, reference)
    rows = read_metrics(root_dir)
    assert rows[-1]["env_steps"] == 4_000


KILL_POINTS = ["write", "sealed", "episode", "random", "sealed", "write", "random", "episode",
               "sealed", "random", "write", "sealed", "episode"]  # fmt: skip


def test_kills_at_random_points_and_during_checkpoint_writes(reference: Path, tmp_path: Path):
    """Thirteen SIGKILLs: inside checkpoint writes, right after one is sealed, right after a
    training episode ends, and at random points. Each resume starts from the newest
    checkpoint complete at the kill; the end is exact, metrics.jsonl (the rolling
    training-episode means too) and every variable."""
    root_dir = tmp_path / "run"
    folder = root_dir / "checkpoints"
    rng = random.Random(0)
    expected_start = None  # no checkpoint yet: the next start begins at zero
    for point in KILL_POINTS:
        started = time.time()
        if point == "episode":  # killed from inside, right after the Nth episode ends
            env = {**os.environ, "FAULTY_EPISODES": str(rng.randint(2, 12))}
            process = start(root_dir, fault="kill-after-episode", env=env)
            assert process.wait() == -signal.SIGKILL, stderr_of(root_dir)[-2000:]
        else:
            process = start(root_dir)
            if point == "write":  # inside a checkpoint write: its .partial directory exists
                wait_for(lambda t=started: writing_since(folder, t), process, poll=0)
            elif point == "sealed":  # a checkpoint newer than the resume point just landed
                newest = max(complete_checkpoints(root_dir), default=-1)
                wait_for(lambda n=newest: max(complete_checkpoints(root_dir), default=-1) > n,
                         process, poll=0)  # fmt: skip
            else:
                wait_for(lambda: "run directory:" in stderr_of(root_dir), process)
                time.sleep(rng.uniform(0.0, 2.0))  # in restore, collection, training or a write
            process.kill()
            process.wait()
        log = stderr_of(root_dir)
        if expected_start is None:
            assert "resumed from checkpoint" not in log
        else:
            assert f"resumed from checkpoint at {expected_start:,} env steps" in log
        expected_start = max(complete_checkpoints(root_dir), default=None)
    result = finish(root_dir)
    assert resumed_from(result) == expected_start
    assert_same_run(root_dir, reference)
    assert not list(folder.glob(".ckpt-*.partial"))


def test_resume_restores_the_newest_checkpoint_at_the_kill(tmp_path: Path):
    root_dir = tmp_path / "run"
    process = start(root_dir)
    wait_for(lambda: len(complete_checkpoints(root_dir)) >= 2, process)
    process.kill()
    process.wait()
    newest = max(complete_checkpoints(root_dir))
    result = finish(root_dir)
    assert resumed_from(result) == newest
    steps = [row["env_steps"] for row in read_metrics(root_dir)]
    assert steps == sorted(set(steps)) and steps[-1] == 4_000, steps


def test_torn_and_corrupt_latest_checkpoints_fall_back(reference: Path, tmp_path: Path):
    root_dir = tmp_path / "run"
    shutil.copytree(reference, root_dir)
    steps = complete_checkpoints(root_dir)
    assert len(steps) == 2, steps  # checkpoints_to_keep=2
    latest = root_dir / "checkpoints" / f"ckpt-{steps[-1]:012d}"
    torn = root_dir / "checkpoints" / f".ckpt-{steps[-1] + 1:012d}.partial"
    shutil.copytree(latest, torn)  # a write killed before its manifest: never read
    data = latest / "tf" / "state.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # the latest is corrupt
    result = finish(root_dir, "train.total_env_steps=4_000")
    assert "unusable" in result.stderr and "falling back" in result.stderr
    assert resumed_from(result) == steps[0]
    assert_same_run(root_dir, reference)  # redone from the previous one, bit for bit


def test_sigterm_checkpoints_exits_75_and_a_second_process_is_refused(tmp_path: Path):
    root_dir = tmp_path / "run"
    process = start(root_dir, "train.total_env_steps=200_000", "train.checkpoint_interval=100_000")
    wait_for(lambda: (root_dir / "metrics.jsonl").exists(), process)
    time.sleep(1.0)  # well inside the learning phase, far from a scheduled checkpoint

    second = train_cli(
        *bindings(*SPLIT_RUN, "train.total_env_steps=200_000", "train.checkpoint_interval=100_000"),
        f"--root_dir={root_dir}",
        cwd=REPO,
    )
    assert second.returncode == 2
    assert second.stderr.strip().count("\n") == 0, second.stderr
    assert "is in use by pid" in second.stderr and str(process.pid) in second.stderr

    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=60)
    assert time.monotonic() - sent < 10, "SIGTERM must lead to an exit within seconds"
    assert process.returncode == preemption.EXIT_PREEMPTED, stderr_of(root_dir)[-2000:]
    assert "stopped by SIGTERM" in stdout and "run the same command to resume" in stdout
    saved = complete_checkpoints(root_dir)
    assert saved and 0 < saved[-1] < 100_000  # written on the signal, not by the schedule

    resumed = start(root_dir, "train.total_env_steps=200_000", "train.checkpoint_interval=100_000")
    wait_for(lambda: "resumed from checkpoint" in stderr_of(root_dir), resumed)
    time.sleep(1.0)
    resumed.send_signal(signal.SIGUSR1)  # Slurm's early warning works the same way
    stdout, _ = resumed.communicate(timeout=60)
    assert resumed.returncode == preemption.EXIT_PREEMPTED, stdout
    assert f"resumed from checkpoint at {saved[-1]:,} env steps" in stderr_of(root_dir)
    assert "stopped by SIGUSR1" in stdout
    assert max(complete_checkpoints(root_dir)) > saved[-1]


def test_other_settings_refuse_to_resume(reference: Path, tmp_path: Path):
    root_dir = tmp_path / "run"
    shutil.copytree(reference, root_dir)
    before = (root_dir / "metrics.jsonl").read_bytes()
    result = train_cli(
        *bindings(*SPLIT_RUN, "train.batch_size=32"), f"--root_dir={root_dir}", cwd=REPO
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "train.batch_size = 64 in the run, 32 now" in lines[0], lines[0]
    assert (root_dir / "metrics.jsonl").read_bytes() == before


def test_more_steps_extend_a_finished_run(reference: Path, tmp_path: Path):
    root_dir = tmp_path / "run"
    shutil.copytree(reference, root_dir)
    result = finish(root_dir, "train.total_env_steps=4_700")
    assert resumed_from(result) == 4_000
    steps = [row["env_steps"] for row in read_metrics(root_dir)]
    assert steps[-3:] == [4_000, 4_200, 4_700], steps


def test_a_resume_in_new_episodes_stores_no_transition_that_never_happened(
    tmp_path: Path, monkeypatch
):
    """Where the env cannot be saved, the resumed run starts new episodes; the replay must
    then end the old ones (a truncation), never pair their last step with a FIRST step."""
    import gin
    from tf_agents.trajectories.time_step import StepType

    from envs.gym_bridge import GymnasiumEnvironment
    from pipeline import config
    from pipeline.loops import off_policy
    from pipeline.run import rundir

    monkeypatch.setattr(GymnasiumEnvironment, "get_state", lambda self: None)
    tiny = [b for b in TINY_RUN if "total_env_steps" not in b]
    root_dir = tmp_path / "run"
    for total in (600, 900):
        gin.clear_config()
        config.parse(["dqn_cartpole.gin"], [*tiny, f"train.total_env_steps={total}"])
        loop = off_policy.build_loop(root_dir)
        rundir.prepare(root_dir)
        loop.run()
    gin.clear_config()
    config.parse(["dqn_cartpole.gin"], [*tiny, "train.total_env_steps=900"])
    loop = off_policy.build_loop(root_dir)
    loop.restore()
    items = loop.replay.buffer.gather_all()
    step_type = items.step_type.numpy()[0]
    next_step_type = items.next_step_type.numpy()[0]
    for i in np.flatnonzero(step_type[1:] == StepType.FIRST) + 1:
        assert step_type[i - 1] == StepType.LAST, f"item {i - 1} is followed by a FIRST step"
    # The cut: a LAST item after a step that did not end (elsewhere LAST follows next=LAST).
    cuts = np.flatnonzero((step_type[1:] == StepType.LAST) & (next_step_type[:-1] == StepType.MID))
    # The restore just above is a resume too: unless an episode ended exactly at step 900, it
    # cuts one more as the newest item. The run's own resume at 600 made the one before.
    cuts = cuts[cuts != len(step_type) - 2]
    assert len(cuts) == 1, cuts


def test_a_signal_inside_an_update_round_cuts_it_and_the_resume_is_exact(tmp_path: Path):
    """SIGTERM lands after the first 32 updates of a 100-update round: the checkpoint holds
    the cut round, and the resume makes the other 68 before collecting again."""
    long_rounds = [
        "train.total_env_steps=1_500",
        "train.collect_steps_per_iteration=100",
        "train.train_steps_per_iteration=100",
    ]
    reference = tmp_path / "reference"
    finish(reference, *long_rounds)
    root_dir = tmp_path / "run"
    cut = subprocess.run(
        [sys.executable, *FAULTY_TRAIN, "sigterm-mid-round",
         *bindings(*SPLIT_RUN, *long_rounds), f"--root_dir={root_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cut.returncode == preemption.EXIT_PREEMPTED, cut.stderr[-2000:]
    assert final_variables(root_dir)["train_step/.ATTRIBUTES/VARIABLE_VALUE"] == 32
    finish(root_dir, *long_rounds)
    assert_same_run(root_dir, reference)
