"""A sum tree over a fixed number of non-negative priorities, vectorised with NumPy.

Prioritized replay (Schaul et al. 2016, proportional variant) draws item i with probability
p_i / sum(p). A binary tree whose every node holds the sum of its two children answers that in
O(log n) per draw: descend from the root, going right when the draw exceeds the left child's
sum. Here the tree is one float64 array (node k's children are 2k and 2k+1, leaves at
[size, 2 size)), and every operation takes a whole batch of indices at once, one NumPy call
per tree level.

A parent is always recomputed as left + right from its children, never adjusted by a delta,
so the tree is a pure function of its leaves: rebuilding it from saved leaves gives the same
bits as the tree that was saved, which exact resume relies on.
"""

from __future__ import annotations

import numpy as np


class SumTree:
    """`capacity` priorities (all 0 at first) with batched set, get, total and sampling."""

    JUMP_LEVELS = 7  # `find` walks the last 7 levels; one search does the ones above

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"a sum tree needs capacity >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._size = 1 << max(int(self.capacity - 1).bit_length(), 0)  # leaves: a power of 2
        self._depth = self._size.bit_length() - 1
        self._nodes = np.zeros(2 * self._size, np.float64)

    @property
    def total(self) -> float:
        return float(self._nodes[1])

    @property
    def leaves(self) -> np.ndarray:
        """The priorities, read-only (a view: copy it to keep it)."""
        view = self._nodes[self._size : self._size + self.capacity]
        view.flags.writeable = False
        return view

    def get(self, indices: np.ndarray) -> np.ndarray:
        return self._nodes[self._size + np.asarray(indices, np.int64)]

    def set(self, indices: np.ndarray, priorities: np.ndarray, check: bool = True) -> None:
        """Writes `priorities` at `indices` (a repeated index keeps its last value).

        `check=False` skips the range and value checks, for callers whose keys and
        priorities are valid by construction (the replay's index, once per env step).
        """
        indices = np.asarray(indices, np.int64).ravel()
        priorities = np.broadcast_to(np.asarray(priorities, np.float64), indices.shape)
        if indices.size == 0:
            return
        if check:
            if indices.min() < 0 or indices.max() >= self.capacity:
                raise IndexError(f"sum tree index out of [0, {self.capacity})")
            if not np.all(np.isfinite(priorities)) or priorities.min() < 0:
                raise ValueError("priorities must be finite and >= 0")
        nodes = self._nodes
        leaves = self._size + indices
        nodes[leaves] = priorities  # NumPy: the last of repeated indices wins
        if leaves.size <= 4:  # a few paths: scalar steps beat array calls
            for node in {int(leaf) >> 1 for leaf in leaves}:
                while node:
                    nodes[node] = nodes[2 * node] + nodes[2 * node + 1]
                    node >>= 1
            return
        parents = leaves >> 1
        for _ in range(self._depth):  # repeated parents get the same sum twice: harmless
            nodes[parents] = nodes[2 * parents] + nodes[2 * parents + 1]
            parents >>= 1

    def set_leaves(self, priorities: np.ndarray) -> None:
        """Replaces every priority and rebuilds the tree level by level (restore)."""
        priorities = np.asarray(priorities, np.float64)
        if priorities.shape != (self.capacity,):
            raise ValueError(f"expected {self.capacity} priorities, got {priorities.shape}")
        nodes = self._nodes
        nodes[:] = 0.0
        nodes[self._size : self._size + self.capacity] = priorities
        start = self._size
        while start > 1:  # the same left + right sums as `set`, a whole level at a time
            parents = np.arange(start // 2, start)
            nodes[parents] = nodes[2 * parents] + nodes[2 * parents + 1]
            start //= 2

    def find(self, targets: np.ndarray) -> np.ndarray:
        """The leaf whose cumulative range holds each target in [0, total).

        The top of the descent is one search: the running sums of the level `JUMP_LEVELS`
        above the leaves say which of its nodes holds each target; the last levels are
        walked down. A target a rounding error past a subtree's sum never walks into an
        empty (all-zero) subtree: the descent goes right only where the right child holds
        priority, and the search picks only nodes that hold priority.
        """
        targets = np.array(targets, np.float64, copy=True)
        jump = max(self._depth - self.JUMP_LEVELS, 0)
        level = self._nodes[1 << jump : 2 << jump]
        running = np.cumsum(level)
        picked = np.searchsorted(running, targets, side="right")
        held = np.flatnonzero(level > 0)  # past the last sum (rounding): the last that holds
        picked = np.minimum(picked, held[-1] if held.size else level.size - 1)
        targets -= running[picked] - level[picked]
        np.clip(targets, 0.0, None, out=targets)
        nodes = (1 << jump) + picked
        for _ in range(self._depth - jump):
            left = self._nodes[2 * nodes]
            go_right = (targets >= left) & (self._nodes[2 * nodes + 1] > 0)
            targets -= np.where(go_right, left, 0.0)
            nodes = 2 * nodes + go_right
        return nodes - self._size

    def sample_stratified(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` leaves, one from each of n equal slices of [0, total) (Schaul et al. 2016,
        as Dopamine draws them): each draw is still proportional to priority overall."""
        total = self.total
        if not total > 0:
            raise ValueError("sampling from a sum tree whose priorities are all 0")
        targets = (np.arange(n) + rng.random(n)) * (total / n)
        return self.find(np.minimum(targets, np.nextafter(total, 0.0)))
