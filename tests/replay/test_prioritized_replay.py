"""Prioritized replay: the sum tree against brute force, which items are drawable as the rings
fill and wrap, windows drawn by priority from both buffers, the importance weights, the
checkpointed index, and RainbowAgent's loss against TF-Agents' C51."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats
from tf_agents.agents.categorical_dqn import categorical_dqn_agent
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from pipeline.agents.networks import DuelingCategoricalQNetwork
from pipeline.agents.rainbow import RainbowAgent
from pipeline.replay.prioritized import (
    PrioritizedFrameStackReplay,
    PrioritizedUniformReplay,
    PriorityIndex,
)
from pipeline.replay.sum_tree import SumTree
from tests.replay.test_nstep import GAMMA, check_targets, fill_both, transitions
from tests.replay_streams import LAST, Stream, collect_spec

# --- the sum tree -----------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [1, 37, 5_000])  # 5,000: the search jumps 6 levels
def test_find_matches_a_brute_force_cumulative_search(capacity):
    rng = np.random.default_rng(0)
    tree = SumTree(capacity)  # not a power of two: the padding leaves stay empty
    priorities = rng.integers(0, 5, capacity).astype(float)  # integers: every sum is exact
    priorities[-1] = 1.0
    tree.set(np.arange(capacity), priorities)
    targets = rng.uniform(0, priorities.sum(), 10_000)
    expected = np.searchsorted(np.cumsum(priorities), targets, side="right")
    np.testing.assert_array_equal(tree.find(targets), expected)
    assert tree.total == priorities.sum()
    # A target a rounding error past the total lands on the last leaf holding priority.
    assert tree.find([np.nextafter(tree.total, np.inf)])[0] == capacity - 1


def test_draws_are_proportional_to_priority_chi_square():
    rng = np.random.default_rng(1)
    tree = SumTree(50)
    priorities = rng.gamma(0.7, 1.0, 50)
    priorities[rng.choice(50, 8, replace=False)] = 0.0  # these may never be drawn
    tree.set(np.arange(50), priorities)
    draws = np.concatenate([tree.sample_stratified(32, rng) for _ in range(3_000)])
    counts = np.bincount(draws, minlength=50)
    assert counts[priorities == 0].sum() == 0
    live = priorities > 0
    expected = priorities[live] / priorities.sum() * draws.size
    assert stats.chisquare(counts[live], expected).pvalue > 1e-3
    # And a wrong sampler fails the same test: uniform draws over the live leaves.
    uniform = np.bincount(rng.choice(np.flatnonzero(live), draws.size), minlength=50)[live]
    assert stats.chisquare(uniform, expected).pvalue < 1e-6


def test_updates_keep_every_node_the_sum_of_its_children_and_a_rebuild_is_bit_identical():
    rng = np.random.default_rng(2)
    tree = SumTree(100)
    reference = np.zeros(100)
    for _ in range(300):
        keys = rng.integers(0, 100, rng.integers(1, 40))  # repeats: the last write wins
        values = rng.exponential(size=keys.size)
        tree.set(keys, values)
        for key, value in zip(keys, values, strict=True):
            reference[key] = value
        np.testing.assert_array_equal(tree.leaves, reference)
    np.testing.assert_allclose(tree.total, reference.sum(), rtol=1e-12)
    rebuilt = SumTree(100)
    rebuilt.set_leaves(np.array(tree.leaves))
    np.testing.assert_array_equal(rebuilt._nodes, tree._nodes)
    nodes = tree._nodes
    inner = np.arange(1, tree._size)
    np.testing.assert_array_equal(nodes[inner], nodes[2 * inner] + nodes[2 * inner + 1])


def test_bad_priorities_are_refused():
    tree = SumTree(4)
    with pytest.raises(ValueError):
        tree.set([0], [-1.0])
    with pytest.raises(ValueError):
        tree.set([0], [np.nan])
    with pytest.raises(IndexError):
        tree.set([4], [1.0])
    with pytest.raises(ValueError, match="all 0"):
        tree.sample_stratified(2, np.random.default_rng())


# --- which items are drawable ------------------------------------------------------------


def drawable(index: PriorityIndex) -> set[tuple[int, int]]:
    keys = np.flatnonzero(np.asarray(index.tree.leaves) > 0)
    lanes, items = index._locate(keys)
    return set(zip(lanes.tolist(), items.tolist(), strict=True))


@pytest.mark.parametrize("chunk", [1, 5, 30])  # one step per add, chunks, more than a ring
def test_an_item_is_drawable_once_its_window_is_written_until_the_ring_overwrites_it(chunk):
    lanes, ring, num_steps = 2, 8, 3
    stream = Stream(np.random.default_rng(3), lanes, 60, 4, (2, 2))
    index = PriorityIndex(lanes, ring, num_steps, 0, 0.5, 1e-6)
    for start in range(0, stream.items, chunk):
        stop = min(start + chunk, stream.items)
        index.written(start, stream.step_type[:, start:stop])
        oldest = max(0, stop - ring)
        expected = {
            (b, t)
            for b in range(lanes)
            for t in range(oldest, stop - (num_steps - 1))
            if stream.step_type[b, t] != LAST
        }
        assert drawable(index) == expected, (start, stop)


def test_errors_become_priorities_and_new_items_come_in_at_the_largest():
    stream = Stream(np.random.default_rng(4), 1, 40, 4, (2, 2))
    index = PriorityIndex(1, 64, 2, 0, 0.5, 1e-6)
    index.written(0, stream.step_type[:, :20])
    lanes, items, keys, _ = index.draw(8, 0.4)
    errors = np.linspace(0.5, 9.0, 8)
    index.update(keys, errors)
    # A repeated key keeps the last error written for it, as the tree's set does.
    last = {int(k): e for k, e in zip(keys, errors, strict=True)}
    for key, error in last.items():
        assert index.tree.get([key])[0] == pytest.approx((error + 1e-6) ** 0.5)
    assert index.max_priority == pytest.approx((max(last.values()) + 1e-6) ** 0.5)
    index.written(20, stream.step_type[:, 20:22])
    new = [t for t in (19, 20) if stream.step_type[0, t] != LAST]  # windows 19-20, 20-21
    assert all(index.tree.get([t])[0] == index.max_priority for t in new)


def test_importance_weights_are_normalised_and_beta_anneals_to_one():
    index = PriorityIndex(1, 16, 2, 0, 1.0, 1e-6)
    index.written(0, np.ones((1, 16), np.int8))
    index.update(np.arange(15), np.arange(1, 16, dtype=float))
    _, _, keys, weights = index.draw(64, 0.6)
    probabilities = index.tree.get(keys) / index.tree.total
    expected = probabilities**-0.6 / (probabilities**-0.6).max()
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    assert weights.max() == 1.0
    spec = collect_spec((2, 2), 4)
    replay = PrioritizedUniformReplay(spec, 1, 16, importance_exponent=0.4)
    betas = [float(replay.annealed_exponent(p)) for p in (0.0, 0.5, 1.0, 3.0)]
    assert betas == pytest.approx([0.4, 0.7, 1.0, 1.0])


# --- windows drawn by priority -------------------------------------------------------------


def filled(stream: Stream, lanes: int, capacity: int, n: int, seed: int = 0):
    return fill_both(
        stream, lanes, capacity, n, 4, (3, 2), seed=seed,
        classes=(PrioritizedFrameStackReplay, PrioritizedUniformReplay),
    )  # fmt: skip


def test_frame_stack_windows_drawn_by_priority_are_the_recorded_ones_at_their_frequencies():
    lanes, n, ring = 2, 3, 120
    stream = Stream(np.random.default_rng(5), lanes, 300, 4, (3, 2))  # the ring wraps
    replay, _ = filled(stream, lanes, lanes * ring, n)
    index = replay._priorities
    keys = np.flatnonzero(np.asarray(index.tree.leaves) > 0)
    index.update(keys, np.random.default_rng(6).exponential(2.0, keys.size))
    counts = np.zeros(index.tree.capacity)
    for _ in range(150):
        *leaves, drawn, weights = replay._sample_flat_prioritized(64, True, 0.5)
        counts += np.bincount(drawn, minlength=counts.size)
        lanes_, items = index._locate(drawn)
        window = tf.nest.pack_sequence_as(replay.data_spec, leaves)
        check_targets(transitions(window), stream, lanes_, items, n)  # stacks, n-step targets
    # Draws whose stack history the ring overwrote were vetoed (priority 0) and drawn again:
    # every window above was rebuildable, and no item that is not live was returned.
    live = np.asarray(index.tree.leaves) > 0
    assert counts[~live].sum() == 0
    expected = np.asarray(index.tree.leaves)[live]
    expected = expected / expected.sum() * counts.sum()
    assert stats.chisquare(counts[live], expected).pvalue > 1e-3


def assert_same_draws(ours, theirs) -> None:
    """Two `sample_prioritized` results: the same keys, weights and batches, bit for bit."""
    for a, b in zip(tf.nest.flatten(ours), tf.nest.flatten(theirs), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_both_buffers_draw_the_same_windows_with_the_same_weights():
    lanes, n = 2, 3
    stream = Stream(np.random.default_rng(7), lanes, 150, 4, (3, 2))
    frame_stack, uniform = filled(stream, lanes, lanes * 200, n)  # no wrap: nothing vetoed
    np.testing.assert_array_equal(
        frame_stack._priorities.tree.leaves, uniform._priorities.tree.leaves
    )
    for _ in range(3):
        drawn = frame_stack.sample_prioritized(32, 0.25, transitions=True)
        assert_same_draws(drawn, uniform.sample_prioritized(32, 0.25, transitions=True))
        errors = tf.random.stateless_uniform([32], [1, 2])
        frame_stack.update_priorities(drawn[1], errors)
        uniform.update_priorities(drawn[1], errors)


@pytest.mark.parametrize("buffer", ["frame_stack", "uniform"])
def test_a_restored_index_draws_what_the_saved_one_would(tmp_path: Path, buffer: str):
    lanes, n = 2, 3
    stream = Stream(np.random.default_rng(8), lanes, 200, 4, (3, 2))
    frame_stack, uniform = filled(stream, lanes, lanes * 90, n, seed=3)
    replay = frame_stack if buffer == "frame_stack" else uniform
    batch, keys, _ = replay.sample_prioritized(16, 0.1, transitions=True)
    replay.update_priorities(keys, tf.range(16, dtype=tf.float32))
    replay.save(tmp_path, contents=True)
    fresh_fs, fresh_un = filled(
        Stream(np.random.default_rng(99), lanes, 5, 4, (3, 2)), lanes, lanes * 90, n
    )
    fresh = fresh_fs if buffer == "frame_stack" else fresh_un
    assert fresh.restore(tmp_path)
    np.testing.assert_array_equal(fresh._priorities.tree._nodes, replay._priorities.tree._nodes)
    for _ in range(3):
        assert_same_draws(
            fresh.sample_prioritized(16, 0.3, transitions=True),
            replay.sample_prioritized(16, 0.3, transitions=True),
        )


# --- RainbowAgent ------------------------------------------------------------------------


def categorical_agents(n: int, double_q: bool):
    observation = tensor_spec.TensorSpec((4,), tf.float32)
    action = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 2)
    step_spec = ts.time_step_spec(observation)
    net = DuelingCategoricalQNetwork(observation, action, num_atoms=11, fc_layer_params=(16,))
    net.create_variables()
    common = dict(min_q_value=-5.0, max_q_value=5.0, n_step_update=n, gamma=GAMMA)
    ours = RainbowAgent(
        step_spec, action, net, tf.keras.optimizers.Adam(), double_q=double_q, **common
    )
    theirs = categorical_dqn_agent.CategoricalDqnAgent(
        step_spec, action, categorical_q_network=net, optimizer=tf.keras.optimizers.Adam(),
        **common,
    )  # fmt: skip
    ours.initialize()
    theirs.initialize()
    return ours, theirs


def random_windows(n: int, batch: int = 8) -> trajectory.Trajectory:
    rng = np.random.default_rng(n)
    width = n + 1
    step_type = np.ones((batch, width), np.int32)
    step_type[0, 0] = int(ts.StepType.LAST)  # a boundary sample: zero loss
    return trajectory.Trajectory(
        step_type=tf.constant(step_type),
        observation=tf.constant(rng.normal(size=(batch, width, 4)), tf.float32),
        action=tf.constant(rng.integers(0, 3, (batch, width))),
        policy_info=(),
        next_step_type=tf.constant(step_type),
        reward=tf.constant(rng.normal(size=(batch, width)), tf.float32),
        discount=tf.constant(rng.choice([0.0, 1.0], (batch, width), p=[0.2, 0.8]), tf.float32),
    )


@pytest.mark.parametrize("n", [1, 3])
def test_rainbow_loss_is_c51_loss_without_double_q_and_weights_scale_each_sample(n):
    ours, theirs = categorical_agents(n, double_q=False)
    windows = random_windows(n)
    mine = ours._loss(windows, gamma=GAMMA)
    reference = theirs._loss(windows, gamma=GAMMA)
    per_sample = mine.extra.td_error.numpy()
    assert per_sample[0] == 0.0  # the boundary sample
    # TF-Agents masks nothing at a boundary; compare on the real transitions.
    keep = np.arange(1, 8)
    kept = tf.nest.map_structure(lambda x: tf.gather(x, keep), windows)
    np.testing.assert_allclose(
        ours._loss(kept, gamma=GAMMA).loss.numpy(), theirs._loss(kept, gamma=GAMMA).loss.numpy(),
        rtol=1e-5,
    )  # fmt: skip
    assert np.isfinite(reference.loss.numpy())
    weights = tf.constant(np.linspace(0.1, 1.0, 8), tf.float32)
    weighted = ours._loss(windows, gamma=GAMMA, weights=weights).loss.numpy()
    np.testing.assert_allclose(weighted, np.mean(per_sample * weights.numpy()), rtol=1e-5)


def test_double_q_bootstraps_from_the_online_argmax_on_the_target_distribution():
    ours, _ = categorical_agents(3, double_q=True)
    for variable in ours._target_q_network.variables:  # make the two networks disagree
        variable.assign(variable + tf.random.stateless_normal(variable.shape, [3, 4]))
    windows = random_windows(3)
    _, _, next_steps = ours._as_transition(windows)
    online, _ = ours._q_network(next_steps.observation)
    target, _ = ours._target_q_network(next_steps.observation)
    support = ours._support.numpy()
    best = np.argmax((tf.nn.softmax(online).numpy() * support).sum(-1), axis=1)
    expected = tf.nn.softmax(target).numpy()[np.arange(8), best]
    np.testing.assert_allclose(ours._next_distribution(next_steps).numpy(), expected, rtol=1e-6)
