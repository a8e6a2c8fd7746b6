"""Greedy evaluation: N episodes played side by side, one policy call per step for all."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tf_agents.policies import py_policy
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
    ) -> EpisodeStats | None:
        """Plays the episodes; None if `should_stop()` turned true first (a pre-emption).

        `observer(i, env)` is called after episode i's reset and after each of its steps
        (to film it).
        """
        for env, seed in zip(self._envs, self._seeds, strict=True):
            env.seed(seed)
        n = len(self._envs)
        returns = np.zeros(n, np.float64)
        lengths = np.zeros(n, np.int64)
        running = np.ones(n, bool)
        time_steps = [env.reset() for env in self._envs]
        if observer is not None:
            for i, env in enumerate(self._envs):
                observer(i, env)
        policy_state = policy.get_initial_state(n)
        while running.any():
            if should_stop():
                return None
            batch = nest_utils.stack_nested_arrays(time_steps)
            action_step = policy.action(batch, policy_state)
            policy_state = action_step.state
            actions = np.asarray(action_step.action)
            for i in np.flatnonzero(running):  # finished envs wait; their actions are ignored
                time_steps[i] = self._envs[i].step(actions[i])
                returns[i] += time_steps[i].reward
                lengths[i] += 1
                running[i] = time_steps[i].step_type != StepType.LAST
                if observer is not None:
                    observer(i, self._envs[i])
        return EpisodeStats(returns=returns, lengths=lengths)

    def close(self) -> None:
        for env in self._envs:
            env.close()
