"""Frame-stacked Atari replay that stores every frame once (~7 KB a transition)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import gin
import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories.trajectory import Trajectory, Transition

from pipeline.replay import BUILDER_ARGS
from pipeline.replay.frame_stack_files import ChunkedFiles
from pipeline.replay.memory import check_memory
from pipeline.replay.windows import _FIRST, _LAST, check_sizes, n_step_transition, window_sources


def _storage_dtype(field: str, spec: tf.TensorSpec) -> np.dtype:
    """The smallest dtype that holds every valid value of `spec` exactly."""
    if field in ("step_type", "next_step_type"):
        return np.dtype(np.int8)  # FIRST, MID, LAST = 0, 1, 2
    dtype = np.dtype(spec.dtype.as_numpy_dtype)
    if dtype.kind in "iu" and isinstance(spec, tensor_spec.BoundedTensorSpec):
        low, high = int(np.min(spec.minimum)), int(np.max(spec.maximum))
        for small in (np.int8, np.uint8, np.int16, np.uint16, np.int32):
            info = np.iinfo(small)
            if info.min <= low and high <= info.max and np.dtype(small).itemsize < dtype.itemsize:
                return np.dtype(small)
    return dtype


@gin.configurable("FrameStackReplay", denylist=BUILDER_ARGS)
class FrameStackReplay(ChunkedFiles):
    """Uniform replay for frame-stacked observations that stores every frame once.

    Observations are stacks `(..., K)` (channels last, newest frame last) made by the env's
    rule: at each FIRST step the stack restarts as `[0, ..., 0, f0]`, then shifts in one frame
    per step. Each lane keeps a ring of `capacity // batch_size` items holding only the newest
    frame plus step_type, action, policy_info, next_step_type, reward and discount (in small
    dtypes where exact). `sample` rebuilds the stacks of items t and t+1 exactly as the policy
    saw them: frame `t-K+1+j` where no FIRST lies in `(t-K+1+j, t]`, else zeros.

    `sample` returns windows t..t+n (`num_steps = n + 1`), every stack of the window rebuilt
    the same way, and cut at the window's first episode end (see the module docstring).

    Sampling is uniform (with replacement, from a seeded NumPy generator) over the items t that
    (a) have t+n in the ring of the same lane, (b) still have every history frame their stack
    needs (not overwritten by the ring), and (c) are not boundaries: t is not LAST. LAST ->
    FIRST pairs are not transitions; TF-Agents' buffer returns them and DqnAgent masks them
    out of the loss, here they are simply never drawn, so every sample carries learning signal.

    All state is a few NumPy arrays plus one counter (`_frames`, `_fields`, `_count`), allocated
    lazily (`np.zeros` pages are only backed by memory once written).
    """

    max_rejection_rounds = 16  # then enumerate the valid items (only when most are invalid)

    def __init__(
        self,
        data_spec: Any,
        batch_size: int,
        capacity: int,
        seed: int = 0,
        num_steps: int = 2,
        gamma: float = 1.0,
        chunk_items: int = 8_192,
    ):
        """`chunk_items`: items per lane in one checkpoint file (8,192: ~58 MB of Atari
        frames); a checkpoint rewrites only the chunks changed since the previous one."""
        if not (isinstance(data_spec, tuple) and hasattr(data_spec, "observation")):
            raise TypeError("FrameStackReplay needs a Trajectory spec (agent.collect_data_spec)")
        obs = tf.nest.flatten(data_spec.observation)
        if len(obs) != 1 or len(obs[0].shape) < 1 or obs[0].shape.num_elements() is None:
            raise TypeError(f"FrameStackReplay needs one stacked observation, got {obs}")
        self.per_lane = check_sizes(batch_size, capacity, num_steps, gamma)
        self.num_steps = num_steps
        self.gamma = gamma
        self.chunk_items = chunk_items
        self.data_spec = data_spec
        self.batch_size = batch_size
        self.capacity = self.per_lane * batch_size
        self.seed = seed
        self.stack = int(obs[0].shape[-1])
        self.frame_shape = tuple(int(d) for d in obs[0].shape[:-1])
        self._frame_dtype = np.dtype(obs[0].dtype.as_numpy_dtype)

        # Flat leaves in tf.nest order of the Trajectory: (field, spec, storage dtype).
        self._leaves = [
            (field, spec, _storage_dtype(field, spec))
            for field in Trajectory._fields
            for spec in tf.nest.flatten(getattr(data_spec, field))
        ]
        self._obs_index = [f for f, _, _ in self._leaves].index("observation")
        if len(tf.nest.flatten(data_spec.step_type)) != 1:
            raise TypeError("FrameStackReplay needs a single step_type tensor")

        check_memory(capacity, self.capacity * self.bytes_per_item())
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        self._count = 0  # items written per lane (all lanes advance together)
        # Chunk index -> {file name: sha256} of chunks unchanged since they were last saved
        # or restored: a checkpoint hard-links those from the previous one instead.
        self._saved: dict[int, dict[str, str]] = {}
        self._allocate()

    # -- storage ---------------------------------------------------------------------

    def bytes_per_item(self) -> int:
        """Bytes one stored item takes at full capacity (newest frame + small fields)."""
        frame = int(np.prod(self.frame_shape, dtype=np.int64)) * self._frame_dtype.itemsize
        rest = sum(
            int(np.prod(spec.shape, dtype=np.int64)) * dtype.itemsize
            for field, spec, dtype in self._leaves
            if field != "observation"
        )
        return frame + rest

    def _allocate(self) -> None:
        lanes, length = self.batch_size, self.per_lane
        self._frames = np.zeros((lanes, length, *self.frame_shape), self._frame_dtype)
        # One array per non-observation leaf, None at the observation's position.
        self._fields: list[np.ndarray | None] = [
            None if field == "observation" else np.zeros((lanes, length, *spec.shape), dtype)
            for field, spec, dtype in self._leaves
        ]
        self._step_types = self._fields[self._step_type_index]

    @property
    def _step_type_index(self) -> int:
        return [f for f, _, _ in self._leaves].index("step_type")

    def num_transitions(self) -> int:
        """Items held over all lanes (as TFUniformReplayBuffer.num_frames)."""
        return self.batch_size * min(self._count, self.per_lane)

    # -- adding ----------------------------------------------------------------------

    def add_batch(self, trajectory: Trajectory) -> tf.Tensor:
        """Driver observer: slices the newest frame in TF, hands one frame per lane to NumPy.

        Returns the number of items written per lane so far (an int64 tensor).
        """
        tf.nest.assert_same_structure(trajectory, self.data_spec)
        leaves = [tf.convert_to_tensor(x) for x in tf.nest.flatten(trajectory)]
        leaves[self._obs_index] = leaves[self._obs_index][..., -1]
        count = tf.numpy_function(
            self._add_from_graph, leaves, tf.int64, stateful=True, name="frame_stack_replay_add"
        )
        count.set_shape([])
        return count

    def _add_from_graph(self, *leaves: np.ndarray) -> np.int64:
        self._write([x[:, None] for x in leaves])
        return np.int64(self._count)

    def add_numpy(self, trajectory: Trajectory) -> None:
        """Adds NumPy trajectories: `[batch_size, ...]` (one step) or `[batch_size, T, ...]`.

        Only the newest frame `observation[..., -1]` is read, so a chunk may pass stacks as a
        cheap view. T steps per lane in one call make filling large buffers fast.
        """
        tf.nest.assert_same_structure(trajectory, self.data_spec)
        leaves = [np.asarray(x) for x in tf.nest.flatten(trajectory)]
        leaves[self._obs_index] = leaves[self._obs_index][..., -1]
        step_rank = len(self._leaves[0][1].shape)
        if leaves[0].ndim == step_rank + 1:  # one step: add the time axis
            leaves = [x[:, None] for x in leaves]
        self._write(leaves)

    def _write(self, leaves: Sequence[np.ndarray]) -> None:
        """Writes `[batch_size, T, ...]` leaves (observation already its newest frame)."""
        steps = leaves[0].shape[1]
        for x, (field, spec, _) in zip(leaves, self._leaves, strict=True):
            shape = self.frame_shape if field == "observation" else tuple(spec.shape)
            if x.shape != (self.batch_size, steps, *shape):
                raise ValueError(
                    f"replay add: {field} has shape {x.shape}, expected "
                    f"{(self.batch_size, steps, *shape)}"
                )
        with self._lock:
            start, skip = self._count, max(steps - self.per_lane, 0)  # only the last ring-full
            done = skip
            while done < steps:
                slot = (start + done) % self.per_lane
                n = min(steps - done, self.per_lane - slot)
                for i, x in enumerate(leaves):
                    target = self._frames if i == self._obs_index else self._fields[i]
                    target[:, slot : slot + n] = x[:, done : done + n]
                for chunk in range(
                    slot // self.chunk_items, (slot + n - 1) // self.chunk_items + 1
                ):
                    self._saved.pop(chunk, None)  # changed since its last save
                done += n
            self._count = start + steps
            self._after_write(start, leaves[self._step_type_index])

    def _after_write(self, start: int, step_types: np.ndarray) -> None:
        """Called under the lock after items `start ..` were written (prioritized replay)."""

    # -- sampling --------------------------------------------------------------------

    def _valid(self, lanes: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Which (lane, item) can start a window; items must lie in [oldest, count - num_steps]."""
        length, k = self.per_lane, self.stack
        oldest = max(0, self._count - length)
        st = self._step_types
        ok = st[lanes, items % length] != _LAST
        if k > 1:
            # History t-K+1..t must still be in the ring, unless a FIRST (in the ring) cuts it.
            history = items[:, None] + np.arange(-(k - 2), 1)  # t-K+2 .. t
            first = (st[lanes[:, None], history % length] == _FIRST) & (history >= oldest)
            ok &= (items - (k - 1) >= oldest) | first.any(axis=1)
        return ok

    def _draw(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Uniform (lane, item) among valid starts: rejection from the ring, then enumeration."""
        oldest = max(0, self._count - self.per_lane)
        span = self._count - (self.num_steps - 1) - oldest  # starts: oldest .. count-num_steps
        lanes, items = np.zeros(n, np.int64), np.zeros(n, np.int64)
        todo = np.arange(n)
        if span > 0:
            for _ in range(self.max_rejection_rounds):
                lane, offset = np.divmod(
                    self._rng.integers(0, self.batch_size * span, todo.size), span
                )
                ok = self._valid(lane, offset + oldest)
                lanes[todo[ok]], items[todo[ok]] = lane[ok], offset[ok] + oldest
                todo = todo[~ok]
                if todo.size == 0:
                    return lanes, items
            lane, offset = np.divmod(np.arange(self.batch_size * span, dtype=np.int64), span)
            ok = self._valid(lane, offset + oldest)
            valid = np.flatnonzero(ok)
            if valid.size:
                pick = valid[self._rng.integers(0, valid.size, todo.size)]
                lanes[todo], items[todo] = lane[pick], offset[pick] + oldest
                return lanes, items
        raise ValueError(
            f"FrameStackReplay has no {self.num_steps}-step window to sample yet ({self._count} "
            "steps per lane added): collect more before training"
        )

    def window_numpy(
        self, lanes: np.ndarray, items: np.ndarray, ends_only: bool = False
    ) -> list[np.ndarray]:
        """Flat leaves `[n, num_steps, ...]` of the cut windows starting at (lane, item).

        Position p's stack holds frames t+p-K+1 .. t+p, each zeroed when a FIRST lies after
        it within the stack (the env's rule); positions past the window's first LAST are
        built from that LAST step (`window_sources`), rewards and discounts then set.
        `ends_only`: the observation leaf holds positions 0 and n only (`[n, 2, ...]`), the
        only ones an n-step transition reads.
        """
        k, length, width = self.stack, self.per_lane, self.num_steps
        slots = (items[:, None] + np.arange(-(k - 1), width)) % length  # t-K+1 .. t+n
        step_slots = slots[:, k - 1 :]  # t .. t+n
        source, ended = window_sources(self._step_types[lanes[:, None], step_slots])
        first = self._step_types[lanes[:, None], slots] == _FIRST  # [n, K+n]
        rows = np.arange(lanes.size)[:, None]
        observed = source[:, [0, width - 1]] if ends_only else source
        dtype = self._leaves[self._obs_index][1].dtype.as_numpy_dtype
        stacks = np.empty((lanes.size, observed.shape[1], *self.frame_shape, k), dtype)
        # Window index w = p + j holds frame t-K+1+p+j: channel j of position p's stack,
        # zeroed when a FIRST lies in w+1 .. p+K-1.
        padding = np.zeros((lanes.size, observed.shape[1]), bool)
        for j in range(k - 1, -1, -1):  # newest channel first; padding only grows
            frames = self._frames[lanes[:, None], slots[rows, observed + j]]
            frames[padding] = 0
            stacks[..., j] = frames
            padding |= first[rows, observed + j]
        fields_at = step_slots[rows, source]
        leaves = []
        for i, (field, spec, _) in enumerate(self._leaves):
            if i == self._obs_index:
                leaves.append(stacks)
                continue
            value = self._fields[i][lanes[:, None], fields_at].astype(spec.dtype.as_numpy_dtype)
            if field == "reward":
                value[ended] = 0
            elif field == "discount":
                value[ended] = 1.0 / self.gamma
            leaves.append(value)
        return leaves

    def _sample_flat(
        self, n: int | np.integer | np.ndarray, ends_only: bool | np.bool_ = False
    ) -> list[np.ndarray]:
        with self._lock:
            lanes, items = self._draw(int(n))
            return self.window_numpy(lanes, items, ends_only=bool(ends_only))

    def sample_numpy(self, sample_batch_size: int) -> Trajectory:
        """`sample` for NumPy callers: a Trajectory of `[n, num_steps, ...]` arrays."""
        return tf.nest.pack_sequence_as(self.data_spec, self._sample_flat(sample_batch_size))

    def sample(self, sample_batch_size: int | tf.Tensor) -> Trajectory:
        """In-graph sampling (tf.function, tf.while_loop): `[n, num_steps, ...]` tensors.

        Draws, gathers and lays out the stacks in NumPy: on CPU that is ~1.6x faster than
        handing the `[n, K+n, *frame]` frames to TF and transposing there.
        """
        return self._sample_graph(sample_batch_size, ends_only=False)

    def sample_transition(self, sample_batch_size: int | tf.Tensor) -> Transition:
        """The n-step transitions of `sample(n)` (`n_step_transition`: TF-Agents' formula).

        It reads the observations at positions 0 and n only, so only those two stacks are
        built: for n = 10 that is 2 stacks instead of 11 per sample.
        """
        window = self._sample_graph(sample_batch_size, ends_only=True)
        return n_step_transition(window, self.gamma)

    def _sample_graph(self, sample_batch_size: int | tf.Tensor, ends_only: bool) -> Trajectory:
        flat = tf.numpy_function(
            self._sample_flat,
            [tf.cast(sample_batch_size, tf.int64), ends_only],
            [spec.dtype for _, spec, _ in self._leaves],
            stateful=True,
            name="frame_stack_replay_sample",
        )
        return self._pack_sampled(flat, sample_batch_size, ends_only)

    def _pack_sampled(
        self, flat: Sequence[tf.Tensor], sample_batch_size: int | tf.Tensor, ends_only: bool
    ) -> Trajectory:
        """The `numpy_function` outputs of `_sample_flat` as a Trajectory with static shapes."""
        n = tf.get_static_value(sample_batch_size)
        n = None if n is None else int(n)
        for i, (tensor, (_, spec, _)) in enumerate(zip(flat, self._leaves, strict=True)):
            width = 2 if ends_only and i == self._obs_index else self.num_steps
            tensor.set_shape([n, width, *spec.shape])
        return tf.nest.pack_sequence_as(self.data_spec, list(flat))
