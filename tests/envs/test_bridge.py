"""The gymnasium -> TF-Agents bridge: specs, episode ends, seeding, pass-through."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from tf_agents.environments import py_environment
from tf_agents.environments import utils as env_utils
from tf_agents.trajectories.time_step import StepType

import envs


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"])
def test_passes_tf_agents_validation(env_id):
    env = envs.load_gymnasium(env_id, seed=0)
    env_utils.validate_py_environment(env, episodes=3)


def test_cartpole_specs_are_dtype_faithful():
    env = envs.load_gymnasium("CartPole-v1", seed=0)
    obs_spec, action_spec = env.observation_spec(), env.action_spec()
    assert obs_spec.shape == (4,) and obs_spec.dtype == np.float32
    assert action_spec.shape == () and action_spec.dtype == np.int64
    assert (action_spec.minimum, action_spec.maximum) == (0, 1)
    assert env.reset().observation.dtype == np.float32


def test_termination_has_zero_discount_then_auto_resets():
    env = envs.load_gymnasium("CartPole-v1", seed=0)
    step = env.reset()
    for _ in range(500):  # always pushing left topples the pole within a few dozen steps
        step = env.step(np.int64(0))
        if step.step_type == StepType.LAST:
            break
    assert step.step_type == StepType.LAST
    assert step.discount == 0.0 and step.reward == 1.0
    assert env.step(np.int64(0)).step_type == StepType.FIRST


def test_truncation_keeps_the_discount():
    env = envs.load_gymnasium("CartPole-v1", seed=0, max_episode_steps=4, discount=0.9)
    env.reset()
    steps = [env.step(np.int64(i % 2)) for i in range(4)]  # alternating keeps it upright
    assert [s.step_type for s in steps] == [StepType.MID] * 3 + [StepType.LAST]
    assert [float(s.discount) for s in steps] == pytest.approx([0.9] * 4)


def test_reset_rule_is_tf_agents_own_after_truncation_and_restore():
    """The bridge's cheap `should_reset` answers as TF-Agents' on FIRST, MID and LAST steps,
    and a state saved on a LAST step resets on the next step once restored."""
    env = envs.load_gymnasium("CartPole-v1", seed=0, max_episode_steps=3)
    steps = [env.reset(), *[env.step(np.int64(i % 2)) for i in range(3)]]
    assert [s.step_type for s in steps] == [StepType.FIRST, *[StepType.MID] * 2, StepType.LAST]
    for step in steps:
        ours, theirs = env.should_reset(step), py_environment.PyEnvironment.should_reset(env, step)
        assert ours == bool(theirs) == (step.step_type == StepType.LAST)
    saved = env.get_state()
    assert env.step(np.int64(0)).step_type == StepType.FIRST
    env.set_state(saved)
    assert env.step(np.int64(0)).step_type == StepType.FIRST


def rollout(env, actions):
    observations = [env.reset().observation]
    observations += [env.step(np.int64(a)).observation for a in actions]
    return np.stack(observations)


def test_same_seed_same_trajectory_other_seed_differs():
    actions = [0, 1, 1, 0, 1, 0, 0, 1]
    first = rollout(envs.load_gymnasium("CartPole-v1", seed=7), actions)
    again = rollout(envs.load_gymnasium("CartPole-v1", seed=7), actions)
    other = rollout(envs.load_gymnasium("CartPole-v1", seed=8), actions)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_seed_method_reseeds_the_next_reset():
    env = envs.load_gymnasium("CartPole-v1", seed=1)
    env.reset()
    env.seed(7)
    np.testing.assert_array_equal(
        env.reset().observation, envs.load_gymnasium("CartPole-v1", seed=7).reset().observation
    )


class _Recorder(gym.Env):
    """A tiny env with a uint8 image, an offset Discrete space and call recording."""

    observation_space = gym.spaces.Box(0, 255, (2, 2, 3), np.uint8)
    action_space = gym.spaces.Discrete(3, start=1)
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, render_mode=None):
        self.render_mode = render_mode
        self.actions, self.closed = [], False

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        self.actions.append(action)
        return self.observation_space.sample(), 0.5, False, False, {"seen": action}

    def render(self):
        return np.full((4, 5, 3), 9, np.uint8)

    def close(self):
        self.closed = True


def test_uint8_box_offset_discrete_render_and_close_pass_through():
    env = envs.GymnasiumEnvironment(_Recorder(render_mode="rgb_array"), seed=3)
    assert env.observation_spec().dtype == np.uint8
    assert env.observation_spec().shape == (2, 2, 3)
    assert (env.action_spec().minimum, env.action_spec().maximum) == (1, 3)
    env.reset()
    step = env.step(np.int64(3))
    assert step.observation.dtype == np.uint8 and step.reward.dtype == np.float32
    assert env.gym_env.actions == [3] and env.last_info == {"seen": 3}
    assert env.render().shape == (4, 5, 3)
    env.close()
    assert env.gym_env.closed


def test_unknown_env_id_names_close_matches():
    with pytest.raises(envs.UnknownEnvError, match="did you mean CartPole-v1"):
        envs.load_gymnasium("CartPol-v1")
