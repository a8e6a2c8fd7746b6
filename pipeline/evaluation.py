"""Greedy evaluation: N episodes played side by side, one policy call per step for all."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tf_agents.policies import py_policy, py_tf_eager_policy, tf_policy
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import policy_step
from tf_agents.trajectories.time_step import StepType
from tf_agents.utils import nest_utils

from envs.gym_bridge import GymnasiumEnvironment


@dataclass(frozen=True)
class EpisodeStats:
    returns: np.ndarray
    lengths: np.ndarray

    def summary(self) -> dict[str, float]:
        return {
            "eval_return_mean": float(np.mean(self.returns)),
            "eval_return_std": float(np.std(self.returns)),
            "eval_return_min": float(np.min(self.returns)),
            "eval_return_max": float(np.max(self.returns)),
            "eval_length_mean": float(np.mean(self.lengths)),
            "eval_episodes": int(len(self.returns)),
        }


class Evaluator:
    """Plays one episode in each of its envs, reset with fixed seeds so evals are comparable.

    Each evaluation starts every env from the same seed, so two evaluations of the same
    weights give the same numbers and curves show changes in the policy, not in the draws.
    """

    def __init__(self, envs: Sequence[GymnasiumEnvironment], seeds: Sequence[int]):
        if len(envs) != len(seeds):
            raise ValueError("one seed per evaluation env")
        self._envs = list(envs)
        self._seeds = list(seeds)

    def run(
        self,
        policy: py_policy.PyPolicy,
        should_stop: Callable[[], bool] = lambda: False,
        observer: Callable[[int, GymnasiumEnvironment], None] | None = None,
        episodes: int | None = None,
    ) -> EpisodeStats | None:
        """Plays the episodes; None if `should_stop()` turned true first (a pre-emption).

        `episodes`: play only the first that many envs (default: all), so a run can hold
        more envs for its final evaluation than for the ones along the way.
        `observer(i, env)` is called after episode i's reset and after each of its steps
        (to film it).
        """
        n = len(self._envs) if episodes is None else episodes
        if not 0 < n <= len(self._envs):
            raise ValueError(f"episodes must be in 1..{len(self._envs)}, got {n}")
        envs = self._envs[:n]
        for env, seed in zip(envs, self._seeds[:n], strict=True):
            env.seed(seed)
        returns = np.zeros(n, np.float64)
        lengths = np.zeros(n, np.int64)
        running = np.ones(n, bool)
        time_steps = [env.reset() for env in envs]
        if observer is not None:
            for i, env in enumerate(envs):
                observer(i, env)
        policy_state = policy.get_initial_state(n)
        stateless = not tf.nest.flatten(policy_state)
        while running.any():
            if should_stop():
                return None
            live = np.flatnonzero(running)
            if stateless:  # only the games still running, padded to a power of two
                rows = _padded(live, n)
                action_step = policy.action(
                    nest_utils.stack_nested_arrays([time_steps[i] for i in rows]), ()
                )
                actions = np.zeros(n, np.int64)
                actions[live] = np.asarray(action_step.action)[: live.size]
            else:  # a policy with state sees every env, as it was built for
                batch = nest_utils.stack_nested_arrays(time_steps)
                action_step = policy.action(batch, policy_state)
                policy_state = action_step.state
                actions = np.asarray(action_step.action)
            for i in live:  # finished envs wait; their actions are ignored
                time_steps[i] = envs[i].step(actions[i])
                returns[i] += time_steps[i].reward
                lengths[i] += 1
                running[i] = time_steps[i].step_type != StepType.LAST
                if observer is not None:
                    observer(i, envs[i])
        return EpisodeStats(returns=returns, lengths=lengths)

    def close(self) -> None:
        for env in self._envs:
            env.close()


class CompiledPyPolicy(py_policy.PyPolicy):
    """A stateless TF policy called through one concrete function on the flat time step.

    `PyTFEagerPolicy` spends milliseconds per call on CPU converting nests and dispatching
    its `tf.function` (3.7 ms a call in a CartPole run, more than the MLP itself); an
    evaluation calls the policy once per step. One concrete function with a free batch
    dimension runs the same graph for every batch size without that overhead.
    """

    def __init__(self, policy: tf_policy.TFPolicy):
        if not is_stateless(policy):
            raise ValueError("CompiledPyPolicy serves stateless policies only")
        super().__init__(
            tensor_spec.to_nest_array_spec(policy.time_step_spec),
            tensor_spec.to_nest_array_spec(policy.action_spec),
        )
        specs = tf.nest.map_structure(
            lambda spec: tf.TensorSpec([None, *spec.shape], spec.dtype, spec.name),
            policy.time_step_spec,
        )

        def action(*flat: tf.Tensor):
            return policy.action(tf.nest.pack_sequence_as(specs, list(flat))).action

        self._action_fn = tf.function(action, autograph=False).get_concrete_function(
            *tf.nest.flatten(specs)
        )
        self._dtypes = [spec.dtype.as_numpy_dtype for spec in tf.nest.flatten(specs)]

    def _action(self, time_step, policy_state):
        flat = [
            np.asarray(value, dtype)
            for value, dtype in zip(tf.nest.flatten(time_step), self._dtypes, strict=True)
        ]
        action = tf.nest.map_structure(np.asarray, self._action_fn(*flat))
        return policy_step.PolicyStep(action, policy_state, ())


def is_stateless(policy: tf_policy.TFPolicy) -> bool:
    return not tf.nest.flatten(policy.policy_state_spec)


def py_policy_for_evaluation(policy: tf_policy.TFPolicy) -> py_policy.PyPolicy:
    """The fastest exact Python wrapper for `policy`: compiled when stateless."""
    if is_stateless(policy):
        return CompiledPyPolicy(policy)
    return py_tf_eager_policy.PyTFEagerPolicy(policy, use_tf_function=True, batch_time_steps=False)


def _padded(live: np.ndarray, most: int) -> np.ndarray:
    """`live` padded (repeating its first) to the next power of two, at most `most` rows.

    Whole games last very different lengths (a stalled Atari game runs to the frame cap);
    evaluating only the running ones saves the policy's work on finished ones, and a few
    batch sizes keep the policy's tf.function from tracing once per size.
    """
    size = min(1 << int(live.size - 1).bit_length(), most)
    size = max(size, live.size)
    return np.concatenate([live, np.full(size - live.size, live[0])])
