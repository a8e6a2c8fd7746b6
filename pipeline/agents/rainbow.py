"""`RainbowAgent`: TF-Agents' C51 with double Q and what prioritized replay needs.

Rainbow (Hessel et al. 2018) is C51 + n-step returns + prioritized replay + dueling + double
Q (+ noisy nets, not here). TF-Agents' `CategoricalDqnAgent` has the distributional loss and
n-step returns, but its loss ignores the importance weights it is given and reports no
per-sample error to reprioritize with, and its bootstrap action comes from the target
network. This agent keeps C51's support, projection (`project_distribution`) and policies,
and computes its own loss:

- on n-step transitions (`AsNStepTransition`, as DqnAgent): the target atoms are
  r_n + gamma^n (prod d) z_j, projected onto the support;
- with double Q (van Hasselt et al. 2016): the next action is the online network's greedy
  one, its distribution the target network's;
- per-sample cross-entropy, weighted by the importance weights, and returned as the
  per-sample error (`extra.td_error`), which prioritized replay turns into priorities, as
  Dopamine's Rainbow does with its loss.

Boundary samples (a window starting at LAST) get zero loss, as in DqnAgent.
"""

from __future__ import annotations

import gin
import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.agents.categorical_dqn import categorical_dqn_agent
from tf_agents.agents.dqn import dqn_agent
from tf_agents.utils import common


@gin.configurable
class RainbowAgent(categorical_dqn_agent.CategoricalDqnAgent):
    """C51 (`CategoricalDqnAgent`'s arguments) with `double_q` and a per-sample loss."""

    # The loop hands it n-step transitions built by the replay (see Experiment).
    trains_on_transitions = True

    def __init__(
        self,
        time_step_spec,
        action_spec,
        categorical_q_network,
        optimizer,
        *,
        double_q: bool = True,
        **kwargs,
    ):
        """`kwargs`: CategoricalDqnAgent's (`min_q_value`, `n_step_update`, `gamma`, ...)."""
        super().__init__(time_step_spec, action_spec, categorical_q_network, optimizer, **kwargs)
        self._double_q = double_q

    def _network_input(self, time_steps):
        observation = time_steps.observation
        if self._observation_and_action_constraint_splitter is not None:
            observation, _ = self._observation_and_action_constraint_splitter(observation)
        return observation

    def _next_distribution(self, next_time_steps) -> tf.Tensor:
        """`[batch, atoms]` target-network probabilities of the bootstrap action."""
        logits, _ = self._target_q_network(
            self._network_input(next_time_steps),
            step_type=next_time_steps.step_type,
            training=False,
        )
        chooser = self.policy if self._double_q else self._target_greedy_policy
        actions = chooser.action(next_time_steps).action  # greedy, action masks respected
        return tf.gather(tf.nn.softmax(logits), tf.cast(actions, tf.int32), batch_dims=1)

    def _loss(
        self,
        experience,
        td_errors_loss_fn=None,
        gamma=1.0,
        reward_scale_factor=1.0,
        weights=None,
        training=False,
    ):
        time_steps, policy_steps, next_time_steps = self._as_transition(experience)
        logits, _ = self._q_network(
            self._network_input(time_steps), step_type=time_steps.step_type, training=training
        )
        actions = tf.cast(tf.reshape(policy_steps.action, [-1]), tf.int32)
        chosen_logits = tf.gather(logits, actions, batch_dims=1)  # [batch, atoms]

        reward = reward_scale_factor * next_time_steps.reward
        discount = gamma * next_time_steps.discount
        target_atoms = reward[:, None] + discount[:, None] * self._support[None, :]
        target = tf.stop_gradient(
            categorical_dqn_agent.project_distribution(
                target_atoms, self._next_distribution(next_time_steps), self._support
            )
        )
        per_sample = tf.nn.softmax_cross_entropy_with_logits(labels=target, logits=chosen_logits)
        per_sample *= tf.cast(~time_steps.is_last(), per_sample.dtype)
        aggregated = common.aggregate_losses(
            per_example_loss=per_sample,
            sample_weight=weights,
            regularization_loss=self._q_network.losses,
        )
        return tf_agent.LossInfo(
            aggregated.total_loss,
            dqn_agent.DqnLossInfo(td_loss=per_sample, td_error=per_sample),
        )
