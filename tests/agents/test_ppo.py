"""PPO's returns and advantages against hand-computed GAE: termination, truncation, batch end.

The agent is built the way a run builds it: `PPOClipAgent` bound in gin, made by
`build.build_on_policy`. Every expected number is derived by hand in the comments (γ = 0.9);
nothing here calls our return code to compute an expectation. Recursions, per lane:
  return      R_t = r_t + γ d_t R_{t+1}                       (value-loss target)
  GAE         A_t = δ_t + γ λ d_t A_{t+1},  δ_t = r_t + γ d_t V(s_{t+1}) − V(s_t)
with R = V(s_t), A = 0 at an item that is an episode's LAST step (no transition follows it),
and R_T = V(s_T), A_T = 0 past the batch's last item. `d_t` is 0 at a termination and 1 at a
time-limit truncation (the bridge's convention).
"""

from __future__ import annotations

from typing import NamedTuple

import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.agents.ppo import ppo_clip_agent
from tf_agents.networks import actor_distribution_network, value_network
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from pipeline.agents import build

F, M, L = ts.StepType.FIRST, ts.StepType.MID, ts.StepType.LAST
GAMMA = 0.9
OBSERVATION = tensor_spec.TensorSpec((2,), tf.float32)  # [V(s), 0] under the stub critic
ACTION = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 1)


class Case(NamedTuple):
    """One lane of T + 1 items; `reward`, `discount` of item t belong to t -> t+1."""

    step_type: list[int]
    reward: list[float]
    discount: list[float]
    value: list[float]  # V(s_t) of every item, V(s_T) last
    lambda_: float
    returns: list[float]  # by hand, T entries
    advantages: list[float]  # by hand, T entries


CASES = {
    # Items F s0, M s1, L s2 (terminated), F s3, M s4, L s5 (terminated, the batch's last).
    # The final observations' values (50, 100) must never be bootstrapped from. λ = 0.5.
    #   R4 = 4 + 0.9*0*100 = 4         R3 = 3 + 0.9*4 = 6.6     R2 = V(s2) = 50 (boundary)
    #   R1 = 2 + 0.9*0*50 = 2          R0 = 1 + 0.9*2 = 2.8
    #   A4 = 4 − 8 = −4                A3 = (3 + 0.9*8 − 7) + 0.45*(−4) = 3.2 − 1.8 = 1.4
    #   A2 = 0                         A1 = 2 − 6 = −4
    #   A0 = (1 + 0.9*6 − 5) + 0.45*(−4) = 1.4 − 1.8 = −0.4
    # TF-Agents gives the boundary item R2 = 0.9*6.6 = 5.94 and A2 = 0.9*7 − 50 + 0.45*1.4 =
    # −43.07 (the next episode leaking in), which enters the advantage normalization.
    "termination": Case(
        step_type=[F, M, L, F, M, L],
        reward=[1, 2, 0, 3, 4, 0],
        discount=[1, 0, 1, 1, 0, 1],
        value=[5, 6, 50, 7, 8, 100],
        lambda_=0.5,
        returns=[2.8, 2, 50, 6.6, 4],
        advantages=[-0.4, -4, 0, 1.4, -4],
    ),
    # Items F s0, M s1, L s2 (truncated: discount kept), F s3. λ = 0.5.
    #   R2 = V(s2) = 20 (boundary)     R1 = 1 + 0.9*1*20 = 19   R0 = 1 + 0.9*19 = 18.1
    #   A2 = 0                         A1 = 1 + 0.9*20 − 5 = 14
    #   A0 = (1 + 0.9*5 − 4) + 0.45*14 = 1.5 + 6.3 = 7.8
    # TF-Agents zeroes the discount before s2: R = [1.9, 1, 27], A = [−0.3, −4, −2].
    "truncation": Case(
        step_type=[F, M, L, F],
        reward=[1, 1, 0, 0],
        discount=[1, 1, 1, 1],
        value=[4, 5, 20, 30],
        lambda_=0.5,
        returns=[18.1, 19, 20],
        advantages=[7.8, 14, 0],
    ),
    # The truncation: rewards 1, every value 10, truncated after two steps, which
    # is also the batch's end. R1 = 1 + 0.9*10 = 10, R0 = 1 + 0.9*10 = 10; A = 0 for any λ.
    # TF-Agents: R = [1.9, 1.0].
    "truncation_issue": Case(
        step_type=[F, M, L],
        reward=[1, 1, 0],
        discount=[1, 1, 1],
        value=[10, 10, 10],
        lambda_=0.8,
        returns=[10, 10],
        advantages=[0, 0],
    ),
    # The batch end: mid-episode throughout, rewards 1, V = 11, 12, 13 (s_T = s2);
    # the numbers hold for λ = 1 only (γλ · 0.9 = 0.81 is their difference at t=0).
    #   R1 = 1 + 0.9*13 = 12.7         R0 = 1 + 0.9*12.7 = 12.43
    #   A1 = 1 + 0.9*13 − 12 = 0.7     A0 = (1 + 0.9*12 − 11) + 0.9*0.7 = 0.8 + 0.63 = 1.43
    # TF-Agents' GAE takes V(s1) = 12 for V(s_T): A = [0.62, −0.2] (its R are right).
    "batch_end_issue": Case(
        step_type=[M, M, M],
        reward=[1, 1, 0],
        discount=[1, 1, 1],
        value=[11, 12, 13],
        lambda_=1.0,
        returns=[12.43, 12.7],
        advantages=[1.43, 0.7],
    ),
    # The same batch with λ = 0.5: A1 = 0.7, A0 = 0.8 + 0.45*0.7 = 1.115; R unchanged.
    # TF-Agents: A = [0.8 + 0.45*(−0.2), −0.2] = [0.71, −0.2].
    "batch_end": Case(
        step_type=[M, M, M],
        reward=[1, 1, 0],
        discount=[1, 1, 1],
        value=[11, 12, 13],
        lambda_=0.5,
        returns=[12.43, 12.7],
        advantages=[1.115, 0.7],
    ),
}


def make_agent(lambda_: float, *extra_bindings: str):
    """A PPOClipAgent built as a run builds it, whose critic reads V(s) off s[0]."""
    gin.parse_config(
        [
            f"PPOClipAgent.lambda_value = {lambda_}",
            f"PPOClipAgent.discount_factor = {GAMMA}",
            "PPOClipAgent.use_gae = True",
            "PPOClipAgent.num_epochs = 1",
            "PPOClipAgent.importance_ratio_clipping = 0.2",
            "PPOClipAgent.normalize_rewards = False",
            "PPOClipAgent.normalize_observations = False",
            *extra_bindings,
        ]
    )
    agent = build.build_on_policy(
        ppo_clip_agent.PPOClipAgent,
        lambda observation, action: actor_distribution_network.ActorDistributionNetwork(
            observation, action, fc_layer_params=(4,)
        ),
        lambda observation: value_network.ValueNetwork(observation, fc_layer_params=None),
        lambda: tf.keras.optimizers.Adam(1e-3),
        ts.time_step_spec(OBSERVATION),
        ACTION,
        train_step_counter=tf.Variable(0, dtype=tf.int64),
    )
    kernel, bias = agent._value_net.trainable_variables  # one Dense(1) on [V(s), 0]
    kernel.assign([[1.0], [0.0]])
    bias.assign([0.0])
    return agent


def experience_of(case: Case, agent) -> trajectory.Trajectory:
    """The lane as the on-policy loop hands it to `agent.train`: `[1, T + 1]`."""
    step_type = np.asarray(case.step_type, np.int32)
    next_step_type = np.where(step_type == L, F, np.where(np.roll(step_type, -1) == L, L, M))
    next_step_type = np.asarray(next_step_type, np.int32)
    observation = np.stack([case.value, np.zeros(len(case.value))], axis=-1)
    policy_info = tf.nest.map_structure(
        lambda spec: tf.zeros([1, len(step_type), *spec.shape], spec.dtype),
        agent.collect_data_spec.policy_info,
    )
    return trajectory.Trajectory(
        step_type=tf.constant([step_type]),
        observation=tf.constant([observation], tf.float32),
        action=tf.constant([[i % 2 for i in range(len(step_type))]], tf.int64),
        policy_info=policy_info,
        next_step_type=tf.constant([next_step_type]),
        reward=tf.constant([case.reward], tf.float32),
        discount=tf.constant([case.discount], tf.float32),
    )


def test_experience_helper_pairs_last_steps_with_first():
    # A guard on the test's own plumbing: the next step of a LAST item is FIRST, the next
    # step of the item before a LAST is LAST, any other is MID.
    case = CASES["termination"]
    experience = experience_of(case, make_agent(case.lambda_))
    assert experience.next_step_type.numpy().tolist() == [[M, L, F, M, L, F]]
    assert experience.is_boundary().numpy().tolist() == [[False, False, True] * 2]


@pytest.mark.parametrize("name", sorted(CASES))
def test_returns_and_advantages_match_hand_computed_gae(name: str):
    case = CASES[name]
    agent = make_agent(case.lambda_)
    _, _, next_time_steps = trajectory.to_transition(experience_of(case, agent))
    values = tf.constant([case.value], tf.float32)
    returns, advantages = agent.compute_return_and_advantage(next_time_steps, values)
    np.testing.assert_allclose(returns.numpy()[0], case.returns, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(advantages.numpy()[0], case.advantages, rtol=1e-6, atol=1e-5)


def test_td_lambda_returns_are_advantages_plus_values():
    # use_td_lambda_return: the value targets are the λ-returns A + V. "batch_end" by hand:
    # [1.115 + 11, 0.7 + 12] = [12.115, 12.7]. TF-Agents: [0.71 + 11, −0.2 + 12].
    case = CASES["batch_end"]
    agent = make_agent(case.lambda_, "PPOClipAgent.use_td_lambda_return = True")
    _, _, next_time_steps = trajectory.to_transition(experience_of(case, agent))
    returns, _ = agent.compute_return_and_advantage(
        next_time_steps, tf.constant([case.value], tf.float32)
    )
    np.testing.assert_allclose(returns.numpy()[0], [12.115, 12.7], rtol=1e-6)


def test_normalized_rewards_bootstrap_unscaled_values():
    # normalize_rewards scales rewards by 1/sqrt(var + 1e-3) (TF-Agents' normalizer, not
    # centred) before the recursion; the critic already predicts in those units, so the
    # bootstrap values are used as they are. Normalizer set to var 4: r' = 1/sqrt(4.001).
    # "truncation": R1 = r' + 0.9*20 = 18 + r', R0 = r' + 0.9*(18 + r') = 16.2 + 1.9 r'.
    case = CASES["truncation"]
    agent = make_agent(case.lambda_, "PPOClipAgent.normalize_rewards = True")
    normalizer = agent._reward_normalizer
    normalizer._count[0].assign(1.0)
    normalizer._m2[0].assign(4.0)
    scaled = 1 / np.sqrt(4.001)
    _, _, next_time_steps = trajectory.to_transition(experience_of(case, agent))
    returns, _ = agent.compute_return_and_advantage(
        next_time_steps, tf.constant([case.value], tf.float32)
    )
    np.testing.assert_allclose(
        returns.numpy()[0], [16.2 + 1.9 * scaled, 18 + scaled, 20], rtol=1e-6
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_train_feeds_the_losses_hand_computed_returns_and_advantages(name: str):
    """End to end: `agent.train` (values from the critic network, TF-Agents' padding, mask
    and advantage normalization) hands the losses these returns and advantages."""
    case = CASES[name]
    agent = make_agent(case.lambda_)
    seen = {}
    get_loss = agent.get_loss

    def spy(time_steps, actions, act_log_probs, returns, normalized_advantages, *args, **kw):
        seen.setdefault("returns", returns.numpy()[0])
        seen.setdefault("advantages", normalized_advantages.numpy()[0])
        seen.setdefault("weights", args[1].numpy()[0])  # after old_action_distribution_params
        return get_loss(time_steps, actions, act_log_probs, returns, normalized_advantages,
                        *args, **kw)  # fmt: skip

    agent.get_loss = spy
    agent.train(experience_of(case, agent))
    # TF-Agents pads the batch's last item with return 0, advantage 0 and masks it and
    # every LAST item; then it normalizes advantages over all T + 1 entries.
    padded_advantages = np.asarray([*case.advantages, 0.0])
    normalized = (padded_advantages - padded_advantages.mean()) / np.sqrt(
        padded_advantages.var() + 1e-8
    )
    mask = [float(s != L) for s in case.step_type[:-1]] + [0.0]
    np.testing.assert_allclose(seen["returns"], [*case.returns, 0.0], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(seen["advantages"], normalized, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(seen["weights"], mask)
