"""Prioritized replay (Schaul et al. 2016, proportional variant) for both local buffers.

    train.replay = @PrioritizedUniformReplay      # any observation (TF-Agents' buffer)
    train.replay = @PrioritizedFrameStackReplay   # Atari frame stacks
    PrioritizedFrameStackReplay.priority_exponent = 0.5     # alpha
    PrioritizedFrameStackReplay.importance_exponent = 0.4   # beta at the start, 1 at the end

The buffers store exactly what their uniform parents store; a `PriorityIndex` beside them
keeps one priority per (lane, slot) in a `SumTree`. The rules:

- An item becomes drawable when its whole window (t .. t+n) is written, at the largest
  priority given so far (1 at first), so every new transition is replayed soon. Until then,
  and once the ring overwrites it, its priority is 0. Boundary items (t is LAST: no
  transition starts there) are never drawable.
- A draw is proportional to priority, stratified over the batch. The importance-sampling
  weights are (N P(i))^-beta divided by the batch's largest (N then cancels), with beta
  annealed linearly from `importance_exponent` to 1 over the run.
- After each update the agent's per-sample errors become the priorities of the items it
  trained on: (|error| + `priority_epsilon`) ^ `priority_exponent` (DqnAgent: the TD error;
  `RainbowAgent`: its per-sample cross-entropy, as Dopamine's Rainbow uses its loss).
- The index (priorities, per-slot step types, counters and its own RNG) is checkpointed with
  the replay, so a resumed run draws the same batches as an uninterrupted one.

Training calls `sample_prioritized` and `update_priorities`; the parents' `sample` stays
uniform (benchmarks and tests use it).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gin
import numpy as np
import tensorflow as tf
from tf_agents.agents.categorical_dqn import categorical_dqn_agent

from pipeline.errors import UserError
from pipeline.replay import BUILDER_ARGS
from pipeline.replay.frame_stack import FrameStackReplay
from pipeline.replay.sum_tree import SumTree
from pipeline.replay.uniform import UniformReplay
from pipeline.replay.windows import _LAST, n_step_transition

_RNG_STREAM = 0x5052  # the index draws from its own stream: seed -> (seed, this)
MAX_REJECTION_ROUNDS = 64


class PriorityIndex:
    """Priorities of the items of `lanes` rings of `per_lane` slots; keys = lane * per_lane +
    slot. Thread-safe: the collect and train graphs may call it from different threads."""

    def __init__(
        self,
        lanes: int,
        per_lane: int,
        num_steps: int,
        seed: int,
        priority_exponent: float,
        priority_epsilon: float,
    ):
        self.lanes, self.per_lane, self.num_steps = lanes, per_lane, num_steps
        self.priority_exponent = priority_exponent
        self.priority_epsilon = priority_epsilon
        self.tree = SumTree(lanes * per_lane)
        self.step_types = np.zeros((lanes, per_lane), np.int8)  # what each slot holds
        self.count = 0  # items written per lane
        self.max_priority = 1.0
        self.rng = np.random.default_rng([seed, _RNG_STREAM])
        self._lock = threading.Lock()

    def _keys(self, lanes: np.ndarray, slots: np.ndarray) -> np.ndarray:
        return lanes * self.per_lane + slots

    def written(self, start: int, step_types: np.ndarray) -> None:
        """Items `start .. start + T - 1` of every lane were written (`step_types` [lanes, T])."""
        with self._lock:
            steps = step_types.shape[1]
            count = start + steps
            kept = min(steps, self.per_lane)  # a longer write keeps only its last ring-full
            slots = np.arange(count - kept, count) % self.per_lane
            self.step_types[:, slots] = step_types[:, steps - kept :]
            all_lanes = np.arange(self.lanes)[:, None]
            self.tree.set(self._keys(all_lanes, slots[None, :]), 0.0, check=False)
            # Windows t .. t+n that this write completed (t still in the ring).
            first = max(start - (self.num_steps - 1), count - self.per_lane, 0)
            done = np.arange(first, count - (self.num_steps - 1)) % self.per_lane
            if done.size:
                keys = self._keys(all_lanes, done[None, :])
                starts = self.step_types[:, done] != _LAST
                self.tree.set(keys[starts], self.max_priority, check=False)
            self.count = count

    def draw(
        self,
        n: int,
        importance_exponent: float,
        valid: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(lanes, items, keys, weights) of `n` draws; items count every add, as the buffers'.

        `valid(lanes, items)`, if given, vetoes items the buffer cannot build (a frame stack
        whose history the ring overwrote): they get priority 0 and are drawn again.
        """
        with self._lock:
            keys = np.empty(n, np.int64)
            todo = np.arange(n)
            for _ in range(MAX_REJECTION_ROUNDS):
                if not self.tree.total > 0:
                    break
                keys[todo] = self.tree.sample_stratified(todo.size, self.rng)
                if valid is None:
                    todo = todo[:0]
                    break
                lanes, items = self._locate(keys[todo])
                ok = valid(lanes, items)
                self.tree.set(keys[todo[~ok]], 0.0, check=False)
                todo = todo[~ok]
                if todo.size == 0:
                    break
            if todo.size:
                raise ValueError(
                    f"prioritized replay has no {self.num_steps}-step window to sample yet "
                    f"({self.count} steps per lane added): collect more before training"
                )
            lanes, items = self._locate(keys)
            probabilities = self.tree.get(keys) / self.tree.total
            weights = np.power(probabilities, -importance_exponent)
            return lanes, items, keys, (weights / weights.max()).astype(np.float32)

    def _locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lane, item) of keys: the item a slot holds is the newest one with its position."""
        lanes, slots = np.divmod(keys, self.per_lane)
        newest = self.count - 1
        return lanes, newest - (newest - slots) % self.per_lane

    def update(self, keys: np.ndarray, errors: np.ndarray) -> np.int64:
        """New priorities (|error| + epsilon) ^ alpha for the items drawn as `keys`."""
        priorities = np.power(np.abs(errors) + self.priority_epsilon, self.priority_exponent)
        with self._lock:
            self.tree.set(keys, priorities)
            if priorities.size:
                self.max_priority = max(self.max_priority, float(priorities.max()))
        return np.int64(keys.size)

    # -- checkpoint ----------------------------------------------------------------------

    def save(self, directory: Path, contents: bool) -> None:
        with self._lock:
            if contents:
                np.savez(
                    directory / "priorities.npz",
                    leaves=self.tree.leaves,
                    step_types=self.step_types,
                )
            info = {"count": self.count, "max_priority": self.max_priority}
            info["rng"] = self.rng.bit_generator.state
            (directory / "priorities.json").write_text(json.dumps(info) + "\n")

    def restore(self, directory: Path, contents: bool) -> None:
        """Reads `save`'s files; without the contents the replay restarts empty, so does this."""
        info = json.loads((directory / "priorities.json").read_text())
        with self._lock:
            self.rng.bit_generator.state = info["rng"]
            if not contents:
                return
            with np.load(directory / "priorities.npz") as saved:
                self.tree.set_leaves(saved["leaves"])
                self.step_types[:] = saved["step_types"]
            self.count = int(info["count"])
            self.max_priority = float(info["max_priority"])


class _Prioritized:
    """What both prioritized buffers add to their parent: the index and its graph calls."""

    _priorities: PriorityIndex
    num_steps: int
    gamma: float

    def __init__(
        self,
        data_spec: Any,
        batch_size: int,
        capacity: int,
        seed: int = 0,
        num_steps: int = 2,
        gamma: float = 1.0,
        priority_exponent: float = 0.6,
        importance_exponent: float = 0.4,
        priority_epsilon: float = 1e-6,
    ):
        super().__init__(data_spec, batch_size, capacity, seed, num_steps, gamma)  # the buffer
        self.priority_exponent = priority_exponent
        self.importance_exponent = importance_exponent
        self._priorities = PriorityIndex(
            batch_size, self.capacity // batch_size, num_steps, seed, priority_exponent,
            priority_epsilon,
        )  # fmt: skip

    def annealed_exponent(self, progress: tf.Tensor) -> tf.Tensor:
        """beta: `importance_exponent` at progress 0, linearly to 1 at progress 1."""
        progress = tf.clip_by_value(tf.cast(progress, tf.float64), 0.0, 1.0)
        return self.importance_exponent + (1.0 - self.importance_exponent) * progress

    def update_priorities(self, keys: tf.Tensor, errors: tf.Tensor) -> tf.Tensor:
        """Writes the agent's per-sample errors back; returns a tensor to hang deps on."""
        done = tf.numpy_function(
            self._priorities.update,
            [keys, tf.cast(tf.reshape(errors, [-1]), tf.float64)],
            tf.int64,
            stateful=True,
            name="update_priorities",
        )
        done.set_shape([])
        return done


@gin.configurable("PrioritizedFrameStackReplay", denylist=BUILDER_ARGS)
class PrioritizedFrameStackReplay(_Prioritized, FrameStackReplay):
    """`FrameStackReplay` whose training batches are drawn by priority (module docstring)."""

    def _after_write(self, start: int, step_types: np.ndarray) -> None:
        self._priorities.written(start, step_types)

    def sample_prioritized(
        self, sample_batch_size: int, progress: tf.Tensor, transitions: bool
    ) -> tuple[Any, tf.Tensor, tf.Tensor]:
        """(batch, keys, importance weights): windows, or n-step transitions built from their
        two end stacks only (as `sample_transition`)."""
        out = tf.numpy_function(
            self._sample_flat_prioritized,
            [tf.constant(sample_batch_size, tf.int64), transitions,
             self.annealed_exponent(progress)],
            [spec.dtype for _, spec, _ in self._leaves] + [tf.int64, tf.float32],
            stateful=True,
            name="prioritized_frame_stack_sample",
        )  # fmt: skip
        keys, weights = out[-2], out[-1]
        keys.set_shape([sample_batch_size])
        weights.set_shape([sample_batch_size])
        window = self._pack_sampled(out[:-2], sample_batch_size, ends_only=transitions)
        if transitions:
            return n_step_transition(window, self.gamma), keys, weights
        return window, keys, weights

    def _sample_flat_prioritized(
        self, n: np.integer, ends_only: np.bool_, importance_exponent: np.floating
    ) -> list[np.ndarray]:
        with self._lock:
            lanes, items, keys, weights = self._priorities.draw(
                int(n), float(importance_exponent), valid=self._valid
            )
            leaves = self.window_numpy(lanes, items, ends_only=bool(ends_only))
        return [*leaves, keys, weights]

    def save(self, directory: Path, contents: bool, previous=None, previous_sums=None):
        known = super().save(directory, contents, previous, previous_sums)
        self._priorities.save(directory, contents)
        return known

    def restore(self, directory: Path, sums: dict[str, str] | None = None) -> bool:
        contents = super().restore(directory, sums)
        self._priorities.restore(directory, contents)
        return contents


@gin.configurable("PrioritizedUniformReplay", denylist=BUILDER_ARGS)
class PrioritizedUniformReplay(_Prioritized, UniformReplay):
    """`UniformReplay` (TF-Agents' buffer) whose training batches are drawn by priority."""

    def add_batch(self, trajectory) -> tf.Tensor:
        added = super().add_batch(trajectory)
        with tf.control_dependencies([added]):
            written = tf.numpy_function(
                self._written, [trajectory.step_type], tf.int64, stateful=True,
                name="prioritized_replay_written",
            )  # fmt: skip
        written.set_shape([])
        return written

    def _written(self, step_type: np.ndarray) -> np.int64:
        self._priorities.written(self._priorities.count, step_type.reshape(-1, 1))
        return np.int64(self._priorities.count)

    def sample_prioritized(
        self, sample_batch_size: int, progress: tf.Tensor, transitions: bool
    ) -> tuple[Any, tf.Tensor, tf.Tensor]:
        lanes, ids, keys, weights = tf.numpy_function(
            lambda n, beta: self._priorities.draw(int(n), float(beta)),
            [tf.constant(sample_batch_size, tf.int64), self.annealed_exponent(progress)],
            [tf.int64, tf.int64, tf.int64, tf.float32],
            stateful=True,
            name="prioritized_replay_draw",
        )
        for tensor in (lanes, ids, keys, weights):
            tensor.set_shape([sample_batch_size])
        window = self.window(lanes, ids)
        if transitions:
            return n_step_transition(window, self.gamma), keys, weights
        return window, keys, weights

    def save(self, directory: Path, contents: bool, previous=None, previous_sums=None) -> None:
        super().save(directory, contents, previous, previous_sums)
        self._priorities.save(directory, contents)

    def restore(self, directory: Path, sums: dict[str, str] | None = None) -> bool:
        contents = super().restore(directory, sums)
        self._priorities.restore(directory, contents)
        return contents


def is_prioritized(replay: Any) -> bool:
    return isinstance(replay, _Prioritized)


def check_errors_for_priorities(replay, agent) -> None:
    """Prioritized replay needs per-sample errors, which TF-Agents' C51 does not give."""
    if not is_prioritized(replay):
        return
    if isinstance(agent, categorical_dqn_agent.CategoricalDqnAgent) and not hasattr(
        agent, "trains_on_transitions"
    ):
        raise UserError(
            f"train.replay=@{type(replay).__name__} needs per-sample errors, which "
            "@CategoricalDqnAgent does not report: use train.agent=@RainbowAgent (C51 with "
            "them) or a uniform replay"
        )
