"""Window sizes, n-step windows cut at episode ends, and their n-step transitions.

See the package docstring for the rule.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tf_agents.trajectories import policy_step
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory as trajectory_lib
from tf_agents.trajectories.trajectory import Trajectory, Transition

from pipeline.errors import UserError
from pipeline.replay.memory import CAPACITY_SETTING

_FIRST, _LAST = int(ts.StepType.FIRST), int(ts.StepType.LAST)


def check_sizes(batch_size: int, capacity: int, num_steps: int = 2, gamma: float = 1.0) -> int:
    """Returns the per-lane ring length; a window of `num_steps` needs that many per lane."""
    if batch_size <= 0:
        raise UserError(f"replay batch_size (env lanes) must be positive, got {batch_size}")
    if num_steps < 2:
        raise UserError(f"replay windows need at least 2 steps, got {num_steps}")
    if num_steps > 2 and not 0.0 < gamma <= 1.0:
        raise UserError(
            f"n-step returns (n={num_steps - 1}) need a discount gamma in (0, 1], got {gamma}: "
            "fix DqnAgent.gamma or use n_step_update=1"
        )
    per_lane = capacity // batch_size
    if per_lane < num_steps:
        raise UserError(
            f"{CAPACITY_SETTING}={capacity:,} leaves {per_lane} items for each of {batch_size} "
            f"env lanes; a window of {num_steps} steps needs {num_steps}: raise "
            f"{CAPACITY_SETTING} to at least {num_steps * batch_size}"
        )
    return per_lane


def window_sources(step_type: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each position of `[n, W]` windows comes from once cut at the first LAST.

    Returns `(source, ended)`: `source[i, p]` is the position whose step fills position p
    (the first LAST k at 1 <= k < W-1 for every p > k, else p itself), `ended[i, p]` is True
    for positions k <= p < W-1, whose reward becomes 0 and discount 1/gamma.
    """
    step_type = np.asarray(step_type)
    n, width = step_type.shape
    positions = np.broadcast_to(np.arange(width), (n, width))
    last = step_type == _LAST
    last[:, 0] = False  # a window starting at LAST is a boundary the agent masks out
    last[:, width - 1] = False  # the bootstrap step: nothing after it to cut
    ended = np.logical_or.accumulate(last, axis=1)
    ended[:, width - 1] = False  # the bootstrap step's reward and discount are never read
    first_last = np.where(last.any(axis=1), last.argmax(axis=1), width)
    source = np.minimum(positions, first_last[:, None])
    return source.astype(np.int64), ended


def window_sources_tf(step_type: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`window_sources` in TF ops, so the update graph holds no Python call (and XLA takes it)."""
    width = step_type.shape[1]
    inner = tf.constant([False] + [True] * (width - 2) + [False])  # neither 0 nor the bootstrap
    last = tf.logical_and(tf.equal(step_type, _LAST), inner)
    ended = tf.logical_and(tf.cumsum(tf.cast(last, tf.int32), axis=1) > 0, inner)
    first_last = tf.where(
        tf.reduce_any(last, axis=1),
        tf.argmax(tf.cast(last, tf.int32), axis=1, output_type=tf.int64),
        tf.constant(width, tf.int64),
    )
    source = tf.minimum(tf.range(width, dtype=tf.int64)[None, :], first_last[:, None])
    return source, ended


def end_windows_at_episode_ends(window: Trajectory, gamma: float) -> Trajectory:
    """`[n, W, ...]` TF windows cut at their first LAST (see the module docstring)."""
    if tf.compat.dimension_value(window.step_type.shape[1]) == 2:
        return window  # one-step pairs: nothing to cut
    source, ended = window_sources_tf(window.step_type)
    cut = tf.nest.map_structure(lambda x: tf.gather(x, source, axis=1, batch_dims=1), window)
    return cut._replace(
        reward=tf.where(ended, tf.zeros_like(cut.reward), cut.reward),
        discount=tf.where(ended, tf.fill(tf.shape(cut.discount), 1.0 / gamma), cut.discount),
    )


def n_step_transition(window: Trajectory, gamma: float) -> Transition:
    """`trajectory.to_n_step_transition`, its reverse fold unrolled over the static window.

    The same ops in the same order give the same bits (a test holds them equal); TF-Agents'
    `tf.foldr` is a graph while-loop that cost ~30 us of a ~0.85 ms CartPole update.
    """
    steps = tf.compat.dimension_value(window.discount.shape[1])
    if steps is None:
        return trajectory_lib.to_n_step_transition(window, gamma)
    rewards, discounts = window.reward[:, :-1], window.discount[:, :-1]
    scaled = gamma * discounts
    discounted = tf.zeros_like(rewards[:, -1])
    for k in reversed(range(steps - 1)):
        discounted = discounted * scaled[:, k] + rewards[:, k]
    first = tf.nest.map_structure(lambda x: x[:, 0], window)
    last = tf.nest.map_structure(lambda x: x[:, -1], window)
    unknown = np.nan * tf.ones_like(first.discount)  # as TF-Agents: never read by the loss
    return Transition(
        time_step=ts.TimeStep(first.step_type, unknown, unknown, first.observation),
        action_step=policy_step.PolicyStep(first.action, (), first.policy_info),
        next_time_step=ts.TimeStep(
            last.step_type,
            tf.stop_gradient(discounted),
            gamma ** (steps - 2) * tf.math.reduce_prod(discounts, axis=1),
            last.observation,
        ),
    )


def truncation(spec: Trajectory, last_time_step, lanes: int) -> Trajectory:
    """Items that end each lane's episode at `last_time_step` as a time-limit truncation
    (LAST with the discount kept), as a resume in new episodes stores them: the stored step
    before them then bootstraps from the state the env was really in, and nothing pairs it
    with the new episode's FIRST step."""

    def zeros(s):
        return tf.zeros([lanes, *s.shape], s.dtype)

    return Trajectory(
        step_type=tf.fill([lanes], ts.StepType.LAST),
        observation=tf.nest.map_structure(tf.convert_to_tensor, last_time_step.observation),
        action=tf.nest.map_structure(zeros, spec.action),
        policy_info=tf.nest.map_structure(zeros, spec.policy_info),
        next_step_type=tf.fill([lanes], ts.StepType.FIRST),
        reward=tf.zeros([lanes], spec.reward.dtype),
        discount=tf.ones([lanes], spec.discount.dtype),
    )


def check_first_window(initial_collect_steps: int, window_steps: int) -> None:
    """The first update needs a whole window in the replay: refuse what cannot give one."""
    if window_steps > 2 and initial_collect_steps < window_steps:
        raise UserError(
            f"train.initial_collect_steps={initial_collect_steps} is shorter than one "
            f"{window_steps}-step window (n_step_update={window_steps - 1}): raise it to at "
            f"least {window_steps}"
        )
