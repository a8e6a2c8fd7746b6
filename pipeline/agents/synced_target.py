"""A target network synced after every update is the online network: read the next states once.

With `DqnAgent.target_update_period = 1` and `target_update_tau = 1.0` (DrQ(ε) at the Atari
100k budget) TF-Agents copies the online weights into the target network after each update,
so every update starts with the two networks equal. TF-Agents still runs the next
observations through both: `DdqnAgent` takes the values from the target network and the
argmax from the online one (its greedy policy); `DqnAgent` runs the target network twice
(values, then its greedy policy). With equal weights both reduce to max_a Q(s', a) from one
forward pass of the online network, bit for bit: the same ops on the same weights, and the
value at the first argmax is the max. That drops one of the update's four passes through the
Q-network (on the Nature CNN about a fifth of an update). Any other target setting, an action
mask, C51 and Rainbow keep TF-Agents' own computation.

An update that reads no target network need not copy into it either: the copy after every
update (every weight of the network, 1.7M floats on the Nature CNN) waits until something
reads the target, which is only a checkpoint. `sync_target` makes it there, so checkpoints
hold what TF-Agents' copies would have left: the online weights.
"""

from __future__ import annotations

import functools

import tensorflow as tf
from tf_agents.agents.dqn import dqn_agent
from tf_agents.utils import common

from pipeline.agents.mixins import mixed_in


class SyncedTarget:
    """Mixin for `DqnAgent`/`DdqnAgent`: one online pass on s' when the target is synced."""

    def _get_target_updater(self, tau=1.0, period=1):
        # DqnAgent.__init__ passes its target settings here and keeps neither. The updater
        # is TF-Agents' (the same object and counter in checkpoints) with its copy skipped
        # where no update reads the target; decided when the update is traced.
        self._target_synced = float(tau) == 1.0 and int(period) == 1

        def update():
            if self.reads_next_states_once:
                return tf.no_op()
            return common.soft_variables_update(
                self._q_network.variables,
                self._target_q_network.variables,
                tau,
                tau_non_trainable=1.0,
            )

        with tf.name_scope("update_targets"):
            return common.Periodically(update, period, "periodic_update_targets")

    def sync_target(self) -> None:
        """Copies the online weights into the target network: what the skipped copies after
        each update would have left there. Call it before anything reads the target."""
        if self.reads_next_states_once:
            common.soft_variables_update(
                self._q_network.variables, self._target_q_network.variables, tau=1.0
            )

    def _compute_next_q_values(self, next_time_steps, info):
        if not self.reads_next_states_once:
            return super()._compute_next_q_values(next_time_steps, info)
        q_values, _ = self._q_network(
            next_time_steps.observation, step_type=next_time_steps.step_type
        )
        return tf.stop_gradient(tf.reduce_max(q_values, axis=-1))

    @property
    def reads_next_states_once(self) -> bool:
        """Whether updates take the bootstrap values from the online network alone."""
        scalar_action = tf.nest.flatten(self._action_spec)[0].shape.rank == 0
        return (
            self._target_synced
            and scalar_action
            and self._observation_and_action_constraint_splitter is None
        )


def sync_target(agent) -> None:
    """Brings `agent`'s target network up to date where its updates skip the copy."""
    if isinstance(agent, SyncedTarget):
        agent.sync_target()


_TF_AGENTS_NEXT_Q = (
    dqn_agent.DqnAgent._compute_next_q_values,
    dqn_agent.DdqnAgent._compute_next_q_values,
)


@functools.cache
def with_synced_target(agent_class: type) -> type:
    """`agent_class` with `SyncedTarget` mixed in, where its update is TF-Agents' DQN or
    double-DQN update; any other class (C51, Rainbow, on-policy agents) unchanged.

    The subclass keeps the class's name and its gin bindings (gin configures the `__init__`
    it inherits), so config files and checkpoints do not change.
    """
    if not (
        isinstance(agent_class, type)
        and issubclass(agent_class, dqn_agent.DqnAgent)
        and agent_class._loss is dqn_agent.DqnAgent._loss
        and agent_class._compute_next_q_values in _TF_AGENTS_NEXT_Q
    ):
        return agent_class
    return mixed_in(SyncedTarget, agent_class, __name__)
