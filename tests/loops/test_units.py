"""Small pieces: schedules, the evaluator's bookkeeping, default run directories."""

from __future__ import annotations

from pathlib import Path

import gin
import gymnasium as gym
import numpy as np
import pytest
from tf_agents.policies import py_policy
from tf_agents.trajectories import policy_step

import envs
from pipeline import config
from pipeline.agents.schedules import LinearSchedule
from pipeline.loops import off_policy
from pipeline.loops.evaluation import Evaluator
from pipeline.run import metrics
from pipeline.run.rundir import default_root_dir


def test_linear_schedule_decays_then_holds():
    schedule = LinearSchedule(start=1.0, end=0.1, decay_steps=100)
    values = [float(schedule(step)) for step in (0, 50, 100, 10_000)]
    assert values == pytest.approx([1.0, 0.55, 0.1, 0.1])


def test_linear_schedule_holds_start_during_its_delay():
    schedule = LinearSchedule(start=1.0, end=0.01, decay_steps=5_000, delay_steps=1_600)
    values = [float(schedule(step)) for step in (0, 1_600, 4_100, 6_600, 100_000)]
    assert values == pytest.approx([1.0, 1.0, 0.505, 0.01, 0.01])
    with pytest.raises(ValueError, match="delay_steps must be >= 0"):
        LinearSchedule(delay_steps=-1)


class AlwaysLeft(py_policy.PyPolicy):
    def __init__(self, env):
        super().__init__(env.time_step_spec(), env.action_spec())

    def _action(self, time_step, policy_state):
        n = time_step.observation.shape[0]
        return policy_step.PolicyStep(np.zeros(n, np.int64), policy_state, ())


def direct_gymnasium_episode(seed: int) -> tuple[float, int]:
    env = gym.make("CartPole-v1")
    env.reset(seed=seed)
    total, length, done = 0.0, 0, False
    while not done:
        _, reward, terminated, truncated, _ = env.step(0)
        total, length, done = total + reward, length + 1, terminated or truncated
    return total, length


def test_evaluator_matches_direct_gymnasium_episodes_and_repeats():
    seeds = [11, 12, 13]
    evaluator = Evaluator([envs.load_gymnasium("CartPole-v1") for _ in seeds], seeds)
    policy = AlwaysLeft(envs.load_gymnasium("CartPole-v1"))
    first, second = evaluator.run(policy), evaluator.run(policy)
    expected = [direct_gymnasium_episode(s) for s in seeds]
    np.testing.assert_array_equal(first.returns, [r for r, _ in expected])
    np.testing.assert_array_equal(first.lengths, [n for _, n in expected])
    np.testing.assert_array_equal(first.returns, second.returns)


class Batched(py_policy.PyPolicy):
    """Pushes the pole's way while it leans, and records every batch size it is called with."""

    def __init__(self, env):
        super().__init__(env.time_step_spec(), env.action_spec())
        self.batch_sizes: list[int] = []

    def _action(self, time_step, policy_state):
        self.batch_sizes.append(time_step.observation.shape[0])
        action = (time_step.observation[:, 2] > 0).astype(np.int64)
        return policy_step.PolicyStep(action, policy_state, ())


def test_evaluator_plays_a_prefix_of_its_envs_and_only_running_games():
    seeds = [21, 22, 23, 24, 25]
    evaluator = Evaluator([envs.load_gymnasium("CartPole-v1") for _ in seeds], seeds)
    policy = Batched(envs.load_gymnasium("CartPole-v1"))
    everything = evaluator.run(policy)
    lengths = everything.lengths
    assert len(set(lengths.tolist())) > 1  # games end at different steps
    # Finished games leave the batch (sizes padded to powers of two, at most 5).
    assert set(policy.batch_sizes) <= {5, 4, 2, 1} and policy.batch_sizes[-1] < 5
    assert len(policy.batch_sizes) == lengths.max()
    first_three = evaluator.run(policy, episodes=3)
    np.testing.assert_array_equal(first_three.returns, everything.returns[:3])
    with pytest.raises(ValueError, match="episodes must be in 1..5"):
        evaluator.run(policy, episodes=6)


def test_default_root_dir_is_stable_and_depends_on_settings():
    base = default_root_dir(["dqn_cartpole.gin"], [], 0)
    assert base == Path("runs/dqn_cartpole-s0")
    tuned = default_root_dir(["dqn_cartpole.gin"], ["Adam.learning_rate=1e-3"], 2)
    assert tuned == default_root_dir(["dqn_cartpole.gin"], ["Adam.learning_rate=1e-3"], 2)
    assert tuned.name.startswith("dqn_cartpole-") and tuned.name.endswith("-s2") and tuned != base


def test_cartpole_network_starts_as_pytorch_linear_layers_in_every_layer():
    """Kernel and bias of each layer, output included, from U(+-1/sqrt(fan_in)), each its own."""
    try:
        config.parse(["dqn_cartpole.gin"], ["TorchInitQNetwork.fc_layer_params=(256, 256, 256)"])
        agent = off_policy.Experiment("unused-root").agent
    finally:
        gin.clear_config()
    variables = agent._q_network.trainable_variables
    kernels = [v.numpy() for v in variables if "kernel" in v.name]
    biases = [v.numpy() for v in variables if "bias" in v.name]
    assert [k.shape for k in kernels] == [(4, 256), (256, 256), (256, 256), (256, 2)]
    assert not np.array_equal(kernels[1], kernels[2])
    assert not np.array_equal(biases[1], biases[2])
    for kernel, bias in zip(kernels, biases, strict=True):
        bound = 1 / np.sqrt(kernel.shape[0])
        assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.9 * bound
        assert np.abs(bias).max() <= bound and np.all(bias != 0)
        if bias.size > 2:  # two output biases say little about the spread
            assert np.abs(bias).max() > 0.9 * bound
    # The target network starts as a copy of the online one.
    target = agent._target_q_network.trainable_variables
    assert all(np.array_equal(t.numpy(), v.numpy()) for t, v in zip(target, variables, strict=True))


def test_progress_eta_follows_the_recent_rate_not_the_fast_random_start(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(metrics.time, "monotonic", lambda: now[0])
    progress = metrics.Progress(total_env_steps=110_000)
    now[0] = 10.0
    progress.update(50_000)  # the random collection ran at 5,000 steps/s
    now[0] = 20.0
    assert progress.update(51_000) == 100.0  # learning runs at 100 steps/s
    line = progress.line(51_000, None)
    assert "100 steps/s" in line and "ETA 0:09:50" in line, line
    assert "2,550 steps/s" in progress.line(51_000, None, overall=True)
