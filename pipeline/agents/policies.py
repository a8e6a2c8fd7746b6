"""Our own collection policies, drawing every random number from a `tf.random.Generator`.

TF-Agents' `RandomTFPolicy` and `EpsilonGreedyPolicy` draw from stateful random ops whose
position cannot be saved: a resumed run would explore differently from one never stopped.
A Generator is a variable, so a checkpoint holds exactly where its stream stands.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf
from tf_agents.policies import tf_policy
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import policy_step
from tf_agents.utils import nest_utils

Epsilon = float | Callable[[], tf.Tensor]
Splitter = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


def discrete_action_range(action_spec) -> tuple[int, int]:
    """The lowest and highest action of one discrete action (a TF or an array spec)."""
    spec = tensor_spec.to_array_spec(action_spec)
    if not np.issubdtype(spec.dtype, np.integer) or spec.shape != ():
        raise TypeError(f"these policies need one discrete action, got {spec}")
    return int(spec.minimum), int(spec.maximum)


class UniformRandomPolicy(tf_policy.TFPolicy):
    """Uniform over a discrete action range; the initial collection and ε's random branch.

    With `splitter` (TF-Agents' `observation_and_action_constraint_splitter`), uniform over
    the actions the observation's mask allows.
    """

    def __init__(
        self,
        time_step_spec,
        action_spec,
        rng: tf.random.Generator,
        name: str = "random",
        splitter: Splitter | None = None,
    ):
        super().__init__(time_step_spec, action_spec, name=name)
        self._low, self._high = discrete_action_range(action_spec)
        self._rng = rng
        self._splitter = splitter

    def _action(self, time_step, policy_state, seed):
        del seed  # the Generator is the only source of randomness
        if self._splitter is None:
            batch = nest_utils.get_outer_shape(time_step, self.time_step_spec)
            return policy_step.PolicyStep(self.draw(batch), policy_state, ())
        _, mask = self._splitter(time_step.observation)
        logits = tf.where(tf.cast(mask, tf.bool), 0.0, -1e9)
        seed = tf.cast(self._rng.make_seeds(1)[:, 0], tf.int32)
        index = tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int64)[:, 0]
        action = index + self._low
        return policy_step.PolicyStep(tf.cast(action, self.action_spec.dtype), policy_state, ())

    def draw(self, batch: tf.Tensor) -> tf.Tensor:
        """`batch` uniform actions, no mask (the draws `action` makes without a splitter)."""
        action = self._rng.uniform(batch, self._low, self._high + 1, dtype=tf.int64)
        return tf.cast(action, self.action_spec.dtype)

    def _distribution(self, time_step, policy_state):
        raise NotImplementedError("UniformRandomPolicy only samples actions")


class EpsilonGreedyPolicy(tf_policy.TFPolicy):
    """With probability ε a uniform random action, else the wrapped (greedy) policy's.

    `epsilon` is a number or a zero-argument callable read at every step (a schedule).
    """

    def __init__(
        self,
        policy: tf_policy.TFPolicy,
        epsilon: Epsilon,
        rng: tf.random.Generator,
        name: str = "epsilon_greedy",
        splitter: Splitter | None = None,
    ):
        super().__init__(
            policy.time_step_spec,
            policy.action_spec,
            policy.policy_state_spec,
            policy.info_spec,
            name=name,
        )
        self._greedy = policy
        self._random = UniformRandomPolicy(
            policy.time_step_spec, policy.action_spec, rng, splitter=splitter
        )
        self._epsilon = epsilon
        self._rng = rng
        self._splitter = splitter

    def _action(self, time_step, policy_state, seed):
        del seed
        greedy = self._greedy.action(time_step, policy_state)
        batch = nest_utils.get_outer_shape(time_step, self.time_step_spec)
        action = self._explore(greedy.action, batch, time_step)
        return policy_step.PolicyStep(action, greedy.state, greedy.info)

    def _explore(self, greedy: tf.Tensor, batch: tf.Tensor, time_step=None) -> tf.Tensor:
        """`greedy` with each row replaced by a random action with probability epsilon; the
        random branch reads `time_step` only for an action mask."""
        if self._splitter is None:
            random = self._random.draw(batch)
        else:
            random = self._random.action(time_step).action
        epsilon = self._epsilon() if callable(self._epsilon) else self._epsilon
        explore = self._rng.uniform(batch, dtype=tf.float32) < tf.cast(epsilon, tf.float32)
        return tf.where(explore, random, greedy)

    @property
    def reuses_greedy(self) -> bool:
        """Whether `action_reusing_greedy` serves this policy: a stateless greedy policy (its
        action a function of the observation) and no action mask."""
        return self._splitter is None and not tf.nest.flatten(self._greedy.policy_state_spec)

    def action_reusing_greedy(
        self, time_step, rows: tf.Tensor, reused: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """`action` on a batch of `reused`'s size, the greedy policy run on rows `rows` only
        (`time_step` holds those rows); every other row's greedy action is its entry of
        `reused` (what the same observation got before). Returns the actions and the greedy
        actions; the random draws are those of `action` on the whole batch.

        An Atari game waiting for its serve shows the agent one frame stack for thousands of
        steps: 80% of a trained DrQ agent's evaluation steps on Breakout repeat the last one.
        """
        computed = tf.cond(  # no rows: no call (convolutions refuse an empty batch)
            tf.size(rows) > 0,
            lambda: self._greedy.action(time_step).action,
            lambda: tf.zeros([0], reused.dtype),
        )
        greedy = tf.tensor_scatter_nd_update(reused, rows[:, None], computed)
        return self._explore(greedy, tf.shape(reused)[:1]), greedy

    def _distribution(self, time_step, policy_state):
        raise NotImplementedError("EpsilonGreedyPolicy only samples actions")


class GeneratorSamplingPolicy(tf_policy.TFPolicy):
    """Samples a stochastic policy's action distribution with seeds drawn from a Generator.

    TF-Agents' actor policies sample with stateful seeds; this wrapper asks the wrapped
    policy only for its distribution (and info, which PPO needs) and draws the action with
    a stateless seed from `rng`, so collection continues exactly after a resume.
    """

    def __init__(
        self, policy: tf_policy.TFPolicy, rng: tf.random.Generator, name: str = "sampling"
    ):
        super().__init__(
            policy.time_step_spec,
            policy.action_spec,
            policy.policy_state_spec,
            policy.info_spec,
            emit_log_probability=policy.emit_log_probability,
            name=name,
        )
        self._policy = policy
        self._rng = rng

    def _distribution(self, time_step, policy_state):
        return self._policy.distribution(time_step, policy_state)

    def _action(self, time_step, policy_state, seed):
        del seed
        step = self._policy.distribution(time_step, policy_state)
        distributions = tf.nest.flatten(step.action)
        seeds = tf.cast(self._rng.make_seeds(len(distributions)), tf.int32)  # TFP wants int32
        actions = [d.sample(seed=seeds[:, i]) for i, d in enumerate(distributions)]
        info = step.info
        if self.emit_log_probability:
            log_probs = [d.log_prob(a) for d, a in zip(distributions, actions, strict=True)]
            info = policy_step.set_log_probability(
                info, tf.nest.pack_sequence_as(step.action, log_probs)
            )
        action = tf.nest.pack_sequence_as(self.action_spec, actions)
        return policy_step.PolicyStep(action, step.state, info)
