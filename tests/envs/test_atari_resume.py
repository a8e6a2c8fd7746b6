"""Atari runs killed with a real SIGKILL and resumed: the single-env path continues the very
episode it was in (the emulator's state is in the checkpoint) and ends bit-identical; the
batched C++ path, whose emulators ale-py cannot clone, resumes in new episodes, never with
a traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, bindings, train_cli

SHORT_BREAKOUT = [
    "--gin_file=dqn_breakout.gin",
    *bindings(
        "train.total_env_steps=1_200",
        "train.initial_collect_steps=200",
        "train.replay_capacity=2_000",
        "train.eval_interval=600",
        "train.eval_episodes=1",
        "train.checkpoint_interval=150",
        "train.checkpoints_to_keep=2",
        "load_atari.max_episode_frames=4_000",  # bounds an untrained policy's eval games
        "QNetwork.conv_layer_params=((8, 8, 4),)",
        "QNetwork.fc_layer_params=(16,)",
        "LinearSchedule.decay_steps=1_000",
    ),
]
NEW_EPISODE_WARNING = "the train env's state is not in the checkpoint"


def checkpoint_steps(root: Path) -> list[int]:
    folder = root / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name[5:]) for p in folder.glob("ckpt-*") if (p / "MANIFEST.json").exists())


def kill_after_checkpoint(args: list[str], root: Path, at_least: int) -> None:
    """SIGKILL soon after a checkpoint at `at_least` env steps or later is sealed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.train", *args, f"--root_dir={root}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while max(checkpoint_steps(root), default=0) < at_least:
        assert process.poll() is None, "the run ended before it was killed"
        assert time.monotonic() < deadline, "no checkpoints within 300 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_a_killed_breakout_run_resumes_bit_identical(tmp_path: Path):
    reference = tmp_path / "reference"
    done = train_cli(*SHORT_BREAKOUT, f"--root_dir={reference}", cwd=REPO)
    assert done.returncode == 0, done.stderr

    interrupted = tmp_path / "interrupted"
    kill_after_checkpoint(SHORT_BREAKOUT, interrupted, at_least=450)  # mid-episode, mid-run
    resumed = train_cli(*SHORT_BREAKOUT, f"--root_dir={interrupted}", cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from checkpoint" in resumed.stderr
    assert NEW_EPISODE_WARNING not in resumed.stderr
    ref, got = (d / "metrics.jsonl" for d in (reference, interrupted))
    assert got.read_bytes() == ref.read_bytes()


def test_a_killed_batched_breakout_run_resumes(tmp_path: Path):
    run = [
        *SHORT_BREAKOUT,
        *bindings("load_atari.num_envs=4", "train.collect_steps_per_iteration=4"),
    ]
    root = tmp_path / "batched"
    kill_after_checkpoint(run, root, at_least=300)
    resumed = train_cli(*run, f"--root_dir={root}", cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert "resumed from checkpoint" in resumed.stderr
    assert NEW_EPISODE_WARNING in resumed.stderr  # said, not hidden
    assert max(checkpoint_steps(root)) >= 1_200
