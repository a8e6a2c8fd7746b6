"""Advantage actor-critic (A2C) as a TF-Agents agent; TF-Agents has none.

Mnih et al. 2016 (synchronous form): each update uses a `[lanes, T + 1]` slice of fresh
experience. The critic's n-step bootstrapped returns R_t = r_t + γ d_t R_{t+1}, with
R_T = V(s_T), give advantages A_t = R_t − V(s_t). The loss is
  −mean(A_t · log π(a_t | s_t))             the policy gradient
  − entropy_coef · mean(H(π(· | s_t)))      an entropy bonus against early collapse
  + value_coef · mean((R_t − V(s_t))²)      the critic's regression
with A_t and R_t held constant (no gradient through the targets).
"""

from __future__ import annotations

import gin
import tensorflow as tf
from tf_agents.agents import data_converter, tf_agent
from tf_agents.policies import actor_policy
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from pipeline.agents.returns import lambda_returns


@gin.configurable
class A2CAgent(tf_agent.TFAgent):
    """A2C over an actor (distribution) network and a value network, one optimizer."""

    def __init__(
        self,
        time_step_spec,
        action_spec,
        actor_network,
        value_network,
        optimizer: tf.keras.optimizers.Optimizer,
        gamma: float = 0.99,
        value_loss_coef: float = 0.5,
        entropy_coef: float = 0.01,
        normalize_advantages: bool = False,
        gradient_clipping: float | None = None,
        train_step_counter: tf.Variable | None = None,
        name: str = "A2CAgent",
    ):
        tf.Module.__init__(self, name=name)
        self._actor_network = actor_network
        self._value_network = value_network
        actor_network.create_variables(time_step_spec.observation)
        value_network.create_variables(time_step_spec.observation)
        self._optimizer = optimizer
        self._gamma = gamma
        self._value_loss_coef = value_loss_coef
        self._entropy_coef = entropy_coef
        self._normalize_advantages = normalize_advantages
        self._gradient_clipping = gradient_clipping
        policy = actor_policy.ActorPolicy(
            time_step_spec, action_spec, actor_network=actor_network, clip=True
        )
        super().__init__(
            time_step_spec,
            action_spec,
            policy=policy,
            collect_policy=policy,
            train_sequence_length=None,
            train_step_counter=train_step_counter,
        )
        self._as_trajectory = data_converter.AsTrajectory(self.data_context)

    def _initialize(self):
        return tf.no_op()

    def returns_and_advantages(self, experience: trajectory.Trajectory):
        """Returns, advantages, the mask of real transitions, and V(s_t), all `[B, T]`."""
        time_steps, policy_steps, next_time_steps = trajectory.to_transition(experience)
        values, _ = self._value_network(
            time_steps.observation, step_type=time_steps.step_type, network_state=(), training=True
        )
        last_next = tf.nest.map_structure(lambda x: x[:, -1], next_time_steps)
        bootstrap, _ = self._value_network(
            last_next.observation, step_type=last_next.step_type, network_state=(), training=True
        )
        boundary = tf.equal(time_steps.step_type, ts.StepType.LAST)
        returns = lambda_returns(  # λ = 1: the n-step returns
            next_time_steps.reward,
            next_time_steps.discount,
            tf.stop_gradient(values),
            tf.stop_gradient(bootstrap),
            boundary,
            self._gamma,
        )
        advantages = returns - tf.stop_gradient(values)
        mask = tf.cast(~boundary, tf.float32)
        return returns, advantages, mask, values, (time_steps, policy_steps)

    def _train(self, experience, weights):
        experience = self._as_trajectory(experience)
        with tf.GradientTape() as tape:
            returns, advantages, mask, values, (time_steps, policy_steps) = (
                self.returns_and_advantages(experience)
            )
            count = tf.maximum(tf.reduce_sum(mask), 1.0)
            if self._normalize_advantages:
                mean = tf.reduce_sum(advantages * mask) / count
                var = tf.reduce_sum(tf.square(advantages - mean) * mask) / count
                advantages = (advantages - mean) / (tf.sqrt(var) + 1e-8)
            distribution, _ = self._actor_network(
                time_steps.observation,
                step_type=time_steps.step_type,
                network_state=(),
                training=True,
            )
            log_prob = distribution.log_prob(policy_steps.action)
            policy_loss = -tf.reduce_sum(tf.stop_gradient(advantages) * log_prob * mask) / count
            entropy = tf.reduce_sum(distribution.entropy() * mask) / count
            value_loss = tf.reduce_sum(tf.square(tf.stop_gradient(returns) - values) * mask)
            value_loss /= count
            loss = policy_loss - self._entropy_coef * entropy + self._value_loss_coef * value_loss
        variables = (
            self._actor_network.trainable_variables + self._value_network.trainable_variables
        )
        grads = tape.gradient(loss, variables)
        if self._gradient_clipping is not None:  # global norm, as in the A2C papers' code
            grads, _ = tf.clip_by_global_norm(grads, self._gradient_clipping)
        self._optimizer.apply_gradients(zip(grads, variables, strict=True))
        self.train_step_counter.assign_add(1)
        return tf_agent.LossInfo(
            loss,
            {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy},
        )
