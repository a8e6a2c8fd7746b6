"""Schedules for exploration and similar knobs, evaluated on the environment-step counter."""

from __future__ import annotations

import gin
import tensorflow as tf


@gin.configurable
class LinearSchedule:
    """Goes linearly from `start` to `end` over `decay_steps` environment steps, then holds."""

    def __init__(self, start: float = 1.0, end: float = 0.05, decay_steps: int = 10_000):
        if decay_steps <= 0:
            raise ValueError(f"LinearSchedule.decay_steps must be positive, got {decay_steps}")
        self.start, self.end, self.decay_steps = float(start), float(end), int(decay_steps)

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        fraction = tf.minimum(tf.cast(step, tf.float32) / float(self.decay_steps), 1.0)
        return self.start + fraction * (self.end - self.start)


@gin.configurable
class ConstantSchedule:
    def __init__(self, value: float = 0.1):
        self.value = float(value)

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        del step
        return tf.constant(self.value, tf.float32)
