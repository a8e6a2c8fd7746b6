"""A target synced after every update: one pass of the next states, the same updates to the bit."""

from __future__ import annotations

from pathlib import Path

import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.agents.categorical_dqn import categorical_dqn_agent
from tf_agents.agents.dqn import dqn_agent
from tf_agents.networks import q_network
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from pipeline import config
from pipeline.agents.build import build_dqn_family
from pipeline.agents.rainbow import RainbowAgent
from pipeline.agents.synced_target import sync_target, with_synced_target
from pipeline.loops import off_policy
from pipeline.run import rundir
from tests.conftest import TINY_RUN

OBSERVATION = tensor_spec.TensorSpec((4,), tf.float32)
ACTION = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 2)
BATCH = 16


def built(agent_class, period: int = 1, tau: float = 1.0) -> dqn_agent.DqnAgent:
    """The agent as the DQN loop builds it, with these target settings (gin, as a gin file)."""
    gin.bind_parameter("DqnAgent.target_update_period", period)
    gin.bind_parameter("DqnAgent.target_update_tau", tau)
    tf.keras.utils.set_random_seed(0)  # both agents of a comparison start alike
    return build_dqn_family(
        agent_class,
        lambda obs, act: q_network.QNetwork(obs, act, fc_layer_params=(8,)),
        lambda: tf.keras.optimizers.Adam(1e-2),
        ts.time_step_spec(OBSERVATION),
        ACTION,
        epsilon=lambda: 0.1,
        train_step_counter=tf.Variable(0, dtype=tf.int64),
    )


def batches(count: int) -> list[trajectory.Trajectory]:
    """Two-step windows with terminals and ties-free random values."""
    rng = np.random.default_rng(1)
    out = []
    for _ in range(count):
        discount = (rng.random((BATCH, 2)) > 0.3).astype(np.float32)
        out.append(
            trajectory.Trajectory(
                step_type=tf.fill([BATCH, 2], ts.StepType.MID),
                observation=tf.constant(rng.normal(size=(BATCH, 2, 4)), tf.float32),
                action=tf.constant(rng.integers(0, 3, (BATCH, 2)), tf.int64),
                policy_info=(),
                next_step_type=tf.fill([BATCH, 2], ts.StepType.MID),
                reward=tf.constant(rng.normal(size=(BATCH, 2)), tf.float32),
                discount=tf.constant(discount),
            )
        )
    return out


def matmuls_in_update(agent) -> int:
    """MatMul ops in the traced update: each pass through the 2-layer MLP adds 2."""
    graph = tf.function(agent.train, autograph=False).get_concrete_function(batches(1)[0]).graph
    return sum(op.type == "MatMul" for op in graph.get_operations())


@pytest.mark.parametrize("agent_class", [dqn_agent.DqnAgent, dqn_agent.DdqnAgent])
def test_synced_target_reads_next_states_once_and_updates_identically(agent_class):
    once = built(agent_class)
    assert once.reads_next_states_once
    twice = built(agent_class)
    twice._target_synced = False  # TF-Agents' own passes through target and online network
    for ours, theirs in zip(once.variables, twice.variables, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    # TF-Agents passes s' through the network twice (DQN: target values, then the target's
    # greedy action; double DQN: target values, then the online greedy action); once here.
    assert matmuls_in_update(twice) - matmuls_in_update(once) == 2

    for batch in batches(6):
        assert float(once.train(batch).loss) == float(twice.train(batch).loss)
    for ours, theirs in zip(once._q_network.variables, twice._q_network.variables, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert int(once.train_step_counter.numpy()) == 6


@pytest.mark.parametrize("period, tau", [(2, 1.0), (1, 0.5)])
def test_a_target_that_lags_keeps_tf_agents_passes(period: int, tau: float):
    agent = built(dqn_agent.DdqnAgent, period, tau)
    assert not agent.reads_next_states_once


def test_only_tf_agents_dqn_updates_get_the_shortcut():
    assert with_synced_target(dqn_agent.DdqnAgent).__name__ == "DdqnAgent"
    assert with_synced_target(dqn_agent.DdqnAgent) is with_synced_target(dqn_agent.DdqnAgent)
    # C51 and Rainbow compute their own targets from the target network's distribution.
    for agent_class in (categorical_dqn_agent.CategoricalDqnAgent, RainbowAgent):
        assert with_synced_target(agent_class) is agent_class


def test_an_action_mask_keeps_tf_agents_passes():
    """The greedy action must respect the mask, which a plain max over Q would not."""
    agent = built(dqn_agent.DdqnAgent)
    agent._observation_and_action_constraint_splitter = lambda observation: (observation, None)
    assert not agent.reads_next_states_once


def values(variables) -> list[np.ndarray]:
    return [v.numpy() for v in variables]


def test_updates_that_read_no_target_leave_the_copy_to_sync_target():
    agent = built(dqn_agent.DdqnAgent)
    start = values(agent._target_q_network.variables)
    for batch in batches(3):
        agent.train(batch)
    online = values(agent._q_network.variables)
    assert not all(np.array_equal(a, b) for a, b in zip(online, start, strict=True))
    # TF-Agents would have copied the online weights after each of the three updates.
    for before, now in zip(start, values(agent._target_q_network.variables), strict=True):
        np.testing.assert_array_equal(now, before)
    sync_target(agent)
    for theirs, ours in zip(online, values(agent._target_q_network.variables), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_a_target_that_the_updates_read_is_copied_after_each_update():
    agent = built(dqn_agent.DdqnAgent, period=1, tau=0.5)
    start = values(agent._target_q_network.variables)
    agent.train(batches(1)[0])
    moved = values(agent._target_q_network.variables)
    assert not all(np.array_equal(a, b) for a, b in zip(moved, start, strict=True))
    sync_target(agent)  # nothing deferred: the soft update stays as it was
    for before, now in zip(moved, values(agent._target_q_network.variables), strict=True):
        np.testing.assert_array_equal(now, before)


def test_checkpoints_hold_the_online_weights_as_the_target(tmp_path: Path):
    """What TF-Agents' copy after every update would have left in the checkpoint."""
    try:
        config.parse(
            ["dqn_cartpole.gin"], [*TINY_RUN, "train.checkpoint_interval=700",
                                   "DqnAgent.target_update_period=1"],
        )  # fmt: skip
        run = off_policy.Experiment(tmp_path / "run")
        rundir.prepare(tmp_path / "run")
        assert run.agent.reads_next_states_once
        run.run()
    finally:
        gin.clear_config()
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("ckpt-*"))
    assert len(checkpoints) >= 2  # one in the middle of the run, one at its end
    for checkpoint in checkpoints:
        prefix = str(checkpoint / "tf" / "state")
        reader = tf.train.load_checkpoint(prefix)
        names = [name for name, _ in tf.train.list_variables(prefix)]
        targets = [n for n in names if "_target_q_network" in n and "OPTIMIZER" not in n]
        assert targets
        for name in targets:
            online = name.replace("_target_q_network", "_q_network")
            np.testing.assert_array_equal(reader.get_tensor(name), reader.get_tensor(online))
