"""Every agent is one gin file away: each config runs; the pieces we wrote are checked."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec

from pipeline import config
from pipeline.agents.networks import DuelingQNetwork
from pipeline.agents.returns import lambda_returns
from pipeline.errors import UserError
from pipeline.loops import off_policy
from pipeline.run import rundir
from tests.conftest import REPO, bindings, read_metrics, train_cli
from tests.loops.test_resume import complete_checkpoints, wait_for

TINY_DQN = [
    "train.total_env_steps=400",
    "train.initial_collect_steps=200",
    "train.eval_interval=200",
    "train.eval_episodes=2",
]
TINY_BREAKOUT = [
    *TINY_DQN,
    "train.replay_capacity=1_000",
    "train.checkpoint_interval=200",
    "load_atari.max_episode_frames=2_000",
    "train.final_eval_episodes=2",  # drq_breakout.gin's 100 final games took most of its minute
]
TINY_ON_POLICY = [
    "PPOClipAgent.num_epochs=2",  # PPO's 20 epochs take most of a tiny run's time
    "train_on_policy.total_env_steps=600",
    "train_on_policy.eval_interval=300",
    "train_on_policy.eval_episodes=2",
]
CONFIGS = sorted(p.name for p in (REPO / "gin").glob("*.gin"))


def tiny_bindings(gin_file: str) -> list[str]:
    text = (REPO / "gin" / gin_file).read_text()
    if "breakout" in gin_file or "@load_atari" in text:  # atari100k.gin: any game
        return TINY_BREAKOUT
    if "train_on_policy" in text or "reinforce_cartpole.gin" in text:
        return TINY_ON_POLICY
    return TINY_DQN


def test_every_config_is_covered():
    assert {"dqn_cartpole.gin", "ppo_cartpole.gin", "a2c_cartpole.gin"} <= set(CONFIGS)


@pytest.mark.parametrize("gin_file", CONFIGS)
def test_every_config_builds_and_runs_a_few_iterations(gin_file: str, tmp_path: Path):
    """In this process (the CLI around the loop has its own tests): a TF start-up saved each."""
    config.parse([gin_file], tiny_bindings(gin_file))
    run_dir = tmp_path / "run"
    loop = off_policy.build_loop(run_dir)  # builds everything before touching the disk
    rundir.prepare(run_dir)
    rows = loop.run()
    assert rows[-1]["train_steps"] > 0 and np.isfinite(rows[-1]["train_loss"])
    assert read_metrics(run_dir)[-1] == json.loads(json.dumps(rows[-1]))


def test_dueling_network_shape_and_mean_subtraction_identity():
    obs = tensor_spec.TensorSpec((4,), tf.float32)
    actions = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 2)
    net = DuelingQNetwork(obs, actions, fc_layer_params=(16,), stream_fc_layer_params=(8,))
    x = tf.random.stateless_normal([5, 4], seed=[1, 2])
    q, _ = net(x)
    assert q.shape == (5, 3)
    trunk, _ = net._encoder(x)
    value, advantage = net._value(trunk), net._advantage(trunk)
    # V is the mean of Q over actions, and Q - mean Q is the centred advantage.
    np.testing.assert_allclose(tf.reduce_mean(q, -1, keepdims=True), value, rtol=1e-5, atol=1e-6)
    centred = advantage - tf.reduce_mean(advantage, -1, keepdims=True)
    np.testing.assert_allclose(q - tf.reduce_mean(q, -1, keepdims=True), centred, atol=1e-5)


def test_dueling_network_torch_init_starts_every_layer_as_pytorch_linear():
    """Kernels and biases in U(+-1/sqrt(fan_in)) of each layer's input width, heads included."""
    obs = tensor_spec.TensorSpec((4,), tf.float32)
    actions = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 1)
    net = DuelingQNetwork(
        obs, actions, fc_layer_params=(64, 32), stream_fc_layer_params=(16,), torch_init=True
    )
    q, _ = net(tf.zeros([2, 4]))
    assert q.shape == (2, 2)
    fan_ins = [v.shape[0] for v in net.trainable_variables if len(v.shape) == 2]
    assert fan_ins == [4, 64, 32, 16, 32, 16]  # trunk, value stream, advantage stream
    weights = net.trainable_variables
    kernels_and_biases = zip(weights[::2], weights[1::2], strict=True)
    for (kernel, bias), fan_in in zip(kernels_and_biases, fan_ins, strict=True):
        for tensor in (kernel, bias):
            bound = float(tf.reduce_max(tf.abs(tensor)))
            assert bound <= fan_in**-0.5, tensor.name
            if tensor.shape.num_elements() >= 16:  # wide enough to reach near its bound
                assert bound > 0.7 * fan_in**-0.5, tensor.name
    with pytest.raises(UserError, match="torch_init=True .* MLP trunks only"):
        DuelingQNetwork(
            tensor_spec.TensorSpec((8, 8, 1), tf.float32),
            actions,
            conv_layer_params=((4, 3, 2),),
            torch_init=True,
        )


def test_a2c_returns_and_advantages_match_a_hand_computed_example():
    # One lane, 4 transitions, gamma 0.5. Step 1 ends its episode by termination (discount
    # 0); item 2 is that episode's LAST step (the LAST -> FIRST boundary, not a transition);
    # item 3 starts the next episode and bootstraps from V(s_4) = 8.
    rewards = tf.constant([[1.0, 2.0, 0.0, 4.0]])
    discounts = tf.constant([[1.0, 0.0, 1.0, 1.0]])
    values = tf.constant([[10.0, 20.0, 30.0, 40.0]])
    boundary = tf.constant([[False, False, True, False]])
    returns = lambda_returns(rewards, discounts, values, tf.constant([8.0]), boundary, 0.5)
    # R_3 = 4 + 0.5 * 8 = 8; R_2 = V(s_2) = 30 (boundary); R_1 = 2 + 0.5 * 0 * 30 = 2;
    # R_0 = 1 + 0.5 * 1 * 2 = 2.
    np.testing.assert_allclose(returns, [[2.0, 2.0, 30.0, 8.0]])
    np.testing.assert_allclose(returns - values, [[-8.0, -18.0, 0.0, -32.0]])
    # A truncation keeps the discount: the step before bootstraps from the LAST state's value.
    truncated = lambda_returns(
        rewards, tf.constant([[1.0, 1.0, 1.0, 1.0]]), values, tf.constant([8.0]), boundary, 0.5
    )
    np.testing.assert_allclose(truncated[0, :2], [1 + 0.5 * (2 + 0.5 * 30), 2 + 0.5 * 30])


def test_on_policy_resume_is_bit_identical(tmp_path: Path):
    """PPO: Generator-seeded sampling and the carried last step survive a SIGKILL."""
    run = [
        "--gin_file=ppo_cartpole.gin",
        *bindings(
            "train_on_policy.total_env_steps=800",
            "train_on_policy.eval_interval=400",
            "train_on_policy.eval_episodes=2",
            "train_on_policy.checkpoint_interval=200",
            "PPOClipAgent.num_epochs=2",
        ),
    ]
    reference = tmp_path / "reference"
    assert train_cli(*run, f"--root_dir={reference}", cwd=REPO).returncode == 0
    interrupted = tmp_path / "interrupted"
    process = start_cli(run, interrupted)
    wait_for(lambda: len(complete_checkpoints(interrupted)) >= 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    result = train_cli(*run, f"--root_dir={interrupted}", cwd=REPO)
    assert result.returncode == 0 and "resumed from checkpoint" in result.stderr
    ref, got = (d / "metrics.jsonl" for d in (reference, interrupted))
    assert got.read_bytes() == ref.read_bytes()

    # A finished on-policy run is extended, with other checkpoint settings, not refused.
    finished_at = max(complete_checkpoints(reference))
    more = bindings(
        "train_on_policy.total_env_steps=1_200", "train_on_policy.checkpoint_interval=400"
    )
    extended = train_cli(*run, *more, f"--root_dir={reference}", cwd=REPO)
    assert extended.returncode == 0, extended.stderr
    assert f"resumed from checkpoint at {finished_at:,} env steps" in extended.stderr
    assert read_metrics(reference)[-1]["env_steps"] >= 1_200


def start_cli(args: list[str], root_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.train", *args, f"--root_dir={root_dir}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_dqn_learns_the_toy_mdp_oracle_q_values(tmp_path: Path):
    """Masked DQN on ToyMDP-v0 approaches Q* from Q-value iteration; greedy actions match."""
    from envs import toy_mdp
    from pipeline import config
    from pipeline.baselines.tabular import greedy_actions, q_value_iteration
    from pipeline.loops import off_policy

    config.parse(["dqn_toy_mdp.gin"], ["train.total_env_steps=8_000", "train.eval_episodes=2"])
    run = off_policy.Experiment(tmp_path)
    run.run()
    learned = run.agent._q_network(tf.eye(3))[0].numpy()
    oracle = q_value_iteration(toy_mdp.TRANSITIONS, toy_mdp.REWARDS, 0.9, toy_mdp.ALLOWED)
    allowed = toy_mdp.ALLOWED.astype(bool)
    np.testing.assert_allclose(learned[allowed], oracle[allowed], atol=1.5)
    masked = np.where(allowed, learned, np.nan)
    assert list(greedy_actions(masked)) == list(greedy_actions(oracle)) == [0, 0, 1]


def test_mixed_bfloat16_warns_once_where_the_cpu_would_emulate_it(tmp_path: Path, caplog):
    from pipeline.agents.networks import warn_if_bfloat16_is_emulated

    old = tmp_path / "old"
    old.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    new = tmp_path / "new"
    new.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU computes bfloat16 natively")
    with caplog.at_level("WARNING"):
        assert warn_if_bfloat16_is_emulated("Net", old)
        assert warn_if_bfloat16_is_emulated("Net", old)  # cached: logged once
    assert sum("Net.dtype='float32'" in r.getMessage() for r in caplog.records) == 1
    assert not warn_if_bfloat16_is_emulated("Net", new)
    assert not warn_if_bfloat16_is_emulated("Net", tmp_path / "missing")
