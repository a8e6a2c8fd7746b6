"""PPO whose returns and advantages bootstrap time-limit truncations and batch ends.

TF-Agents' `PPOAgent.compute_return_and_advantage` zeroes the discount before every LAST
step, whatever ended the episode, and its GAE takes V(s_{T-1}) where a batch that ends
mid-episode needs V(s_T). Our gymnasium bridge keeps the discount at a time-limit
truncation (CartPole-v1 cuts at 500 steps, exactly where a solved policy lives), and the
on-policy loop carries each batch's last step into the next one, so every batch ends with
an item whose observation is s_T. This mixin recomputes both with the recursion A2C uses
(`pipeline.agents.returns.lambda_returns`):

- GAE stops at episode boundaries: a LAST -> FIRST item is no transition (return V(s),
  advantage 0, and masked out of the losses by TF-Agents as before);
- a termination (discount 0) bootstraps nothing;
- a truncation (discount kept) bootstraps from V of the episode's final observation;
- a batch's last transition bootstraps from V(s_T).

Everything else is TF-Agents': value predictions (with its observation normalizer), reward
normalization, the value-loss targets (the λ = 1 returns, or the λ-returns with
`use_td_lambda_return`), advantage normalization and the clipped losses.
"""

from __future__ import annotations

import functools

import tensorflow as tf
from tf_agents.agents.ppo import ppo_agent
from tf_agents.trajectories import time_step as ts

from pipeline.agents.mixins import mixed_in
from pipeline.agents.returns import lambda_returns


class BootstrappedReturns:
    """Mixin for TF-Agents' `PPOAgent` family: returns and advantages that bootstrap."""

    def compute_return_and_advantage(
        self, next_time_steps: ts.TimeStep, value_preds: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """`[B, T]` returns and advantages of the transitions of a `[B, T + 1]` slice.

        `next_time_steps` are the slice's items 1..T as transitions' next steps;
        `value_preds` is `[B, T + 1]`: V of every item's observation, the last one V(s_T).
        An item whose next step is FIRST is an episode's LAST step (the env resets after
        it), so the pair is no transition.
        """
        rewards = next_time_steps.reward
        if self._reward_normalizer:  # as TF-Agents: scaled, not centred
            rewards = self._reward_normalizer.normalize(
                rewards, center_mean=False, clip_value=self._reward_norm_clipping
            )
        values = value_preds[:, :-1]
        bootstrap = value_preds[:, -1]
        boundary = tf.equal(next_time_steps.step_type, ts.StepType.FIRST)

        def returns_for(lambda_: float) -> tf.Tensor:
            return lambda_returns(
                rewards,
                next_time_steps.discount,
                values,
                bootstrap,
                boundary,
                self._discount_factor,
                lambda_,
            )

        returns = returns_for(1.0)
        if self._use_gae:
            lambda_return = returns_for(self._lambda)
            advantages = lambda_return - values
            if self._use_td_lambda_return:
                returns = lambda_return
        else:
            advantages = returns - values
        if self._debug_summaries:
            tf.compat.v2.summary.histogram("returns", returns, step=self.train_step_counter)
            tf.compat.v2.summary.histogram("advantages", advantages, step=self.train_step_counter)
        return returns, advantages


_TF_AGENTS_RETURNS = ppo_agent.PPOAgent.compute_return_and_advantage


@functools.cache
def with_bootstrapped_returns(agent_class: type) -> type:
    """`agent_class` with `BootstrappedReturns` mixed in, where it is a TF-Agents PPO agent
    (`PPOClipAgent`, `PPOKLPenaltyAgent`, `PPOAgent`) with TF-Agents' return computation;
    any other class unchanged.

    The subclass keeps the class's name and its gin bindings (gin configures the `__init__`
    it inherits), so `train_on_policy.agent = @PPOClipAgent` and `PPOClipAgent.*` bindings
    select it unchanged, and checkpoints keep their layout.
    """
    if not (
        isinstance(agent_class, type)
        and issubclass(agent_class, ppo_agent.PPOAgent)
        and agent_class.compute_return_and_advantage is _TF_AGENTS_RETURNS
    ):
        return agent_class
    return mixed_in(BootstrappedReturns, agent_class, __name__)
