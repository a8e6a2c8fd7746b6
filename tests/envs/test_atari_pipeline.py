"""Breakout through the whole pipeline: the CLI run, the memory pre-flight, and replay stacks
rebuilt from real ALE frames across life losses and resets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tf_agents.drivers import py_driver
from tf_agents.policies import random_py_policy
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import trajectory as trajectory_lib

from envs import load_atari
from pipeline.replay.frame_stack import FrameStackReplay
from tests.conftest import REPO, bindings, read_metrics, train_cli

SMOKE_RUN = [
    "train.total_env_steps=600",
    "train.initial_collect_steps=200",
    "train.replay_capacity=2_000",
    "train.eval_interval=300",
    "train.eval_episodes=2",
    "load_atari.max_episode_frames=4_000",  # bounds an untrained policy's eval games
]


def test_breakout_smoke_run(tmp_path: Path):
    run_dir = tmp_path / "run"
    result = train_cli(
        "--gin_file=dqn_breakout.gin", *bindings(*SMOKE_RUN), f"--root_dir={run_dir}", cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    rows = read_metrics(run_dir)
    assert [row["env_steps"] for row in rows] == [300, 600]
    # One update every 4 agent steps after the 200 random ones.
    assert rows[-1]["train_steps"] == (600 - 200) // 4
    assert all(row["eval_episodes"] == 2 for row in rows)
    assert "QNetwork.conv_layer_params" in (run_dir / "operative_config.gin").read_text()
    assert result.stdout.strip().splitlines()[-1].startswith("final eval return")


def test_replay_that_cannot_fit_in_memory_is_refused(tmp_path: Path):
    run_dir = tmp_path / "run"
    result = train_cli(
        "--gin_file=dqn_breakout.gin",
        *bindings(*SMOKE_RUN, "train.replay_capacity=100_000_000_000"),
        f"--root_dir={run_dir}",
        cwd=REPO,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: replay buffer of 100,000,000,000 transitions needs")
    assert "train.replay_capacity" in lines[0]
    assert not run_dir.exists()


def test_sampled_stacks_are_the_stacks_the_policy_saw_in_breakout():
    """Random play loses lives every few dozen steps: many pseudo-resets, a wrapping ring."""
    env = load_atari(seed=3, training=True, num_envs=2, noop_max=5)
    spec = trajectory_lib.from_transition(
        env.time_step_spec(),
        random_py_policy.RandomPyPolicy(env.time_step_spec(), env.action_spec()).policy_step_spec,
        env.time_step_spec(),
    )
    replay = FrameStackReplay(tensor_spec.from_spec(spec), batch_size=2, capacity=2 * 300, seed=0)
    recorded: list = []

    def observe(traj) -> None:
        recorded.append(traj)
        replay.add_numpy(traj)

    policy = random_py_policy.RandomPyPolicy(
        env.time_step_spec(), env.action_spec(), outer_dims=(2,)
    )
    driver = py_driver.PyDriver(env, policy, [observe], max_steps=2 * 700)
    driver.run(env.reset())
    env.close()

    # Every (stack at t, stack at t+1) pair of one lane inside an episode, as the policy saw it.
    seen_pairs = set()
    for lane in range(2):
        for before, after in zip(recorded[:-1], recorded[1:], strict=True):
            if before.step_type[lane] != trajectory_lib.ts.StepType.LAST:
                seen_pairs.add(
                    (before.observation[lane].tobytes(), after.observation[lane].tobytes())
                )
    firsts = sum(int((t.step_type == trajectory_lib.ts.StepType.FIRST).sum()) for t in recorded)
    assert firsts >= 6, "random Breakout play should lose several lives in 700 steps"

    batch = replay.sample_numpy(256)
    assert batch.observation.shape == (256, 2, 84, 84, 4)
    for pair in batch.observation:
        assert (pair[0].tobytes(), pair[1].tobytes()) in seen_pairs
    # Some sampled stacks start an episode (zero padding after a reset or a lost life).
    assert np.any(batch.observation[:, 0, :, :, 0].reshape(256, -1).max(axis=1) == 0)
