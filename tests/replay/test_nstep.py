"""n-step windows: both buffers give the windows TF-Agents' n-step target needs.

TF-Agents (`trajectory.to_n_step_transition`, and the same sums in CategoricalDqnAgent) turns a
window t..t+n into reward sum_j gamma^j (prod_{i<j} d_i) r_j and bootstrap discount
gamma^n prod d, on the observation at position n; it does not stop at a truncation. The
buffers cut windows at their first episode end, so the target is the truncated n-step return.
These tests check that against targets computed directly from recorded streams, by hand on a
small episode, across a ring wrap, for both buffers, and through DqnAgent's own loss.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.agents.dqn import dqn_agent
from tf_agents.networks import q_network
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from pipeline.errors import UserError
from pipeline.replay.frame_stack import FrameStackReplay
from pipeline.replay.uniform import UniformReplay
from pipeline.replay.windows import n_step_transition, window_sources, window_sources_tf
from tests.replay_streams import FIRST, LAST, MID, Stream, collect_spec

GAMMA = 0.9


def reference_target(stream: Stream, lane: int, t: int, n: int) -> tuple[float, float, np.ndarray]:
    """(n-step return, bootstrap factor, bootstrap stack) from the recorded time steps.

    Written from the definition, independently of the buffers: sum rewards until n steps or
    the episode's end; bootstrap gamma^k on step t+k unless it terminated (discount 0).
    """
    total, scale = 0.0, 1.0
    for j in range(n):
        step = t + j + 1
        total += scale * float(stream.reward[lane, step])
        scale *= GAMMA * float(stream.discount[lane, step])
        if stream.step_type[lane, step] == LAST:
            return total, scale, stream.stacks[lane, step]
    return total, scale, stream.stacks[lane, t + n]


def transitions(window) -> trajectory.Transition:
    return trajectory.to_n_step_transition(tf.nest.map_structure(tf.constant, window), GAMMA)


def check_targets(transition, stream: Stream, lanes, items, n: int) -> None:
    for i, (lane, t) in enumerate(zip(lanes, items, strict=True)):
        total, scale, stack = reference_target(stream, int(lane), int(t), n)
        nxt = transition.next_time_step
        np.testing.assert_allclose(float(nxt.reward[i]), total, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(GAMMA * float(nxt.discount[i]), scale, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(nxt.observation[i].numpy(), stack)
        np.testing.assert_array_equal(
            transition.time_step.observation[i].numpy(), stream.stacks[lane, t]
        )
        assert int(transition.action_step.action[i]) == stream.actions[lane, t]


def fill_both(
    stream: Stream, lanes: int, capacity: int, n: int, k: int, frame_shape, seed: int = 0,
    classes: tuple[type, type] = (FrameStackReplay, UniformReplay),
):  # fmt: skip
    """A frame-stack and a TF-Agents buffer (`classes`) holding the same stream."""
    spec = collect_spec(frame_shape, k)
    frame_stack_class, uniform_class = classes
    frame_stack = frame_stack_class(spec, lanes, capacity, seed=seed, num_steps=n + 1, gamma=GAMMA)
    uniform = uniform_class(spec, lanes, capacity, seed=seed, num_steps=n + 1, gamma=GAMMA)
    frame_stack.add_numpy(stream.trajectories(0, stream.items))
    add = tf.function(uniform.add_batch, autograph=False)
    for t in range(stream.items):
        add(
            tf.nest.map_structure(
                lambda x, t=t: tf.constant(x[:, t]), stream.trajectories(0, stream.items)
            )
        )
    return frame_stack, uniform


def valid_starts(stream: Stream, written: int, ring: int, k: int, n: int) -> list[tuple[int, int]]:
    """Starts whose window fits in the ring, with the start's stack history, not at LAST."""
    starts = []
    for lane, t in sorted(stream.valid_starts(written, ring, k)):
        if t + n <= written - 1:
            starts.append((lane, t))
    return starts


@pytest.mark.parametrize("n", [1, 3, 10])
def test_windows_give_the_truncated_n_step_target_and_both_buffers_agree(n):
    lanes, k, frame_shape = 2, 4, (3, 2)
    stream = Stream(np.random.default_rng(n), lanes, 400, k, frame_shape)
    capacity = 2 * 150  # the ring wraps: 400 items per lane into 150 slots
    frame_stack, uniform = fill_both(stream, lanes, capacity, n, k, frame_shape)
    starts = valid_starts(stream, stream.items, 150, k, n)
    assert len(starts) > 100
    lanes_, items = (np.array(x) for x in zip(*starts, strict=True))
    fs_window = tf.nest.pack_sequence_as(
        frame_stack.data_spec, frame_stack.window_numpy(lanes_, items)
    )
    check_targets(transitions(fs_window), stream, lanes_, items, n)
    # The same windows from TF-Agents' buffer (its ids count every add, like ours).
    uni_window = uniform.window(tf.constant(lanes_), tf.constant(items))
    for name in trajectory.Trajectory._fields:
        for ours, theirs in zip(
            tf.nest.flatten(getattr(fs_window, name)),
            tf.nest.flatten(getattr(uni_window, name)),
            strict=True,
        ):
            np.testing.assert_array_equal(np.asarray(ours), theirs.numpy(), name)
    # Only the ends: the transition the training update uses is the same.
    ends = frame_stack.window_numpy(lanes_, items, ends_only=True)
    ends = tf.nest.pack_sequence_as(frame_stack.data_spec, ends)
    assert ends.observation.shape[1] == 2
    check_targets(transitions(ends), stream, lanes_, items, n)


def hand_episode() -> Stream:
    """One lane: a truncated episode of 3 steps, a terminated one of 2, then a running one."""
    stream = Stream.__new__(Stream)
    step_type = [FIRST, MID, MID, LAST, FIRST, MID, LAST, FIRST, MID, MID, MID, MID]
    reward = [0, 1, 2, 3, 0, 10, 20, 0, 5, 6, 7, 8]
    discount = [1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1]  # LAST at 3 truncated, at 6 terminated
    n = len(step_type)
    stream.step_type = np.array([step_type], np.int32)
    stream.reward = np.array([reward], np.float32)
    stream.discount = np.array([discount], np.float32)
    stream.frames = (np.arange(1, n + 1, dtype=np.uint8)).reshape(1, n, 1)
    stream.stacks = np.zeros((1, n, 1, 2), np.uint8)
    for t in range(n):  # K = 2: [previous frame or 0 at FIRST, frame]
        previous = 0 if step_type[t] == FIRST else stream.frames[0, t - 1, 0]
        stream.stacks[0, t, 0] = [previous, stream.frames[0, t, 0]]
    stream.actions = np.arange(n, dtype=np.int64)[None] % 3
    stream.items = n - 1
    return stream


def test_hand_computed_targets_across_a_truncation_and_a_terminal():
    stream = hand_episode()
    frame_stack, uniform = fill_both(stream, 1, 20, 3, 2, (1,))
    window = uniform.window(
        tf.constant([0, 0, 0, 0], tf.int64), tf.constant([1, 2, 4, 5], tf.int64)
    )
    got = trajectory.to_n_step_transition(window, GAMMA).next_time_step
    # From t=1: r 2, 3 then the truncation at step 3: bootstrap gamma^2 on s_3.
    # From t=2: r 3, truncation at 3: bootstrap gamma on s_3.
    # From t=4: r 10, 20, terminal at 6: no bootstrap.  From t=5: r 20, terminal.
    np.testing.assert_allclose(
        got.reward.numpy(), [2 + GAMMA * 3, 3, 10 + GAMMA * 20, 20], rtol=1e-6
    )
    np.testing.assert_allclose(GAMMA * got.discount.numpy(), [GAMMA**2, GAMMA, 0, 0], atol=1e-7)
    np.testing.assert_array_equal(got.observation.numpy()[:, 0], [[3, 4], [3, 4], [6, 7], [6, 7]])
    fs = frame_stack.window_numpy(np.zeros(4, np.int64), np.array([1, 2, 4, 5]))
    fs = trajectory.to_n_step_transition(
        tf.nest.map_structure(tf.constant, tf.nest.pack_sequence_as(frame_stack.data_spec, fs)),
        GAMMA,
    ).next_time_step
    np.testing.assert_allclose(fs.reward.numpy(), got.reward.numpy())
    np.testing.assert_array_equal(fs.observation.numpy(), got.observation.numpy())
    # A window that starts right after a FIRST: its stack pads with zero, bootstrap at t+3.
    window = uniform.window(tf.constant([0], tf.int64), tf.constant([7], tf.int64))
    got = trajectory.to_n_step_transition(window, GAMMA)
    np.testing.assert_allclose(got.next_time_step.reward.numpy(), [5 + GAMMA * 6 + GAMMA**2 * 7])
    np.testing.assert_array_equal(got.time_step.observation.numpy()[0, 0], [0, 8])
    np.testing.assert_array_equal(got.next_time_step.observation.numpy()[0, 0], [10, 11])


def test_window_sources_cut_at_the_first_last_only():
    step_type = np.array(
        [[FIRST, MID, LAST, FIRST, LAST], [MID, MID, MID, MID, LAST], [LAST, FIRST, MID, MID, MID]]
    )
    source, ended = window_sources(step_type)
    np.testing.assert_array_equal(source, [[0, 1, 2, 2, 2], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]])
    np.testing.assert_array_equal(
        ended, [[False, False, True, True, False], [False] * 5, [False] * 5]
    )


def test_window_sources_in_tf_ops_equal_the_numpy_rule():
    """The uniform replay cuts windows in the update graph with TF ops (no Python call)."""
    rng = np.random.default_rng(3)
    for width in (3, 4, 5, 11):
        step_type = rng.choice([FIRST, MID, LAST], size=(64, width), p=[0.2, 0.5, 0.3])
        want_source, want_ended = window_sources(step_type)
        source, ended = window_sources_tf(tf.constant(step_type, tf.int32))
        np.testing.assert_array_equal(source.numpy(), want_source)
        np.testing.assert_array_equal(ended.numpy(), want_ended)


def test_unrolled_n_step_transition_is_tf_agents_to_the_bit():
    """The buffers' `n_step_transition` replaces TF-Agents' fold with the same sums, unrolled."""
    rng = np.random.default_rng(4)
    for width in (2, 4, 11):
        shape = (64, width)
        window = trajectory.Trajectory(
            step_type=tf.constant(rng.choice([FIRST, MID, LAST], size=shape), tf.int32),
            observation={"frame": tf.constant(rng.random((*shape, 3)), tf.float32)},
            action=tf.constant(rng.integers(0, 4, size=shape), tf.int64),
            policy_info=(),
            next_step_type=tf.constant(rng.choice([FIRST, MID, LAST], size=shape), tf.int32),
            reward=tf.constant(rng.normal(size=shape), tf.float32),
            discount=tf.constant(rng.choice([0.0, 1.0], size=shape, p=[0.3, 0.7]), tf.float32),
        )
        want = tf.function(trajectory.to_n_step_transition, autograph=False)(window, 0.99)
        got = tf.function(n_step_transition, autograph=False)(window, 0.99)
        tf.nest.assert_same_structure(want, got)
        for w, g in zip(tf.nest.flatten(want), tf.nest.flatten(got), strict=True):
            assert w.dtype == g.dtype and w.shape == g.shape
            np.testing.assert_array_equal(g.numpy(), w.numpy())  # NaN fields compare equal


def test_dqn_agent_loss_is_the_same_from_windows_and_from_sampled_transitions():
    k, frame_shape, n = 4, (8, 8), 3
    spec = collect_spec(frame_shape, k, num_actions=4)
    q_net = q_network.QNetwork(
        spec.observation,
        spec.action,
        preprocessing_layers=tf.keras.layers.Lambda(lambda x: tf.cast(x, tf.float32) / 255.0),
        conv_layer_params=((4, 3, 2),),
        fc_layer_params=(16,),
    )
    agent = dqn_agent.DdqnAgent(
        ts.time_step_spec(spec.observation),
        spec.action,
        q_network=q_net,
        optimizer=tf.keras.optimizers.Adam(1e-3),
        n_step_update=n,
        gamma=GAMMA,
    )
    agent.initialize()
    buffer = FrameStackReplay(agent.collect_data_spec, 2, 200, num_steps=n + 1, gamma=GAMMA)
    stream = Stream(np.random.default_rng(5), 2, 90, k, frame_shape)
    stream.actions %= 4
    buffer.add_numpy(stream.trajectories(0, stream.items))
    state = buffer._rng.bit_generator.state
    window = buffer.sample(16)
    buffer._rng.bit_generator.state = state
    transition = buffer.sample_transition(16)
    assert window.observation.shape[1] == n + 1
    from_window = agent.loss(window).loss.numpy()
    from_transition = agent.loss(transition).loss.numpy()
    assert from_window == pytest.approx(from_transition, rel=1e-6)
    assert np.isfinite(agent.train(transition).loss.numpy())


def test_settings_a_buffer_cannot_serve_are_refused():
    spec = collect_spec((2, 2), 2)
    with pytest.raises(UserError, match="window of 11 steps needs 11"):
        FrameStackReplay(spec, 1, 10, num_steps=11, gamma=0.99)
    with pytest.raises(UserError, match="window of 11 steps needs 11"):
        UniformReplay(spec, 2, 20, num_steps=11, gamma=0.99)
    with pytest.raises(UserError, match="gamma in \\(0, 1\\]"):
        FrameStackReplay(spec, 1, 100, num_steps=4, gamma=0.0)
