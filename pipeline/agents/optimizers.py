"""Adam variants: Keras' rule in one fused kernel (FusedAdam), and PyTorch's rule (TorchAdam).

Keras' Adam updates each variable with about ten separate element-wise ops (each a pass over
the weights: 1.7M of them in the Atari Q-network); TF's `ResourceApplyAdam` kernel does the
same arithmetic in one pass. TorchAdam, for comparisons with PyTorch pipelines (SB3, CleanRL),
keeps the op-by-op form its CartPole figures were measured with.
"""

from __future__ import annotations

import gin
import tensorflow as tf


@gin.configurable
class FusedAdam(tf.keras.optimizers.Adam):
    """Keras' Adam rule, theta -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps), computed
    by `ResourceApplyAdam` for dense gradients (sparse ones and amsgrad take Keras' path)."""

    def update_step(self, gradient, variable):
        if isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._index_dict[self._var_key(variable)]
        return tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(self.learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=gradient,
            use_locking=False,
        )


@gin.configurable
class TorchAdam(tf.keras.optimizers.Adam):
    """Adam with epsilon added after the bias correction, as `torch.optim.Adam` adds it.

    Keras adds epsilon to the uncorrected sqrt(v), which is the same as PyTorch with
    epsilon / sqrt(1 - beta_2^t): 32x larger at the first update, 1.6x at the 1,000th.
    Coordinates with gradients near that size barely move in Keras but take full steps in
    PyTorch. Measured on one CartPole batch: after 3 updates the weights of Keras Adam and
    PyTorch Adam differ by up to 3.4e-3 (more than one learning-rate step), this class and
    PyTorch by 3.6e-6 (float32 rounding).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.amsgrad:
            raise ValueError("TorchAdam does not implement amsgrad")

    def update_step(self, gradient, variable):
        if isinstance(gradient, tf.IndexedSlices):
            gradient = tf.convert_to_tensor(gradient)
        lr = tf.cast(self.learning_rate, variable.dtype)
        step = tf.cast(self.iterations + 1, variable.dtype)
        beta_1_power = tf.pow(tf.cast(self.beta_1, variable.dtype), step)
        beta_2_power = tf.pow(tf.cast(self.beta_2, variable.dtype), step)
        index = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[index], self._velocities[index]
        m.assign_add((gradient - m) * (1 - self.beta_1))
        v.assign_add((tf.square(gradient) - v) * (1 - self.beta_2))
        denominator = tf.sqrt(v / (1 - beta_2_power)) + self.epsilon
        variable.assign_sub(lr / (1 - beta_1_power) * m / denominator)
