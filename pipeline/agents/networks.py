"""Network pieces gin files refer to by name.

The plain Q-networks are TF-Agents' (`@QNetwork`, `@CategoricalQNetwork`, registered by
TF-Agents); this module adds what Atari needs on top (pixels are stored and fed as uint8, 4x
less memory and bandwidth than float32, and scaled to [0, 1] inside the network) and the
dueling Q-network, which TF-Agents does not have.
"""

from __future__ import annotations

import functools
from pathlib import Path

import gin
import numpy as np
import tensorflow as tf
from absl import logging
from tf_agents.networks import encoding_network, network, sequential

from pipeline.errors import UserError


@gin.configurable
class ScaleUint8(tf.keras.layers.Layer):
    """Casts uint8 pixels to float32 in [0, 1], as the first layer of the Nature-CNN Q-network.

    Has no weights, so the target network's copy of it (TF-Agents copies networks by
    re-running their constructor) behaves identically.
    """

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.cast(inputs, tf.float32) / 255.0


class _DuelingNetwork(network.Network):
    """A shared encoder feeding a value stream and an advantage stream (Wang et al. 2016).

    With `atoms=None` the heads give Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a'); with
    `atoms` the same sum is taken per atom on the logits of the return distribution, as
    Rainbow does (Hessel et al. 2018), giving `[batch, actions, atoms]`.
    """

    def __init__(
        self, input_tensor_spec, action_spec, atoms: int | None, preprocessing_layers,
        conv_layer_params, fc_layer_params, stream_fc_layer_params, activation_fn,
        kernel_initializer, dtype, name: str, torch_init: bool = False,
    ):  # fmt: skip
        action_spec = tf.nest.flatten(action_spec)[0]
        self._num_actions = int(action_spec.maximum) - int(action_spec.minimum) + 1
        super().__init__(input_tensor_spec, state_spec=(), name=name)
        self._atoms = atoms
        if dtype == "mixed_bfloat16":
            warn_if_bfloat16_is_emulated(name)
        if torch_init:
            self._encoder = _torch_init_trunk(
                name, input_tensor_spec, preprocessing_layers, conv_layer_params,
                kernel_initializer, fc_layer_params, activation_fn, dtype,
            )  # fmt: skip
        else:
            self._encoder = encoding_network.EncodingNetwork(
                input_tensor_spec,
                preprocessing_layers=preprocessing_layers,
                conv_layer_params=conv_layer_params,
                fc_layer_params=fc_layer_params,
                activation_fn=activation_fn,
                kernel_initializer=kernel_initializer,
                dtype=dtype,
            )
        trunk_units = fc_layer_params[-1] if fc_layer_params else None

        def dense(units: int, fan_in: int | None, activation, layer_dtype):
            if torch_init:
                return torch_dense(units, fan_in, activation, layer_dtype)
            return tf.keras.layers.Dense(
                units, activation, kernel_initializer=kernel_initializer, dtype=layer_dtype
            )

        def stream(units: int, stream_name: str) -> tf.keras.Sequential:
            fan_ins = [trunk_units, *stream_fc_layer_params]
            hidden = [
                dense(n, fan_in, activation_fn, dtype)
                for n, fan_in in zip(stream_fc_layer_params, fan_ins, strict=False)
            ]
            head = dense(units, fan_ins[len(hidden)], None, tf.float32)
            return tf.keras.Sequential([*hidden, head], name=stream_name)

        per_action = atoms or 1
        self._value = stream(per_action, "value")
        self._advantage = stream(self._num_actions * per_action, "advantage")

    def call(self, observation, step_type=None, network_state=(), training=False):
        state, network_state = self._encoder(
            observation, step_type=step_type, network_state=network_state, training=training
        )
        per_action = self._atoms or 1
        value = tf.reshape(self._value(state, training=training), [-1, 1, per_action])
        advantage = tf.reshape(
            self._advantage(state, training=training), [-1, self._num_actions, per_action]
        )
        outputs = value + advantage - tf.reduce_mean(advantage, axis=1, keepdims=True)
        if self._atoms is None:
            outputs = outputs[..., 0]
        return outputs, network_state


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names of native bfloat16 math


def cpu_flags(cpuinfo: Path) -> set[str] | None:
    """The CPU's feature flags (Linux), or None where they cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return None


@functools.cache
def warn_if_bfloat16_is_emulated(name: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """One warning where 'mixed_bfloat16' would be slower than float32: no GPU, and a CPU
    without bfloat16 instructions (oneDNN then converts every operand). Returns whether it
    warned."""
    flags = cpu_flags(cpuinfo)
    if flags is None or flags & set(BF16_CPU_FLAGS) or tf.config.list_physical_devices("GPU"):
        return False
    logging.warning(
        "%s.dtype='mixed_bfloat16': this CPU has no bfloat16 instructions (%s), so the 16-bit "
        "math is emulated and slower than float32; bind %s.dtype='float32' to train faster",
        name, " or ".join(BF16_CPU_FLAGS), name,
    )  # fmt: skip
    return True


_DTYPE_DOC = """`dtype` may be a Keras mixed-precision policy ('mixed_bfloat16' on CPUs with
        AVX512_BF16, 'mixed_float16' on GPUs): the encoder and stream hidden layers then
        compute in 16 bits with float32 weights, and the two heads stay float32, so the
        outputs (and every loss the agents compute from them) are float32."""


_TORCH_INIT_DOC = """

        `torch_init=True` starts every dense layer, biases included, as PyTorch's
        `nn.Linear` does (`TorchLinearInit`), the start of `TorchInitQNetwork`; MLP trunks only
        (no convolutions or preprocessing layers), and `kernel_initializer` must stay unset."""


@gin.configurable
class DuelingQNetwork(_DuelingNetwork):
    """Dueling Q-network (Wang et al. 2016): Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a').

    A shared encoder (optional preprocessing, convolutions, `fc_layer_params`) feeds two
    streams, each with its own hidden layers (`stream_fc_layer_params`) and a linear head:
    value (one unit) and advantage (one per action). Subtracting the mean advantage makes
    the split identifiable: V is the mean of Q over actions.
    """

    def __init__(
        self,
        input_tensor_spec,
        action_spec,
        preprocessing_layers=None,
        conv_layer_params=None,
        fc_layer_params=(256, 256),
        stream_fc_layer_params=(),
        activation_fn=tf.keras.activations.relu,
        kernel_initializer=None,
        dtype: str | tf.DType = tf.float32,
        name: str = "DuelingQNetwork",
        torch_init: bool = False,
    ):
        super().__init__(
            input_tensor_spec, action_spec, None, preprocessing_layers, conv_layer_params,
            fc_layer_params, stream_fc_layer_params, activation_fn, kernel_initializer, dtype,
            name, torch_init,
        )  # fmt: skip

    __init__.__doc__ = _DTYPE_DOC + _TORCH_INIT_DOC


@gin.configurable
class DuelingCategoricalQNetwork(_DuelingNetwork):
    """The dueling split on C51's logits (Rainbow): `[batch, actions, num_atoms]` logits
    = V(s) + A(s, a) - mean_a' A(s, a'), per atom. For `@RainbowAgent` and
    `@CategoricalDqnAgent`, which read `num_atoms` from it."""

    def __init__(
        self,
        input_tensor_spec,
        action_spec,
        num_atoms: int = 51,
        preprocessing_layers=None,
        conv_layer_params=None,
        fc_layer_params=(256, 256),
        stream_fc_layer_params=(),
        activation_fn=tf.keras.activations.relu,
        kernel_initializer=None,
        dtype: str | tf.DType = tf.float32,
        name: str = "DuelingCategoricalQNetwork",
    ):
        super().__init__(
            input_tensor_spec, action_spec, num_atoms, preprocessing_layers,
            conv_layer_params, fc_layer_params, stream_fc_layer_params, activation_fn,
            kernel_initializer, dtype, name,
        )  # fmt: skip

    __init__.__doc__ = _DTYPE_DOC

    @property
    def num_atoms(self) -> int:
        return self._atoms


class TorchLinearInit(tf.keras.initializers.Initializer):
    """U(-1/sqrt(fan_in), +1/sqrt(fan_in)): `torch.nn.Linear`'s default for kernel and bias.

    The bias's shape does not say its layer's fan-in, so it is given; one instance per layer
    (Keras 2.15 gives every layer sharing an unseeded instance the same draw).
    """

    def __init__(self, fan_in: int):
        self.fan_in = int(fan_in)

    def __call__(self, shape, dtype=None, **kwargs):
        limit = self.fan_in**-0.5
        return tf.random.uniform(shape, -limit, limit, dtype=dtype or tf.float32)

    def get_config(self) -> dict:
        return {"fan_in": self.fan_in}


@gin.configurable
def TorchInitQNetwork(  # noqa: N802 (a network class to gin files, like QNetwork)
    input_tensor_spec,
    action_spec,
    fc_layer_params: tuple[int, ...] = (256, 256),
    activation_fn=tf.keras.activations.relu,
):
    """An MLP Q-network initialised as PyTorch (and so SB3, CleanRL) initialise theirs.

    TF-Agents' `QNetwork` starts every bias at zero and its output layer at U(-0.03, 0.03)
    with bias -0.2; PyTorch's `nn.Linear` draws kernel and bias from U(+-1/sqrt(fan_in)) in
    every layer, output included. Same architecture, different start: this one is the
    start the SB3 comparison is made from.
    """
    action_spec = tf.nest.flatten(action_spec)[0]
    num_actions = int(action_spec.maximum) - int(action_spec.minimum) + 1

    layers, fan_in = _torch_mlp(input_tensor_spec, fc_layer_params, activation_fn)
    layers.append(torch_dense(num_actions, fan_in, None))
    return sequential.Sequential(layers, input_spec=input_tensor_spec, name="TorchInitQNetwork")


def torch_dense(units: int, fan_in: int, activation, dtype=None) -> tf.keras.layers.Dense:
    """A dense layer whose kernel and bias start as `torch.nn.Linear(fan_in, units)`'s."""
    return tf.keras.layers.Dense(
        units,
        activation,
        kernel_initializer=TorchLinearInit(fan_in),
        bias_initializer=TorchLinearInit(fan_in),
        dtype=dtype,
    )


def _torch_mlp(input_tensor_spec, fc_layer_params, activation_fn, dtype=None):
    """Flatten + PyTorch-initialised dense layers; returns them and the last width."""
    layers: list = [tf.keras.layers.Flatten(dtype=dtype)]
    fan_in = int(np.prod(input_tensor_spec.shape))
    for units in fc_layer_params:
        layers.append(torch_dense(units, fan_in, activation_fn, dtype))
        fan_in = units
    return layers, fan_in


def _torch_init_trunk(
    name, input_tensor_spec, preprocessing_layers, conv_layer_params, kernel_initializer,
    fc_layer_params, activation_fn, dtype,
) -> sequential.Sequential:  # fmt: skip
    """The dueling trunk with `torch_init`: an MLP only, refused with one line otherwise."""
    if preprocessing_layers is not None or conv_layer_params or kernel_initializer is not None:
        raise UserError(
            f"{name}.torch_init=True starts dense layers as PyTorch does and covers MLP trunks "
            f"only: unset {name}.preprocessing_layers, conv_layer_params and "
            "kernel_initializer, or drop torch_init"
        )
    if not fc_layer_params:
        raise UserError(f"{name}.torch_init=True needs a trunk: set {name}.fc_layer_params")
    layers, _ = _torch_mlp(input_tensor_spec, fc_layer_params, activation_fn, dtype)
    return sequential.Sequential(layers, input_spec=input_tensor_spec, name="trunk")
