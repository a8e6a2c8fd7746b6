"""Schedules for exploration and similar knobs, evaluated on the environment-step counter."""

from __future__ import annotations

import gin
import tensorflow as tf


@gin.configurable
class LinearSchedule:
    """Holds `start` for `delay_steps`, goes linearly to `end` over `decay_steps`, then holds.

    All in environment steps. `delay_steps` is Dopamine's warm-up: its epsilon stays at 1.0
    during the random start (`min_replay_history`) and only then decays.
    """

    def __init__(
        self,
        start: float = 1.0,
        end: float = 0.05,
        decay_steps: int = 10_000,
        delay_steps: int = 0,
    ):
        if decay_steps <= 0:
            raise ValueError(f"LinearSchedule.decay_steps must be positive, got {decay_steps}")
        if delay_steps < 0:
            raise ValueError(f"LinearSchedule.delay_steps must be >= 0, got {delay_steps}")
        self.start, self.end, self.decay_steps = float(start), float(end), int(decay_steps)
        self.delay_steps = int(delay_steps)

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        elapsed = tf.maximum(tf.cast(step, tf.float32) - float(self.delay_steps), 0.0)
        fraction = tf.minimum(elapsed / float(self.decay_steps), 1.0)
        return self.start + fraction * (self.end - self.start)


@gin.configurable
class ConstantSchedule:
    def __init__(self, value: float = 0.1):
        self.value = float(value)

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        del step
        return tf.constant(self.value, tf.float32)
