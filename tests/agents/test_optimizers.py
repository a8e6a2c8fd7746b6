"""TorchAdam follows torch.optim.Adam's update rule (its documented algorithm, in NumPy), and
FusedAdam Keras Adam's, both through one fused kernel per variable."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pipeline.agents.optimizers import FusedAdam, TorchAdam


def torch_adam_reference(start, grads, lr, eps, beta_1=0.9, beta_2=0.999):
    """PyTorch's documented Adam: bias-correct m and v, then add eps to sqrt(v_hat)."""
    x, m, v = start.astype(np.float64), 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g**2
        x = x - lr * (m / (1 - beta_1**t)) / (np.sqrt(v / (1 - beta_2**t)) + eps)
    return x


def run(optimizer, start, grads):
    variable = tf.Variable(start)
    for g in grads:
        optimizer.apply_gradients([(tf.constant(g), variable)])
    return variable.numpy()


def test_torch_adam_matches_the_pytorch_rule_where_keras_adam_does_not():
    rng = np.random.default_rng(0)
    start = rng.normal(size=8).astype(np.float32)
    # Gradients of the size where the two epsilon placements part: near eps / sqrt(1 - b2).
    grads = [(rng.normal(size=8) * 1e-7).astype(np.float32) for _ in range(5)]
    expected = torch_adam_reference(start, grads, lr=1e-2, eps=1e-8)
    ours = run(TorchAdam(learning_rate=1e-2, epsilon=1e-8), start, grads)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    keras = run(tf.keras.optimizers.Adam(learning_rate=1e-2, epsilon=1e-8), start, grads)
    assert np.abs(keras - expected).max() > 1e-3


def test_torch_adam_keeps_keras_options_that_do_not_touch_the_rule():
    grads = [np.full(3, 100.0, np.float32)]
    start = np.zeros(3, np.float32)
    clipped = run(TorchAdam(learning_rate=0.1, global_clipnorm=1.0), start, grads)
    np.testing.assert_allclose(clipped, -0.1, rtol=1e-5)  # first step: lr * sign(g)
    with pytest.raises(ValueError, match="amsgrad"):
        TorchAdam(amsgrad=True)


def test_fused_adam_is_keras_adam_to_float_rounding_and_keeps_its_slots():
    rng = np.random.default_rng(1)
    start = rng.normal(size=(6, 5)).astype(np.float32)
    grads = [rng.normal(size=(6, 5)).astype(np.float32) for _ in range(20)]
    options = dict(learning_rate=1e-2, epsilon=1.5e-4, global_clipnorm=3.0)
    fused, keras = FusedAdam(**options), tf.keras.optimizers.Adam(**options)
    np.testing.assert_allclose(run(fused, start, grads), run(keras, start, grads), atol=1e-6)
    assert [v.shape for v in fused.variables] == [v.shape for v in keras.variables]
    assert int(fused.iterations) == len(grads)


def test_fused_adam_updates_in_one_kernel_per_variable():
    variable = tf.Variable(np.zeros((4, 3), np.float32))
    optimizer = FusedAdam(learning_rate=1e-3)
    step = tf.function(lambda g: optimizer.apply_gradients([(g, variable)]))
    graph = step.get_concrete_function(tf.TensorSpec((4, 3), tf.float32)).graph
    ops = [op.type for op in graph.get_operations()]
    assert ops.count("ResourceApplyAdam") == 1 and "AssignSubVariableOp" not in ops
