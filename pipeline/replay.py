"""Replay buffers behind one small interface, so the loop can take either from gin.

    train.replay = @UniformReplay      # TF-Agents' TFUniformReplayBuffer, any observation
    train.replay = @FrameStackReplay   # Atari frame stacks, each frame stored once

Both take `(data_spec, batch_size, capacity, seed, num_steps, gamma)`, add a `[batch_size, ...]`
trajectory per driver step with `add_batch` (a driver observer inside
`tf.function(autograph=False)`) and return `sample(n)` as a `Trajectory` of `[n, num_steps, ...]`
tensors, the layout of `TFUniformReplayBuffer.get_next(n, num_steps)[0]` that `DqnAgent.train`
expects: `num_steps = n_step_update + 1` (2 for one-step DQN).

n-step windows and episode ends. TF-Agents turns a window into an n-step target with
`trajectory.to_n_step_transition` (DqnAgent) or the same sums inside CategoricalDqnAgent:
return = sum_j gamma^j (prod_{i<j} d_i) r_j over positions 0..n-1, bootstrap discount
gamma^n prod_{i<n} d_i on the observation at position n. A terminal step inside the window is
right as it is (its discount 0 zeroes everything after it), but a truncation (LAST with
discount 1) is not: the sums would run on into the next episode. So both buffers end every
window at its first LAST after position 0 (`end_windows_at_episode_ends`): the positions after
it repeat that LAST step, and from it on the rewards are 0 and the discounts 1/gamma (so
gamma * d = 1). The formula then gives exactly the truncated target,
sum_{j<k} gamma^j r_j + gamma^k (prod d) Q(s_{t+k}), for terminals and truncations alike.

`FrameStackReplay` exists because a stacked `(84, 84, 4)` observation repeats each frame four
times: TF-Agents' buffer needs 28.2 KB per transition, so 1M transitions (the Nature DQN
setting) take 28 GB. Keeping only the newest frame of each stack and rebuilding stacks at
sample time brings that to ~7.07 KB (the layout Dopamine uses).

Both constructors check, before allocating, that the buffer fits in the memory this process
can use, and raise a one-line `UserError` otherwise.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import gin
import numpy as np
import tensorflow as tf
from tf_agents.replay_buffers import tf_uniform_replay_buffer
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import policy_step
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory as trajectory_lib
from tf_agents.trajectories.trajectory import Trajectory, Transition

from pipeline.errors import UserError

CAPACITY_SETTING = "train.replay_capacity"  # the binding named in the out-of-memory message
MEMORY_HEADROOM = 0.9  # use at most this share of the memory available at construction
_FIRST, _MID, _LAST = (int(x) for x in (ts.StepType.FIRST, ts.StepType.MID, ts.StepType.LAST))
# Set by the loop from the agent and env, not by gin.
_BUILDER_ARGS = ["data_spec", "batch_size", "capacity", "seed", "num_steps", "gamma"]


@runtime_checkable
class Replay(Protocol):
    """What the training loop needs from a replay buffer."""

    def add_batch(self, trajectory: Trajectory) -> tf.Tensor:
        """Adds one `[batch_size, ...]` step; returns a tensor to hang control deps on."""
        ...

    def sample(self, sample_batch_size: int) -> Trajectory:
        """Returns `[n, num_steps, ...]` windows t..t+n, each ended at its episode's end."""
        ...

    def sample_transition(self, sample_batch_size: int) -> Transition:
        """`to_n_step_transition(sample(n), gamma)`, built without the unused observations."""
        ...

    def num_transitions(self) -> int:
        """Items currently held, over all lanes."""
        ...

    def save(
        self, directory: Path, contents: bool, previous: Path | None = None,
        previous_sums: dict[str, str] | None = None,
    ) -> dict[str, dict] | None:  # fmt: skip
        """Writes the sampling RNG and, if `contents`, every stored item into `directory`.

        `previous` is the newest checkpoint's replay folder (`previous_sums`: its files'
        checksums), for buffers that share unchanged parts with it; the result lists files
        the checkpoint store need not hash again.
        """
        ...

    def restore(self, directory: Path, sums: dict[str, str] | None = None) -> bool:
        """Reads what `save` wrote; returns whether the contents came back."""
        ...


def _write_replay_info(directory: Path, info: dict[str, Any]) -> None:
    (directory / "replay.json").write_text(json.dumps(info) + "\n")


def _read_replay_info(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "replay.json").read_text())


# --- memory pre-flight ------------------------------------------------------------------


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def cgroup_memory_headroom(
    cgroup_root: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")
) -> int | None:
    """Bytes this process may still use under its cgroup memory limit; None if unlimited.

    Containers and Slurm jobs cap memory with cgroups, and `MemAvailable` does not show that
    cap. Checks cgroup v2 (`memory.max - memory.current`, on the process's cgroup and each
    ancestor) and v1 (`memory.limit_in_bytes - memory.usage_in_bytes`); the tightest wins.
    """
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    candidates: list[tuple[Path, str, str]] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        rel = rel.strip().lstrip("/")
        if controllers == "":  # cgroup v2 unified hierarchy: walk up to the root
            node = cgroup_root / rel if rel else cgroup_root
            while True:
                candidates.append((node, "memory.max", "memory.current"))
                if node == cgroup_root or cgroup_root not in node.parents:
                    break
                node = node.parent
        elif "memory" in controllers.split(","):
            base = cgroup_root / "memory"
            for node in (base / rel if rel else base, base):
                candidates.append((node, "memory.limit_in_bytes", "memory.usage_in_bytes"))
    # No /proc/self/cgroup entry (or a namespaced path that does not exist): try the roots.
    candidates.append((cgroup_root, "memory.max", "memory.current"))
    candidates.append((cgroup_root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"))

    headroom: int | None = None
    for node, limit_name, usage_name in candidates:
        limit = _read_int(node / limit_name)
        if limit is None or limit >= 2**60:  # "max", or v1's "no limit" (~2**63)
            continue
        usage = _read_int(node / usage_name) or 0
        room = max(limit - usage, 0)
        headroom = room if headroom is None else min(headroom, room)
    return headroom


def system_memory_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """`MemAvailable` in bytes (memory the kernel can give without swapping); None if unknown."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # non-Linux
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - no probe available: the check is skipped
        return None


def available_memory_bytes() -> int | None:
    """Memory this process can still allocate: the smaller of MemAvailable and cgroup room."""
    known = [x for x in (system_memory_available(), cgroup_memory_headroom()) if x is not None]
    return min(known) if known else None


def check_memory(capacity: int, needed_bytes: int, available: int | None = None) -> None:
    """Raises a one-line UserError when `needed_bytes` will not fit; before any allocation."""
    if available is None:
        available = available_memory_bytes()
    if available is None or needed_bytes <= MEMORY_HEADROOM * available:
        return
    raise UserError(
        f"replay buffer of {capacity:,} transitions needs {needed_bytes / 1e9:.1f} GB but only "
        f"{available / 1e9:.1f} GB of memory is available: lower {CAPACITY_SETTING} or free "
        "memory"
    )


def _check_sizes(batch_size: int, capacity: int, num_steps: int = 2, gamma: float = 1.0) -> int:
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


def _npy_bytes(array: np.ndarray) -> bytes:
    """`array` in .npy format, in memory: written once and hashed from the same bytes."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array))
    return buffer.getvalue()


def _spec_bytes(spec: Any) -> int:
    return sum(int(np.prod(s.shape, dtype=np.int64)) * s.dtype.size for s in tf.nest.flatten(spec))


# --- TF-Agents' buffer ------------------------------------------------------------------


@gin.configurable("UniformReplay", denylist=_BUILDER_ARGS)
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
        per_lane = _check_sizes(batch_size, capacity, num_steps, gamma)
        check_memory(capacity, per_lane * batch_size * (_spec_bytes(data_spec) + 8))
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
        _write_replay_info(directory, {"contents": contents})

    def restore(self, directory: Path, sums: dict[str, str] | None = None) -> bool:
        contents = bool(_read_replay_info(directory)["contents"])
        self._checkpoint(contents).read(str(directory / "uniform_replay")).assert_consumed()
        return contents


# --- frame-stack store ------------------------------------------------------------------


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


@gin.configurable("FrameStackReplay", denylist=_BUILDER_ARGS)
class FrameStackReplay:
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
    chunk_items = 8_192  # items per lane in one checkpoint file (~58 MB of Atari frames)

    def __init__(
        self,
        data_spec: Any,
        batch_size: int,
        capacity: int,
        seed: int = 0,
        num_steps: int = 2,
        gamma: float = 1.0,
    ):
        if not (isinstance(data_spec, tuple) and hasattr(data_spec, "observation")):
            raise TypeError("FrameStackReplay needs a Trajectory spec (agent.collect_data_spec)")
        obs = tf.nest.flatten(data_spec.observation)
        if len(obs) != 1 or len(obs[0].shape) < 1 or obs[0].shape.num_elements() is None:
            raise TypeError(f"FrameStackReplay needs one stacked observation, got {obs}")
        self.per_lane = _check_sizes(batch_size, capacity, num_steps, gamma)
        self.num_steps = num_steps
        self.gamma = gamma
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

    def save(
        self, directory: Path, contents: bool, previous: Path | None = None,
        previous_sums: dict[str, str] | None = None,
    ) -> dict[str, dict]:  # fmt: skip
        """The filled part of each ring in chunks of `chunk_items` items (one .npy file per
        array and chunk), the RNG state as JSON.

        A chunk unchanged since the checkpoint in `previous` (whose manifest gave
        `previous_sums`) is hard-linked from there, not written: a checkpoint then costs the
        chunks written since the last one, not the whole replay, and checkpoints share the
        disk of what they have in common. Returns what the checkpoint store need not read
        back: {file name: {"size", "sha256", "durable"}} (linked files are durable already).
        """
        known: dict[str, dict] = {}
        with self._lock:
            filled = min(self._count, self.per_lane)
            if contents:
                for chunk in range(-(-filled // self.chunk_items)):
                    known.update(
                        self._save_chunk(directory, chunk, filled, previous, previous_sums or {})
                    )
            info = {"contents": contents, "count": self._count, "per_lane": self.per_lane}
            info["chunk_items"] = self.chunk_items
            _write_replay_info(directory, {**info, "rng": self._rng.bit_generator.state})
        return known

    def _chunk_arrays(self, chunk: int, filled: int) -> dict[str, np.ndarray]:
        items = slice(chunk * self.chunk_items, min((chunk + 1) * self.chunk_items, filled))
        arrays = {f"frames.{chunk:05d}.npy": self._frames[:, items]}
        for i, array in enumerate(self._fields):
            if array is not None:
                arrays[f"field_{i}.{chunk:05d}.npy"] = array[:, items]
        return arrays

    def _save_chunk(
        self, directory: Path, chunk: int, filled: int, previous: Path | None,
        previous_sums: dict[str, str],
    ) -> dict[str, dict]:  # fmt: skip
        arrays = self._chunk_arrays(chunk, filled)
        saved = self._saved.get(chunk)
        if (
            previous is not None
            and saved is not None
            and all(previous_sums.get(name) == saved.get(name) for name in arrays)
        ):
            try:
                for name in arrays:
                    os.link(previous / name, directory / name)
            except OSError:  # another filesystem, or the previous one is gone: write it
                for name in arrays:
                    (directory / name).unlink(missing_ok=True)
            else:
                return {
                    name: {"size": (directory / name).stat().st_size, "sha256": saved[name],
                           "durable": True}
                    for name in arrays
                }  # fmt: skip
        known = {}
        for name, array in arrays.items():
            data = _npy_bytes(array)
            (directory / name).write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            known[name] = {"size": len(data), "sha256": digest, "durable": False}
        self._saved[chunk] = {name: entry["sha256"] for name, entry in known.items()}
        return known

    def restore(self, directory: Path, sums: dict[str, str] | None = None) -> bool:
        """Reads what `save` wrote (also the single-file layout of older checkpoints).

        `sums` (file name -> sha256 from the checkpoint's verified manifest) marks the chunks
        read as saved, so the next checkpoint can link them.
        """
        info = _read_replay_info(directory)
        with self._lock:
            self._rng.bit_generator.state = info["rng"]
            self._saved = {}
            if not info["contents"]:
                return False
            if info["per_lane"] != self.per_lane:
                raise ValueError(f"replay ring of {info['per_lane']} items, now {self.per_lane}")
            filled = min(info["count"], self.per_lane)
            if (directory / "frames.npy").exists():  # one file per array (before 2026-12-01)
                self._frames[:, :filled] = np.load(directory / "frames.npy", mmap_mode="r")
                for i, array in enumerate(self._fields):
                    if array is not None:
                        array[:, :filled] = np.load(directory / f"field_{i}.npy", mmap_mode="r")
            else:
                self._restore_chunks(directory, filled, int(info["chunk_items"]), sums)
            self._count = info["count"]
        return True

    def _restore_chunks(
        self, directory: Path, filled: int, chunk_items: int, sums: dict[str, str] | None
    ) -> None:
        for chunk in range(-(-filled // chunk_items)):
            items = slice(chunk * chunk_items, min((chunk + 1) * chunk_items, filled))
            names = [f"frames.{chunk:05d}.npy"]
            self._frames[:, items] = np.load(directory / names[0], mmap_mode="r")
            for i, array in enumerate(self._fields):
                if array is not None:
                    names.append(f"field_{i}.{chunk:05d}.npy")
                    array[:, items] = np.load(directory / names[-1], mmap_mode="r")
            if sums is not None and chunk_items == self.chunk_items:
                self._saved[chunk] = {name: sums[name] for name in names if name in sums}

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
