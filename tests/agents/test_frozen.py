"""Evaluation on weights cast once (`FrozenGreedy`): the same Q-values and actions, bit for bit."""

from __future__ import annotations

from pathlib import Path

import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from pipeline import config
from pipeline.agents.frozen import FrozenGreedy, mixed_precision_dtype
from pipeline.agents.networks import DuelingQNetwork, ScaleUint8
from pipeline.loops import off_policy

OBSERVATION = tensor_spec.BoundedTensorSpec((84, 84, 4), tf.uint8, 0, 255)
ACTION = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 3)


def _greedy(dtype: str):
    from tf_agents.policies import greedy_policy, q_policy

    tf.keras.utils.set_random_seed(0)
    network = DuelingQNetwork(
        OBSERVATION,
        ACTION,
        preprocessing_layers=ScaleUint8(),
        conv_layer_params=((32, 8, 4), (64, 4, 2), (64, 3, 1)),
        fc_layer_params=(512,),
        dtype=dtype,
    )
    network.create_variables(OBSERVATION)
    policy = q_policy.QPolicy(ts.time_step_spec(OBSERVATION), ACTION, q_network=network)
    return network, greedy_policy.GreedyPolicy(policy)


def _frames(batch: int, seed: int) -> tf.Tensor:
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, 256, (batch, 84, 84, 4), dtype=np.uint8))


def test_the_frozen_copy_gives_the_mixed_networks_q_values_bit_for_bit():
    network, greedy = _greedy("mixed_bfloat16")
    assert FrozenGreedy.serves(greedy)
    frozen = FrozenGreedy(greedy)
    frozen.sync()
    trunk = [v for v in frozen.network.variables if v.dtype == tf.bfloat16]
    heads = [v for v in frozen.network.variables if v.dtype == tf.float32]
    assert len(trunk) == 8 and len(heads) == 4  # 3 convs + dense in bfloat16; float32 heads
    compiled = [
        tf.function(lambda x, net=net: net(x)[0]).get_concrete_function(
            tf.TensorSpec([None, 84, 84, 4], tf.uint8)
        )
        for net in (network, frozen.network)
    ]
    for batch in (1, 3, 8, 32):
        frames = _frames(batch, batch)
        mixed, cast_once = (f(frames).numpy() for f in compiled)
        np.testing.assert_array_equal(cast_once, mixed)
        step = ts.restart(frames, batch_size=batch)
        np.testing.assert_array_equal(
            frozen.policy.action(step).action.numpy(), greedy.action(step).action.numpy()
        )

    # New weights reach the copy at `sync`, not before.
    for variable in network.trainable_variables:
        variable.assign(variable * 1.5 + 0.01)
    frames = _frames(4, 99)
    assert not np.array_equal(frozen.network(frames)[0].numpy(), network(frames)[0].numpy())
    frozen.sync()
    np.testing.assert_array_equal(frozen.network(frames)[0].numpy(), network(frames)[0].numpy())


def test_only_mixed_precision_q_policies_are_served():
    _, float32 = _greedy("float32")
    assert mixed_precision_dtype(float32.wrapped_policy._q_network) is None
    assert not FrozenGreedy.serves(float32)
    with pytest.raises(ValueError, match="not a mixed-precision network"):
        FrozenGreedy(float32)


def test_drq_evaluates_on_the_frozen_copy_synced_at_each_evaluation(tmp_path: Path):
    """drq_breakout.gin (mixed_bfloat16) evaluates on the copy; `eval_policy_at` syncs it, so
    the evaluation acts on the weights of that moment."""
    try:
        config.parse(["drq_breakout.gin"], ["train.replay_capacity=2000"])
        run = off_policy.Experiment(tmp_path / "run")
    finally:
        gin.clear_config()
    assert run._frozen is not None
    online = run.agent._q_network
    for variable in online.trainable_variables:
        variable.assign(variable + 0.01)
    frames = _frames(2, 5)
    run.eval_policy_at(0)
    np.testing.assert_array_equal(run._frozen.network(frames)[0].numpy(), online(frames)[0].numpy())
    run.evaluator.close()
    run.train_env.close()
