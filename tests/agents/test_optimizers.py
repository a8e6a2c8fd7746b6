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


def clip_by_global_norm(grads: list[np.ndarray], clip: float) -> list[np.ndarray]:
    """All of one step's gradients scaled together by clip / their joint norm, when above."""
    norm = np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in grads))
    return [g.astype(np.float64) * min(1.0, clip / norm) for g in grads]


def test_torch_adam_clips_all_gradients_by_their_global_norm():
    """gin/dqn_cartpole.gin binds TorchAdam.global_clipnorm = 10 (SB3's max_grad_norm). Adam's
    first step is lr * sign(g) clipped or not; from the second on, m and v mix the steps' sizes,
    so the weights differ with the clipping, and with a per-variable one (step 3)."""
    steps = [  # per step: the gradients of two variables
        [np.array([30.0, -40.0, 0.0]), np.array([0.0, 0.0])],  # joint norm 50: scaled 1/50
        [np.array([-0.3, 0.2, 0.1]), np.array([0.2, -0.1])],  # norm 0.44: kept
        [np.array([3.0, 1.0, -2.0]), np.array([-6.0, 2.0])],  # norm 7.5: scaled, jointly
    ]
    steps = [[g.astype(np.float32) for g in grads] for grads in steps]
    starts = [np.zeros(3, np.float32), np.zeros(2, np.float32)]

    def reference(clipped_steps):
        return [
            torch_adam_reference(start, [grads[i] for grads in clipped_steps], lr=0.1, eps=1e-8)
            for i, start in enumerate(starts)
        ]

    expected = reference([clip_by_global_norm(grads, 1.0) for grads in steps])
    unclipped = reference(steps)
    per_variable = reference([[clip_by_global_norm([g], 1.0)[0] for g in gs] for gs in steps])
    optimizer = TorchAdam(learning_rate=0.1, epsilon=1e-8, global_clipnorm=1.0)
    variables = [tf.Variable(start) for start in starts]
    for grads in steps:
        optimizer.apply_gradients(list(zip(map(tf.constant, grads), variables, strict=True)))
    for variable, want, plain, alone in zip(
        variables, expected, unclipped, per_variable, strict=True
    ):
        np.testing.assert_allclose(variable.numpy(), want, rtol=0, atol=1e-5)  # float32
        # the check can fail: without the clipping, or clipping each variable alone, the
        # weights would be 100x the tolerance away
        assert np.abs(plain - want).max() > 1e-3 and np.abs(alone - want).max() > 1e-3


def test_torch_adam_refuses_amsgrad():
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
