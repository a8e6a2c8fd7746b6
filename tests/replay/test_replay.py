"""Replay buffers: exact frame-stack reconstruction, valid and uniform sampling, graph paths.

The property tests synthesise the time steps a batched env with auto-reset emits (random
episode lengths, termination and truncation), stack frames with an independent deque-based
reference, form the trajectories a TF-Agents driver would (`trajectory.from_transition`), and
check every sampled pair against the recorded stacks and fields of (t, t+1).
"""

from __future__ import annotations

import collections
import math
import re

import gin
import numpy as np
import psutil
import pytest
import tensorflow as tf
from tf_agents.agents.dqn import dqn_agent
from tf_agents.drivers import dynamic_step_driver
from tf_agents.environments import batched_py_environment, py_environment, tf_py_environment
from tf_agents.networks import q_network
from tf_agents.policies import random_tf_policy
from tf_agents.specs import array_spec, tensor_spec
from tf_agents.trajectories import policy_step, trajectory
from tf_agents.trajectories import time_step as ts

from pipeline import replay
from pipeline.errors import UserError
from pipeline.replay import memory, uniform
from pipeline.replay.frame_stack import FrameStackReplay
from pipeline.replay.prioritized import PrioritizedFrameStackReplay, PrioritizedUniformReplay
from pipeline.replay.uniform import UniformReplay
from tests.replay_streams import (
    EPISODE_LENGTHS,
    FIRST,
    LAST,
    MID,
    NUM_ACTIONS,
    Stream,
    collect_spec,
)


def check_sample(sample: trajectory.Trajectory, stream: Stream, valid: set) -> list[tuple]:
    """Asserts every pair is a valid (t, t+1) of one lane, equal to the recorded data."""
    sample = tf.nest.map_structure(np.asarray, sample)
    starts = [stream.key[f.tobytes()] for f in sample.observation[:, 0, ..., -1]]
    assert set(starts) <= valid, set(starts) - valid
    lanes = np.array([b for b, _ in starts])
    items = np.array([t for _, t in starts])
    for index, offset in ((0, 0), (1, 1)):
        expected = stream.item_fields(lanes, items + offset)
        got = tf.nest.map_structure(lambda x, i=index: x[:, i], sample)
        for name in ("step_type", "observation", "action", "next_step_type", "reward"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), name)
        np.testing.assert_array_equal(got.discount, expected.discount)
    assert not np.any(sample.step_type[:, 0] == LAST)
    np.testing.assert_array_equal(sample.next_step_type[:, 0], sample.step_type[:, 1])
    return starts


def check_dtypes(sample, spec, n: int) -> None:
    for x, s in zip(tf.nest.flatten(sample), tf.nest.flatten(spec), strict=True):
        assert x.dtype == s.dtype.as_numpy_dtype
        assert tuple(x.shape) == (n, 2, *s.shape)


# --- properties over random streams ------------------------------------------------------


def test_samples_equal_recorded_stacks_over_random_streams():
    rng = np.random.default_rng(1234)
    checked = 0
    for case in range(60):
        k = (4, 2)[case % 2]
        lanes = int(rng.integers(1, 4))
        ring = int(rng.integers(2, 13))
        frame_shape = (6, 5)
        stream = Stream(rng, lanes, int(rng.integers(40, 120)), k, frame_shape)
        spec = collect_spec(frame_shape, k)
        buffer = FrameStackReplay(
            spec, lanes, lanes * ring + int(rng.integers(0, lanes)), seed=case
        )
        assert buffer.per_lane == ring
        written = 0
        while written < stream.items:
            size = min(int(rng.choice([1, 1, 1, 2, 3, ring, 2 * ring + 3])), stream.items - written)
            chunk = stream.trajectories(written, written + size)
            if size == 1 and rng.random() < 0.5:  # single step, `[lanes, ...]`
                chunk = tf.nest.map_structure(lambda x: x[:, 0], chunk)
            buffer.add_numpy(chunk)
            written += size
            assert buffer.num_transitions() == lanes * min(written, ring)
            valid = stream.valid_starts(written, ring, k)
            if not valid:
                with pytest.raises(ValueError, match="no 2-step window to sample"):
                    buffer.sample_numpy(4)
                continue
            sample = buffer.sample_numpy(16)
            check_dtypes(sample, spec, 16)
            check_sample(sample, stream, valid)
            checked += 16
    assert checked > 15_000


@pytest.mark.parametrize("rejection_rounds", [16, 0], ids=["rejection", "enumeration"])
def test_sampling_is_uniform_over_valid_items(rejection_rounds):
    rng = np.random.default_rng(7)
    k, lanes, ring = 4, 3, 14
    stream = Stream(rng, lanes, 47, k, (6, 5))
    buffer = FrameStackReplay(collect_spec((6, 5), k), lanes, lanes * ring, seed=3)
    buffer.max_rejection_rounds = rejection_rounds
    buffer.add_numpy(stream.trajectories(0, stream.items))
    valid = stream.valid_starts(stream.items, ring, k)
    assert 15 < len(valid) < lanes * ring - 3  # some items are LAST or lost their history

    counts = collections.Counter()
    for _ in range(100):
        counts.update(check_sample(buffer.sample_numpy(300), stream, valid))
    assert set(counts) == valid
    expected = 30_000 / len(valid)
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    dof = len(valid) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof), chi2  # far in the tail: a real bias fails


def test_same_seed_same_samples_other_seed_differs():
    rng = np.random.default_rng(5)
    stream = Stream(rng, 2, 80, 4, (6, 5))
    buffers = [FrameStackReplay(collect_spec(), 2, 60, seed=s) for s in (11, 11, 12)]
    for buffer in buffers:
        buffer.add_numpy(stream.trajectories(0, stream.items))
    a, b, c = ([buffer.sample_numpy(32).observation for _ in range(3)] for buffer in buffers)
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.array_equal(np.stack(a), np.stack(c))


def test_stores_one_frame_and_small_fields_per_item():
    buffer = FrameStackReplay(collect_spec((84, 84), 4, num_actions=18), 4, 1_000)
    assert buffer.bytes_per_item() == 84 * 84 + 1 + 1 + 1 + 4 + 4  # frame, step types, int8 action
    assert buffer._frames.shape == (4, 250, 84, 84)


def test_construction_touches_no_pages():
    process = psutil.Process()
    before = process.memory_info().rss
    buffer = FrameStackReplay(collect_spec((84, 84), 4), 4, 100_000)  # 707 MB when full
    grown = process.memory_info().rss - before
    assert buffer.capacity * buffer.bytes_per_item() > 700e6
    assert grown < 50e6, grown


def test_too_small_capacity_is_a_user_error():
    with pytest.raises(UserError, match="train.replay_capacity"):
        FrameStackReplay(collect_spec(), 4, 7)


# --- graph paths ---------------------------------------------------------------------------


class StackedFramesEnv(py_environment.PyEnvironment):
    """Random frames, random episode lengths, stacks reset to zeros at every FIRST step."""

    def __init__(self, seed: int, k: int = 4, frame_shape=(6, 5)):
        super().__init__(handle_auto_reset=True)
        self._rng = np.random.default_rng(seed)
        self._shape, self._k = frame_shape, k
        self._stack = np.zeros((*frame_shape, k), np.uint8)
        self._left = 0

    def observation_spec(self):
        return array_spec.BoundedArraySpec((*self._shape, self._k), np.uint8, 0, 255)

    def action_spec(self):
        return array_spec.BoundedArraySpec((), np.int64, 0, NUM_ACTIONS - 1)

    def _push(self, restart: bool) -> np.ndarray:
        if restart:
            self._stack[:] = 0
        self._stack = np.roll(self._stack, -1, axis=-1)
        self._stack[..., -1] = self._rng.integers(0, 256, self._shape, dtype=np.uint8)
        return self._stack.copy()

    def _reset(self):
        self._left = int(self._rng.choice(EPISODE_LENGTHS))
        return ts.restart(self._push(restart=True))

    def _step(self, action):
        self._left -= 1
        obs, reward = self._push(restart=False), np.float32(self._rng.normal())
        if self._left > 0:
            return ts.transition(obs, reward)
        if self._rng.random() < 0.5:
            return ts.termination(obs, reward)
        return ts.truncation(obs, reward)


def drive(buffer, lanes: int, num_steps: int, seed: int) -> list[np.ndarray]:
    """Runs a TF-Agents driver (graph mode) with `buffer.add_batch` as an observer.

    Returns the flat trajectory leaves the driver produced, `[lanes, T, ...]` each.
    """
    env = tf_py_environment.TFPyEnvironment(
        batched_py_environment.BatchedPyEnvironment(
            [StackedFramesEnv(seed + i) for i in range(lanes)], multithreading=False
        )
    )
    recorded: list[list[np.ndarray]] = []

    def record(traj):
        return tf.numpy_function(
            lambda *xs: recorded.append([x.copy() for x in xs]) or np.int64(0),
            tf.nest.flatten(traj),
            tf.int64,
            stateful=True,
        )

    policy = random_tf_policy.RandomTFPolicy(env.time_step_spec(), env.action_spec())
    driver = dynamic_step_driver.DynamicStepDriver(
        env, policy, observers=[buffer.add_batch, record], num_steps=num_steps
    )
    tf.function(driver.run, autograph=False)()
    return [np.stack(x, axis=1) for x in zip(*recorded, strict=True)]


def stream_from_driver(leaves: list[np.ndarray], k: int) -> Stream:
    """A Stream whose trajectories are exactly what the driver recorded."""
    traj = tf.nest.pack_sequence_as(collect_spec(k=k), leaves)
    stream = Stream.__new__(Stream)
    lanes, items = traj.step_type.shape
    # step types of time steps 0..T (the last one from the final next_step_type)
    stream.step_type = np.concatenate([traj.step_type, traj.next_step_type[:, -1:]], axis=1)
    stream.stacks, stream.items = traj.observation, items
    stream.frames = traj.observation[..., -1]
    stream.key = {stream.frames[b, t].tobytes(): (b, t) for b in range(lanes) for t in range(items)}
    assert len(stream.key) == lanes * items

    def trajectories(start, stop):
        return tf.nest.map_structure(lambda x: x[:, start:stop], traj)

    stream.trajectories = trajectories
    return stream


def test_driver_observer_and_graph_sampling_match_numpy_path():
    k, lanes, ring = 4, 3, 40
    spec = collect_spec(k=k)
    graph_buffer = FrameStackReplay(spec, lanes, lanes * ring, seed=9)
    leaves = drive(graph_buffer, lanes, num_steps=240, seed=100)
    stream = stream_from_driver(leaves, k)
    assert stream.items > ring  # the ring has wrapped
    numpy_buffer = FrameStackReplay(spec, lanes, lanes * ring, seed=9)
    numpy_buffer.add_numpy(stream.trajectories(0, stream.items))
    assert graph_buffer.num_transitions() == numpy_buffer.num_transitions() == lanes * ring
    np.testing.assert_array_equal(graph_buffer._frames, numpy_buffer._frames)
    valid = stream.valid_starts(stream.items, ring, k)

    # The driver's stacks (what the policy saw) follow the zero-padding rule we rebuild.
    for b in range(lanes):
        st = stream.step_type[b]
        for t in range(stream.items):
            for j in range(k):
                s = t - k + 1 + j
                keep = s >= 0 and FIRST not in st[s + 1 : t + 1]
                frame = stream.frames[b, s] if keep else 0
                np.testing.assert_array_equal(stream.stacks[b, t, ..., j], frame)

    sample_once = tf.function(lambda: graph_buffer.sample(8), autograph=False)

    def loop(n: int):
        arrays = tf.nest.map_structure(
            lambda _: tf.TensorArray(_.dtype, size=n), tf.nest.flatten(spec)
        )

        def body(i, arrays):
            flat = tf.nest.flatten(graph_buffer.sample(8))
            return i + 1, [a.write(i, x) for a, x in zip(arrays, flat, strict=True)]

        _, arrays = tf.while_loop(
            lambda i, _: i < n, body, (tf.constant(0), arrays), parallel_iterations=1
        )
        return [a.stack() for a in arrays]

    sample_loop = tf.function(loop, autograph=False)
    once = sample_once()
    check_dtypes(tf.nest.map_structure(np.asarray, once), spec, 8)
    for x, s in zip(tf.nest.flatten(once), tf.nest.flatten(spec), strict=True):
        assert x.shape.as_list() == [8, 2, *s.shape]  # static shapes for the agent's graph
    looped = [np.asarray(x) for x in sample_loop(3)]
    graph_samples = [tf.nest.map_structure(np.asarray, once)] + [
        tf.nest.pack_sequence_as(spec, [x[i] for x in looped]) for i in range(3)
    ]
    for got in graph_samples:
        check_sample(got, stream, valid)
        expected = numpy_buffer.sample_numpy(8)
        for x, y in zip(tf.nest.flatten(got), tf.nest.flatten(expected), strict=True):
            np.testing.assert_array_equal(x, y)

    dynamic = tf.function(
        graph_buffer.sample, input_signature=[tf.TensorSpec([], tf.int32)], autograph=False
    )
    assert dynamic.get_concrete_function().structured_outputs.observation.shape.as_list() == [
        None,
        2,
        6,
        5,
        k,
    ]
    assert dynamic(tf.constant(5)).observation.shape == (5, 2, 6, 5, k)


def test_dqn_agent_trains_on_samples_unchanged():
    spec = collect_spec((8, 8), 4, num_actions=4)
    time_step_spec = ts.time_step_spec(spec.observation)
    action_spec = spec.action
    q_net = q_network.QNetwork(
        spec.observation,
        action_spec,
        preprocessing_layers=tf.keras.layers.Lambda(lambda x: tf.cast(x, tf.float32) / 255.0),
        conv_layer_params=((4, 3, 2),),
        fc_layer_params=(16,),
    )
    agent = dqn_agent.DqnAgent(
        time_step_spec,
        action_spec,
        q_network=q_net,
        optimizer=tf.keras.optimizers.Adam(1e-3),
        train_step_counter=tf.Variable(0, dtype=tf.int64),
    )
    agent.initialize()
    assert agent.collect_data_spec == spec

    buffer = FrameStackReplay(agent.collect_data_spec, 2, 100, seed=0)
    rng = np.random.default_rng(0)
    stream = Stream(rng, 2, 70, 4, (8, 8))
    stream.actions %= 4
    buffer.add_numpy(stream.trajectories(0, stream.items))
    loss = agent.train(buffer.sample(16)).loss  # eager
    assert np.isfinite(loss.numpy())

    def updates(n):
        def body(i, total):
            return i + 1, total + agent.train(buffer.sample(16)).loss

        return tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), tf.constant(0.0)))[1]

    total = tf.function(updates, autograph=False)(tf.constant(3))
    assert np.isfinite(total.numpy())
    assert int(agent.train_step_counter.numpy()) == 4


def test_uniform_replay_round_trip_in_graph():
    obs = tensor_spec.TensorSpec((3,), tf.float32)
    step_spec = ts.time_step_spec(obs)
    spec = trajectory.from_transition(
        step_spec,
        policy_step.PolicyStep(tensor_spec.BoundedTensorSpec((), tf.int64, 0, 1), (), ()),
        step_spec,
    )
    lanes, steps = 2, 30
    buffer = UniformReplay(spec, lanes, 40)
    assert isinstance(buffer, replay.Replay)

    @tf.function(autograph=False)
    def add(t):
        lane = tf.range(lanes, dtype=tf.float32)
        value = tf.cast(t, tf.float32) + 100.0 * lane
        traj = trajectory.Trajectory(
            step_type=tf.fill([lanes], MID),
            observation=tf.stack([value] * 3, axis=1),
            action=tf.zeros([lanes], tf.int64),
            policy_info=(),
            next_step_type=tf.fill([lanes], MID),
            reward=value,
            discount=tf.ones([lanes]),
        )
        return buffer.add_batch(traj)

    for t in range(steps):
        out = add(tf.constant(t))
        assert isinstance(out, tf.Tensor)
    assert buffer.num_transitions() == 40

    sample = tf.function(lambda: buffer.sample(64), autograph=False)()
    check_dtypes(tf.nest.map_structure(np.asarray, sample), spec, 64)
    reward = sample.reward.numpy()
    np.testing.assert_array_equal(reward[:, 1], reward[:, 0] + 1)  # consecutive, one lane
    assert (reward % 100).min() >= steps - 20  # only the newest 20 per lane are held
    np.testing.assert_array_equal(sample.observation.numpy()[..., 0], reward)


@gin.configurable("test_replay_holder")
def replay_holder(replay=None):
    return replay


@pytest.mark.parametrize(
    "name, cls",
    [
        ("FrameStackReplay", FrameStackReplay),
        ("UniformReplay", UniformReplay),
        ("PrioritizedFrameStackReplay", PrioritizedFrameStackReplay),
        ("PrioritizedUniformReplay", PrioritizedUniformReplay),
    ],
)
def test_gin_binds_either_buffer_and_refuses_loop_owned_args(name, cls):
    try:
        gin.parse_config(f"test_replay_holder.replay = @{name}")
        assert replay_holder() is cls
        assert isinstance(cls(collect_spec(), 2, 20), replay.Replay)
        with pytest.raises(ValueError, match="denylisted"):  # the loop passes these
            gin.parse_config(f"{name}.capacity = 10")
    finally:
        gin.clear_config()


# --- memory pre-flight ---------------------------------------------------------------------


def test_available_memory_probe_is_plausible():
    available = memory.available_memory_bytes()
    assert available is not None
    assert 0 < available <= psutil.virtual_memory().total


def test_cgroup_headroom_reads_v2_ancestors_and_v1(tmp_path):
    v2 = tmp_path / "v2"
    (v2 / "job" / "step").mkdir(parents=True)
    (v2 / "memory.max").write_text("max\n")
    (v2 / "job" / "memory.max").write_text("4000000000\n")
    (v2 / "job" / "memory.current").write_text("3500000000\n")
    (v2 / "job" / "step" / "memory.max").write_text("3000000000\n")
    (v2 / "job" / "step" / "memory.current").write_text("1000000000\n")
    self_v2 = tmp_path / "self_v2"
    self_v2.write_text("0::/job/step\n")
    assert memory.cgroup_memory_headroom(v2, self_v2) == 500_000_000  # the parent is tighter

    v1 = tmp_path / "v1"
    (v1 / "memory" / "slurm").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # no limit
    (v1 / "memory" / "slurm" / "memory.limit_in_bytes").write_text("2000000000\n")
    (v1 / "memory" / "slurm" / "memory.usage_in_bytes").write_text("500000000\n")
    self_v1 = tmp_path / "self_v1"
    self_v1.write_text("12:cpu,cpuacct:/slurm\n5:memory:/slurm\n")
    assert memory.cgroup_memory_headroom(v1, self_v1) == 1_500_000_000

    (v1 / "memory" / "slurm" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert memory.cgroup_memory_headroom(v1, self_v1) is None
    assert memory.cgroup_memory_headroom(tmp_path / "absent", tmp_path / "absent") is None


def test_out_of_memory_message_is_one_line_naming_the_setting():
    with pytest.raises(UserError) as error:
        memory.check_memory(2_000_000, int(14.1e9), available=int(9.8e9))
    assert str(error.value) == (
        "replay buffer of 2,000,000 transitions needs 14.1 GB but only 9.8 GB of memory is "
        "available: lower train.replay_capacity or free memory"
    )
    memory.check_memory(2_000_000, int(8e9), available=int(9.8e9))  # fits in 90%


def test_huge_capacity_is_refused_before_allocating(monkeypatch):
    def no_allocation(*_args, **_kwargs):
        raise AssertionError("allocated before the memory check")

    monkeypatch.setattr(FrameStackReplay, "_allocate", no_allocation)
    with pytest.raises(UserError) as error:
        FrameStackReplay(collect_spec((84, 84), 4), 4, 10**12)
    # gin appends "In call to configurable ..." lines; the CLI prints the first line only.
    message = str(error.value).splitlines()[0]
    assert re.fullmatch(
        r"replay buffer of 1,000,000,000,000 transitions needs [\d.]+ GB but only [\d.]+ GB of "
        r"memory is available: lower train.replay_capacity or free memory",
        message,
    ), message

    monkeypatch.setattr(uniform.tf_uniform_replay_buffer, "TFUniformReplayBuffer", no_allocation)
    with pytest.raises(UserError, match="lower train.replay_capacity"):
        UniformReplay(collect_spec((84, 84), 4), 4, 10**9)
