"""Bootstrapped λ-returns over a `[B, T + 1]` slice of experience, shared by A2C and PPO.

One recursion serves both agents, so episode boundaries, terminations, time-limit
truncations and batch ends are handled the same way: A2C takes λ = 1 (n-step returns),
PPO takes its GAE λ (advantages A_t = G^λ_t − V(s_t), which is GAE's
A_t = δ_t + γ λ d_t A_{t+1} with δ_t = r_t + γ d_t V(s_{t+1}) − V(s_t)).
"""

from __future__ import annotations

import tensorflow as tf


def lambda_returns(
    rewards: tf.Tensor,
    discounts: tf.Tensor,
    values: tf.Tensor,
    bootstrap_value: tf.Tensor,
    boundary: tf.Tensor,
    gamma: float | tf.Tensor,
    lambda_: float | tf.Tensor = 1.0,
) -> tf.Tensor:
    """`[B, T]` λ-returns G_t = r_t + γ d_t ((1 − λ) V(s_{t+1}) + λ G_{t+1}), batch-major.

    `rewards[t]`, `discounts[t]` belong to the transition s_t -> s_{t+1}: a discount of 0
    (a termination) bootstraps nothing, a kept discount (a time-limit truncation, a step
    mid-episode) bootstraps from V(s_{t+1}). `values[t]` = V(s_t); `bootstrap_value` =
    V(s_T), the value of the slice's last observation, so the last transition of a batch
    that ends mid-episode bootstraps like any other. Where `boundary[t]` (s_t is an
    episode's LAST step, so t -> t+1 is not a transition), G_t = V(s_t) (advantage 0): the
    recursion stops there, and the step before bootstraps from V(s_t), the value of the
    episode's final observation, as its discount says. With λ = 1 these are the n-step
    returns r_t + γ d_t G_{t+1} (bit for bit: the V(s_{t+1}) term is multiplied by 0).
    """

    def step(following, inputs):
        next_return, next_value = following
        reward, discount, value, cut = inputs
        target = (1.0 - lambda_) * next_value + lambda_ * next_return
        return tf.where(cut, value, reward + gamma * discount * target), value

    time_major = [tf.transpose(x) for x in (rewards, discounts, values, boundary)]
    returns, _ = tf.scan(
        step, time_major, initializer=(bootstrap_value, bootstrap_value), reverse=True
    )
    return tf.transpose(returns)
