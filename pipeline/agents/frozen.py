"""The greedy policy of an evaluation on weights stored in the network's compute dtype.

A Keras mixed-precision layer ('mixed_bfloat16' in drq_breakout.gin) keeps float32 weights
and casts them to its compute dtype at every call. For training that cast is part of the
update, but an evaluation calls the network tens of thousands of times on weights that do
not change: on the Nature CNN the cast was 0.39 ms of a 1 ms batch-1 call (most of them carry
one to a few rows). `FrozenGreedy` keeps a copy of the Q-network whose weights are held in
the compute dtype, refreshed by `sync()` before each evaluation, and a greedy policy on it.

The copy computes bit for bit what the original does: the same ops on the same bfloat16
values (a cast of the float32 weights, made once instead of per call); the float32 heads
stay float32. `tests/agents/test_frozen.py` compares their Q-values and actions.
"""

from __future__ import annotations

import tensorflow as tf
from tf_agents.networks import network
from tf_agents.policies import greedy_policy, q_policy, tf_policy

_COMPUTE_DTYPE = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def mixed_precision_dtype(q_network: network.Network) -> str | None:
    """The compute dtype of a network built with a Keras mixed-precision policy, else None."""
    dtype = getattr(q_network, "_saved_kwargs", {}).get("dtype")
    return _COMPUTE_DTYPE.get(dtype) if isinstance(dtype, str) else None


class FrozenGreedy:
    """A greedy `QPolicy` on a compute-dtype copy of `policy`'s Q-network; `sync()` copies
    the current weights into it (call it before each evaluation)."""

    def __init__(self, policy: greedy_policy.GreedyPolicy):
        inner = policy.wrapped_policy
        source = inner._q_network
        dtype = mixed_precision_dtype(source)
        if dtype is None:
            raise ValueError(f"{source.name} is not a mixed-precision network")
        self.network = source.copy(dtype=dtype, name=f"{source.name}_frozen")
        self.network.create_variables(source.input_tensor_spec)
        pairs = list(zip(self.network.variables, source.variables, strict=True))
        for copy, original in pairs:
            if copy.shape != original.shape:
                raise ValueError(f"{copy.name} {copy.shape} does not match {original.name}")
        self._sync = tf.function(
            lambda: [copy.assign(tf.cast(original, copy.dtype)) for copy, original in pairs],
            autograph=False,
        )
        self.policy = greedy_policy.GreedyPolicy(
            q_policy.QPolicy(
                inner.time_step_spec,
                inner.action_spec,
                q_network=self.network,
                emit_log_probability=inner.emit_log_probability,
                observation_and_action_constraint_splitter=(
                    inner.observation_and_action_constraint_splitter
                ),
            )
        )

    def sync(self) -> None:
        self._sync()

    @staticmethod
    def serves(policy: tf_policy.TFPolicy) -> bool:
        """Whether `policy` is a greedy QPolicy over a mixed-precision network."""
        inner = getattr(policy, "wrapped_policy", None)
        return (
            isinstance(policy, greedy_policy.GreedyPolicy)
            and type(inner) is q_policy.QPolicy
            and mixed_precision_dtype(inner._q_network) is not None
        )
