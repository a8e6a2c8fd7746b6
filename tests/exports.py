"""An exported policy checked as a whole model: it loads with TensorFlow alone, acts, and is
the agent of the checkpoint at its step (the same weights, train step and greedy actions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# CartPole-sized observations, spread enough that a trained net picks both actions on them.
CARTPOLE_OBSERVATIONS = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)


def export_acts_as_checkpoint(
    run_dir: Path, experiment, env_steps: int, observations: np.ndarray
) -> None:
    """Asserts that `run_dir/policy` is a SavedModel of the greedy policy of `experiment`'s
    agent (a fresh one, built from the run's settings, anywhere) with the weights of the run's
    checkpoint at `env_steps`. Writes nothing."""
    import tensorflow as tf
    from tf_agents.trajectories import time_step as ts

    from pipeline.run.checkpoints import CheckpointStore, read_variables

    policy_dir = Path(run_dir) / "policy"
    assert (policy_dir / "saved_model.pb").is_file(), f"{policy_dir}: no SavedModel"
    exported = tf.saved_model.load(str(policy_dir))
    step = ts.restart(tf.constant(observations), batch_size=len(observations))
    actions = exported.action(step).action.numpy()

    store = CheckpointStore(Path(run_dir) / "checkpoints")
    assert read_variables(store, experiment.tf_state(), env_steps) == env_steps
    policy = experiment.agent.policy
    ours = policy.action(step).action.numpy()
    np.testing.assert_array_equal(actions, ours, err_msg="greedy actions differ")
    assert len(set(ours.tolist())) > 1, "the observations tell nothing apart: all one action"
    assert int(exported.get_train_step()) == int(experiment.train_step.numpy())
    weights = [v.numpy() for v in exported.model_variables]
    assert len(weights) == len(policy.variables()) > 0
    for saved, own in zip(weights, policy.variables(), strict=True):
        np.testing.assert_array_equal(saved, own.numpy(), err_msg=own.name)
