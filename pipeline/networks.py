"""Network pieces gin files refer to by name.

The Q-networks themselves are TF-Agents' (`@QNetwork`, already registered by TF-Agents);
this module adds what Atari needs on top: pixels are stored and fed as uint8 (4x less
memory and bandwidth than float32) and scaled to [0, 1] inside the network.
"""

from __future__ import annotations

import gin
import tensorflow as tf


@gin.configurable
class ScaleUint8(tf.keras.layers.Layer):
    """Casts uint8 pixels to float32 in [0, 1], as the first layer of the Nature-CNN Q-network.

    Has no weights, so the target network's copy of it (TF-Agents copies networks by
    re-running their constructor) behaves identically.
    """

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.cast(inputs, tf.float32) / 255.0
