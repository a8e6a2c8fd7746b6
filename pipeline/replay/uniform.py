"""TF-Agents' uniform buffer for any observation, its windows cut in the update graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gin
import tensorflow as tf
from tf_agents.replay_buffers import tf_uniform_replay_buffer
from tf_agents.trajectories.trajectory import Trajectory, Transition

from pipeline.replay import BUILDER_ARGS, read_replay_info, write_replay_info
from pipeline.replay.memory import check_memory, spec_bytes
from pipeline.replay.windows import check_sizes, end_windows_at_episode_ends, n_step_transition


@gin.configurable("UniformReplay", denylist=BUILDER_ARGS)
class UniformReplay:
    """TF-Agents' `TFUniformReplayBuffer`, `capacity // batch_size` items per lane.

    Samples windows as `get_next(n, num_steps)` does, but draws the rows from a seeded
    `tf.random.Generator`: `get_next` uses stateful random ops whose position a checkpoint
    cannot hold, so a resumed run would sample differently. Windows that start at a boundary
    (LAST -> FIRST) are sampled too; DqnAgent gives them zero weight. Windows are cut at their
    first episode end (`end_windows_at_episode_ends`).
    """

    def __init__(
        self,
        data_spec: Any,
        batch_size: int,
        capacity: int,
        seed: int = 0,
        num_steps: int = 2,
        gamma: float = 1.0,
    ):
        per_lane = check_sizes(batch_size, capacity, num_steps, gamma)
        check_memory(capacity, per_lane * batch_size * (spec_bytes(data_spec) + 8))
        self.data_spec = data_spec
        self.batch_size = batch_size
        self.capacity = per_lane * batch_size
        self.seed = seed
        self.num_steps = num_steps
        self.gamma = gamma
        self.buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(
            data_spec=data_spec, batch_size=batch_size, max_length=per_lane
        )
        self._rng = tf.random.Generator.from_seed(seed)

    def add_batch(self, trajectory: Trajectory) -> tf.Tensor:
        op = self.buffer.add_batch(trajectory)
        with tf.control_dependencies([op] if op is not None else []):
            return tf.identity(self.buffer.num_frames())

    def sample(self, sample_batch_size: int) -> Trajectory:
        buffer, length = self.buffer, self.buffer._max_length
        # The id without `_get_last_id`'s CriticalSection: one thread adds and samples (the
        # distributed mode uses Reverb), and the lock is the one op XLA cannot compile.
        low, high = tf_uniform_replay_buffer._valid_range_ids(
            buffer._last_id.value(), length, num_steps=self.num_steps
        )
        with tf.control_dependencies(
            [tf.debugging.assert_greater(high, low, message="the replay buffer is empty")]
        ):
            ids = self._rng.uniform([sample_batch_size], low, high, dtype=tf.int64)
        lanes = self._rng.uniform([sample_batch_size], 0, self.batch_size, dtype=tf.int64)
        return self.window(lanes, ids)

    def sample_transition(self, sample_batch_size: int) -> Transition:
        return n_step_transition(self.sample(sample_batch_size), self.gamma)

    def window(self, lanes: tf.Tensor, ids: tf.Tensor) -> Trajectory:
        """The cut windows starting at item `ids` of lane `lanes` (ids count every add)."""
        length = self.buffer._max_length
        rows = tf.math.mod(ids[:, None] + tf.range(self.num_steps, dtype=tf.int64), length)
        window = self.buffer._data_table.read(rows + lanes[:, None] * length)
        return end_windows_at_episode_ends(window, self.gamma)

    def num_transitions(self) -> int:
        return int(self.buffer.num_frames())

    def _checkpoint(self, contents: bool) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(rng=self._rng, **({"buffer": self.buffer} if contents else {}))

    def save(self, directory: Path, contents: bool, previous=None, previous_sums=None) -> None:
        """One TF checkpoint (small buffers: CartPole's whole replay is ~6 MB)."""
        self._checkpoint(contents).write(str(directory / "uniform_replay"))
        write_replay_info(directory, {"contents": contents})

    def restore(self, directory: Path, sums: dict[str, str] | None = None) -> bool:
        contents = bool(read_replay_info(directory)["contents"])
        self._checkpoint(contents).read(str(directory / "uniform_replay")).assert_consumed()
        return contents
