"""Channels-last frame stacking shared by the single and the batched Atari paths.

Both paths push their newest preprocessed frame through the same `FrameStacker`, so an
observation means the same thing wherever it came from. The rule, which the replay buffer
relies on: stack(t) holds the newest `stack_size` frames of the current episode, oldest
first, with zeros in place of frames from before the episode's first frame. An "episode"
here is whatever the TF-Agents time steps say: every FIRST step (a real reset, or the
pseudo-reset that follows a life loss in training) restarts the stack as [0, ..., 0, f0],
as Dopamine and SB3 do.
"""

from __future__ import annotations

import sys

import numpy as np


class FrameStacker:
    """Keeps `(lanes, height, width, stack_size)` uint8 stacks, one lane per environment.

    `push` returns a new array every time and never writes into one it returned before, so
    callers (drivers, replay observers) may keep observations without copying them.
    """

    def __init__(self, num_lanes: int, frame_shape: tuple[int, int], stack_size: int = 4):
        if stack_size < 1:
            raise ValueError(f"stack_size must be at least 1, got {stack_size}")
        self.num_lanes = num_lanes
        self.frame_shape = tuple(frame_shape)
        self.stack_size = stack_size
        self.observation_shape = (*self.frame_shape, stack_size)
        # Four uint8 channels are one little-endian uint32 per pixel: dropping the oldest
        # channel is a right shift by 8 bits, about ten times faster than a strided copy.
        self._packed = stack_size == 4 and sys.byteorder == "little"
        self._all_first = np.ones(num_lanes, dtype=bool)
        self._stack = np.zeros((num_lanes, *self.observation_shape), dtype=np.uint8)
        self._words = np.zeros((num_lanes, *self.frame_shape), dtype=np.uint32)

    def get_state(self) -> dict[str, np.ndarray]:
        """The stacks so far, for a checkpoint (copies: later pushes do not change them)."""
        return {"stack": self._stack.copy(), "words": self._words.copy()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self._stack = np.array(state["stack"], dtype=np.uint8)
        self._words = np.array(state["words"], dtype=np.uint32)

    def push(self, frames: np.ndarray, first: np.ndarray | None = None) -> np.ndarray:
        """Appends `frames` (lanes, height, width) and returns the stacks as a new array.

        `first` (lanes,) bool marks lanes whose episode starts with this frame; their older
        channels become zeros. `None` means every lane starts afresh.
        """
        if first is None:
            first = self._all_first
        if self._packed:
            return self._push_packed(frames, first)
        stack = np.empty_like(self._stack)
        stack[..., :-1] = self._stack[..., 1:]
        stack[..., -1] = frames
        if first.any():
            stack[first, ..., :-1] = 0
        self._stack = stack
        return stack

    def _push_packed(self, frames: np.ndarray, first: np.ndarray) -> np.ndarray:
        words = np.left_shift(frames, 24, dtype=np.uint32)  # newest frame in the top byte
        if not first.any():
            words |= self._words >> 8
        elif not first.all():
            keep = ~first
            words[keep] |= self._words[keep] >> 8
        self._words = words
        return words.view(np.uint8).reshape(self.num_lanes, *self.observation_shape)
