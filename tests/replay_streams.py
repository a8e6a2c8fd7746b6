"""Synthetic replay streams shared by the replay tests: what a batched env with auto-reset emits.

Random episode lengths, termination and truncation; frames stacked by an independent
deque-based reference; trajectories formed as a TF-Agents driver would.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import policy_step, trajectory
from tf_agents.trajectories import time_step as ts

FIRST, MID, LAST = int(ts.StepType.FIRST), int(ts.StepType.MID), int(ts.StepType.LAST)
NUM_ACTIONS = 6
EPISODE_LENGTHS = [1, 1, 2, 2, 3, 4, 6, 9, 15]  # transitions per episode; short ones dominate


def collect_spec(frame_shape=(6, 5), k=4, num_actions=NUM_ACTIONS) -> trajectory.Trajectory:
    """`agent.collect_data_spec` of a DQN agent on uint8 frame stacks."""
    obs = tensor_spec.BoundedTensorSpec((*frame_shape, k), tf.uint8, 0, 255)
    action = tensor_spec.BoundedTensorSpec((), tf.int64, 0, num_actions - 1)
    step_spec = ts.time_step_spec(obs)
    return trajectory.from_transition(step_spec, policy_step.PolicyStep(action, (), ()), step_spec)


class Stream:
    """Per-lane time steps and the driver's trajectories, as `[lanes, time, ...]` arrays."""

    def __init__(self, rng: np.random.Generator, lanes: int, steps: int, k: int, frame_shape):
        n = steps + 1  # time steps; trajectory t pairs time steps t and t+1
        self.step_type = np.zeros((lanes, n), np.int32)
        self.reward = np.zeros((lanes, n), np.float32)
        self.discount = np.ones((lanes, n), np.float32)
        for b in range(lanes):
            t = 0
            while t < n:
                length = int(rng.choice(EPISODE_LENGTHS))
                terminated = rng.random() < 0.5  # else truncated: LAST with discount 1
                for i in range(length + 1):
                    if t == n:
                        break
                    self.step_type[b, t] = FIRST if i == 0 else LAST if i == length else MID
                    if i > 0:
                        self.reward[b, t] = rng.normal()
                    if i == length and terminated:
                        self.discount[b, t] = 0.0
                    t += 1
        self.frames = rng.integers(0, 256, (lanes, n, *frame_shape), dtype=np.uint8)
        self.stacks = np.zeros((lanes, n, *frame_shape, k), np.uint8)
        for b in range(lanes):  # the env's stacking rule, written independently of the buffer
            stack: collections.deque = collections.deque(maxlen=k)
            for t in range(n):
                if self.step_type[b, t] == FIRST:
                    stack.extend([np.zeros(frame_shape, np.uint8)] * k)
                stack.append(self.frames[b, t])
                self.stacks[b, t] = np.stack(stack, axis=-1)
        self.actions = rng.integers(0, NUM_ACTIONS, (lanes, n), dtype=np.int64)
        self.items = steps
        self.key = {self.frames[b, t].tobytes(): (b, t) for b in range(lanes) for t in range(n)}
        assert len(self.key) == lanes * n, "random frames collided; pick another seed"

    def trajectories(self, start: int, stop: int) -> trajectory.Trajectory:
        """Items start..stop-1 of every lane, `[lanes, T, ...]`: what a driver hands observers."""
        s, nxt = slice(start, stop), slice(start + 1, stop + 1)
        return trajectory.Trajectory(
            step_type=self.step_type[:, s],
            observation=self.stacks[:, s],
            action=self.actions[:, s],
            policy_info=(),
            next_step_type=self.step_type[:, nxt],
            reward=self.reward[:, nxt],
            discount=self.discount[:, nxt],
        )

    def item_fields(self, lanes: np.ndarray, items: np.ndarray) -> trajectory.Trajectory:
        return tf.nest.map_structure(lambda x: x[lanes, items], self.trajectories(0, self.items))

    def valid_starts(self, written: int, ring: int, k: int) -> set[tuple[int, int]]:
        """Items t a sample may start at, by brute force over the needed history."""
        oldest = max(0, written - ring)
        valid = set()
        for b in range(self.step_type.shape[0]):
            st = self.step_type[b]
            for t in range(oldest, written - 1):
                if st[t] == LAST:  # LAST -> FIRST is a boundary, not a transition
                    continue
                needed = [
                    s for s in range(t - k + 1, t + 1) if FIRST not in st[max(s + 1, 0) : t + 1]
                ]
                if min(needed) >= oldest:  # the ring still holds every frame the stack needs
                    valid.add((b, t))
        return valid
