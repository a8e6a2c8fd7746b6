"""The evaluation's compiled policy call and when the loop exports the policy."""

from __future__ import annotations

import json
from pathlib import Path

import gin
import numpy as np
import tensorflow as tf
from tf_agents.policies import py_tf_eager_policy, tf_policy
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import policy_step
from tf_agents.trajectories import time_step as ts

from pipeline import config
from pipeline.agents.policies import EpsilonGreedyPolicy
from pipeline.loops import off_policy
from pipeline.loops.evaluation import CompiledPyPolicy


def _cartpole_run(root: Path, *bindings: str) -> off_policy.Experiment:
    try:
        config.parse(["dqn_cartpole.gin"], ["TorchInitQNetwork.fc_layer_params=(32,)", *bindings])
        return off_policy.Experiment(root)
    finally:
        gin.clear_config()


def _time_steps(batch: int, seed: int) -> ts.TimeStep:
    observation = np.random.default_rng(seed).normal(size=(batch, 4)).astype(np.float32)
    return ts.TimeStep(
        np.ones(batch, np.int32),
        np.zeros(batch, np.float32),
        np.ones(batch, np.float32),
        observation,
    )


def test_compiled_policy_acts_exactly_as_the_eager_wrapper(tmp_path: Path):
    run = _cartpole_run(tmp_path / "run")
    rng = tf.random.Generator.from_seed(3)
    noisy = EpsilonGreedyPolicy(run.agent.policy, 0.3, rng, "eval")
    for policy in (run.agent.policy, noisy):
        eager = py_tf_eager_policy.PyTFEagerPolicy(
            policy, use_tf_function=True, batch_time_steps=False
        )
        compiled = CompiledPyPolicy(policy)
        for batch in (1, 3, 8, 32):  # one concrete function serves every batch size
            step = _time_steps(batch, seed=batch)
            rng.reset_from_seed(batch)
            expected = np.asarray(eager.action(step).action)
            rng.reset_from_seed(batch)
            actual = compiled.action(step).action
            np.testing.assert_array_equal(actual, expected)
            assert actual.shape == (batch,)
    greedy_q = run.agent._q_network(tf.constant(_time_steps(8, 8).observation))[0]
    np.testing.assert_array_equal(
        CompiledPyPolicy(run.agent.policy).action(_time_steps(8, 8)).action,
        np.argmax(greedy_q.numpy(), axis=1),
    )


def test_exports_follow_the_first_the_checkpointed_and_the_last_evaluation(tmp_path: Path):
    root = tmp_path / "run"
    root.mkdir()
    run = _cartpole_run(
        root,
        "train.total_env_steps=2_000",
        "train.initial_collect_steps=200",
        "train.collect_steps_per_iteration=100",
        "train.train_steps_per_iteration=50",
        "train.eval_interval=250",
        "train.eval_episodes=2",
        "train.eval_at_start=False",
        "train.checkpoint_interval=1_000",
    )
    exported: list[int] = []
    export = run.export_policy

    def recording_export(env_steps: int) -> Path:
        exported.append(env_steps)
        return export(env_steps)

    run.export_policy = recording_export
    rows = run.run()
    assert [r["env_steps"] for r in rows] == list(range(250, 2_001, 250))
    assert exported == [250, 1_000, 2_000]
    assert (run.root_dir / "policy").resolve().name == "step-000000002000"


def test_evaluation_in_one_graph_loop_plays_exactly_the_python_loop(tmp_path: Path):
    """Same returns and lengths with the policy calls in one TF loop (what evaluations use)
    as with the Python loop (what a filmed evaluation uses), greedy and with noise drawn per
    call; and a stop request mid-evaluation gives None in both."""
    import envs
    from pipeline.loops.evaluation import Evaluator

    run = _cartpole_run(tmp_path / "run")
    rng = tf.random.Generator.from_seed(5)
    noisy = EpsilonGreedyPolicy(run.agent.policy, 0.3, rng, "eval")
    seeds = list(range(100, 112))
    evaluator = Evaluator([envs.load_gymnasium("CartPole-v1") for _ in seeds], seeds)
    for policy in (CompiledPyPolicy(run.agent.policy), CompiledPyPolicy(noisy)):
        rng.reset_from_seed(5)
        in_graph = evaluator.run(policy)
        rng.reset_from_seed(5)
        filmed: list[int] = []
        in_python = evaluator.run(policy, observer=lambda i, env, seen=filmed: seen.append(i))
        assert len(set(in_graph.lengths)) > 1  # games end apart: the padding is exercised
        np.testing.assert_array_equal(in_graph.returns, in_python.returns)
        np.testing.assert_array_equal(in_graph.lengths, in_python.lengths)
        assert len(filmed) == len(seeds) + in_python.lengths.sum()
        for observer in (None, lambda i, env: None):
            asked: list[int] = []

            def stop(asked=asked) -> bool:
                asked.append(1)
                return len(asked) > 3

            assert evaluator.run(policy, should_stop=stop, observer=observer) is None
            assert len(asked) == 4


def test_games_stepped_in_a_second_process_are_the_same_games(tmp_path: Path):
    """`processes=2` steps the odd-numbered games in a forked worker: the returns and lengths
    are those of one process, with the policy in the graph loop (a compiled greedy CartPole
    policy) and in the Python loop (the stateful Breakout tracker); a filmed evaluation stays
    in this process, and the worker is reused, then stopped by `close`."""
    import os

    import envs
    from pipeline.baselines.scripted_policies import BreakoutTrackerPyPolicy
    from pipeline.loops.evaluation import Evaluator

    run = _cartpole_run(tmp_path / "run")
    seeds = list(range(200, 207))
    greedy = CompiledPyPolicy(run.agent.policy)
    one, two = (
        Evaluator([envs.load_gymnasium("CartPole-v1") for _ in seeds], seeds, processes=n)
        for n in (1, 2)
    )
    expected = one.run(greedy)
    for episodes in (None, 5):  # the same worker twice
        got = two.run(greedy, episodes=episodes)
        count = len(got.returns)
        np.testing.assert_array_equal(got.returns, expected.returns[:count])
        np.testing.assert_array_equal(got.lengths, expected.lengths[:count])
    worker = two._worker
    assert worker is not None and worker._process.pid != os.getpid()
    assert worker.indices == {1, 3, 5}
    filmed = two.run(greedy, observer=lambda i, env: None)
    np.testing.assert_array_equal(filmed.returns, expected.returns)
    two.close()
    assert not worker._process.is_alive()
    one.close()
    run.evaluator.close()
    run.train_env.close()

    frames = dict(seed=None, training=False, max_episode_frames=3_000)
    atari = [[envs.load_atari(**frames) for _ in range(4)] for _ in range(2)]
    spec = (atari[0][0].time_step_spec(), atari[0][0].action_spec())
    results = []
    for games, processes in zip(atari, (1, 2), strict=True):
        evaluator = Evaluator(games, [31, 32, 33, 34], processes=processes)
        results.append(evaluator.run(BreakoutTrackerPyPolicy(*spec)))
        evaluator.close()
    np.testing.assert_array_equal(results[0].returns, results[1].returns)
    np.testing.assert_array_equal(results[0].lengths, results[1].lengths)
    assert results[0].returns.max() > 0  # games where the tracker scores


def test_each_evaluations_seconds_are_kept_in_the_checkpoints_not_the_metrics(tmp_path: Path):
    """loop.json holds how long each evaluation took (the bench splits a seed's wall time
    with it); metrics.jsonl rows stay free of timings, so a resume reproduces them exactly."""
    root = tmp_path / "run"
    root.mkdir()
    run = _cartpole_run(
        root,
        "train.total_env_steps=1_000",
        "train.initial_collect_steps=200",
        "train.collect_steps_per_iteration=100",
        "train.train_steps_per_iteration=10",
        "train.eval_interval=250",
        "train.eval_episodes=2",
        "train.checkpoint_interval=500",
    )
    rows = run.run()
    newest_steps, newest = run.checkpoints.complete()[0]
    assert newest_steps == 1_000
    eval_s = json.loads((newest / "loop.json").read_text())["eval_s"]
    assert sorted(eval_s, key=int) == [str(r["env_steps"]) for r in rows]
    assert all(0 < seconds < 600 for seconds in eval_s.values())
    wall_s = json.loads((newest / "loop.json").read_text())["wall_s"]
    assert sum(eval_s.values()) < wall_s
    assert not any({"eval_s", "wall_s"} & set(row) for row in rows)


def _breakout_specs(frames: dict) -> tuple:
    """The TF time step and action specs of a Breakout evaluation env."""
    import envs

    probe = envs.load_atari(**frames)
    try:
        return (
            tensor_spec.from_spec(probe.time_step_spec()),
            tensor_spec.from_spec(probe.action_spec()),
        )
    finally:
        probe.close()


class _CountingGreedy(tf_policy.TFPolicy):
    """A deterministic greedy policy for Breakout that counts the rows it is run on: LEFT
    where the newest frame's pixel sum is odd, else NOOP (it never serves, as a stalled
    trained agent, so its observations repeat until an epsilon draw moves something)."""

    def __init__(self, time_step_spec, action_spec):
        super().__init__(time_step_spec, action_spec)
        self.rows = tf.Variable(0, dtype=tf.int64, trainable=False)

    def _action(self, time_step, policy_state, seed):
        newest = tf.cast(time_step.observation[..., -1], tf.int64)
        odd = tf.math.floormod(tf.reduce_sum(newest, axis=[1, 2]), 2) == 1
        action = tf.where(odd, tf.constant(3, tf.int64), tf.constant(0, tf.int64))
        with tf.control_dependencies([self.rows.assign_add(tf.size(action, tf.int64))]):
            action = tf.identity(tf.cast(action, self.action_spec.dtype))
        return policy_step.PolicyStep(action, policy_state, ())


def test_greedy_actions_are_reused_while_a_games_observation_repeats():
    """With epsilon-greedy evaluation (the Atari files), a game whose frame stack is the one
    its greedy action was computed on takes that action again instead of a new policy call:
    the same games (same random draws, greedy actions recomputed or not), in the graph loop,
    the Python loop and two processes, and far fewer rows through the greedy policy."""
    import envs
    from pipeline.loops.evaluation import Evaluator

    frames = dict(seed=None, training=False, max_episode_frames=2_000)
    greedy = _CountingGreedy(*_breakout_specs(frames))
    rng = tf.random.Generator.from_seed(3)
    policy = CompiledPyPolicy(EpsilonGreedyPolicy(greedy, 0.05, rng, "eval"))
    assert policy.reuses_greedy
    seeds = [41, 42, 43, 44, 45]
    results, rows = {}, {}
    for reuse, processes, filmed in [
        (False, 1, False), (True, 1, False), (True, 1, True), (True, 2, False),
    ]:  # fmt: skip
        evaluator = Evaluator([envs.load_atari(**frames) for _ in seeds], seeds, processes)
        evaluator.reuse_greedy = reuse
        rng.reset_from_seed(3)
        greedy.rows.assign(0)
        observer = (lambda i, env: None) if filmed else None
        results[reuse, processes, filmed] = evaluator.run(policy, observer=observer)
        rows[reuse, processes, filmed] = int(greedy.rows.numpy())
        evaluator.close()
    expected = results[False, 1, False]
    assert expected.lengths.sum() > 2_000
    # Games told apart: not all of one return, and each its own (return, length), so a game's
    # result in another's slot, or one game played for all, would fail the comparisons below.
    games = list(zip(expected.returns.tolist(), expected.lengths.tolist(), strict=True))
    assert len(set(expected.returns.tolist())) > 1 and len(set(games)) == len(seeds), games
    for key, got in results.items():
        np.testing.assert_array_equal(got.returns, expected.returns, err_msg=str(key))
        np.testing.assert_array_equal(got.lengths, expected.lengths, err_msg=str(key))
    recomputed = rows[False, 1, False]
    assert recomputed >= expected.lengths.sum()  # every running game, every step (padded)
    for key in [(True, 1, False), (True, 1, True), (True, 2, False)]:
        assert 0 < rows[key] < 0.5 * recomputed, (key, rows[key], recomputed)


def test_games_moved_between_the_processes_as_others_end_keep_their_course(monkeypatch):
    """With two processes the evaluator keeps the running games split evenly, moving games
    (their envs' exact states) between the processes as others end: every game, and a second
    evaluation by the same worker, is exactly what one process plays."""
    import envs
    from pipeline.loops.eval_worker import EvalWorker
    from pipeline.loops.evaluation import Evaluator

    moved = []
    adopt, release = EvalWorker.adopt, EvalWorker.release

    def counted_adopt(self, states):
        moved.extend(("to worker", i) for i, _ in states)
        return adopt(self, states)

    def counted_release(self, indices):
        moved.extend(("back", i) for i in indices)
        return release(self, indices)

    monkeypatch.setattr(EvalWorker, "adopt", counted_adopt)
    monkeypatch.setattr(EvalWorker, "release", counted_release)
    frames = dict(seed=None, training=False, max_episode_frames=4_000)
    greedy = _CountingGreedy(*_breakout_specs(frames))
    rng = tf.random.Generator.from_seed(5)
    policy = CompiledPyPolicy(EpsilonGreedyPolicy(greedy, 0.1, rng, "eval"))
    seeds = list(range(60, 68))
    results = {}
    for processes in (1, 2):
        evaluator = Evaluator([envs.load_atari(**frames) for _ in seeds], seeds, processes)
        for repeat in range(processes):  # the worker's second evaluation starts afresh
            rng.reset_from_seed(5)
            results[processes, repeat] = evaluator.run(policy)
        evaluator.close()
    expected = results[1, 0]
    assert len(set(expected.lengths.tolist())) >= 4, expected.lengths  # games end apart
    for key in [(2, 0), (2, 1)]:
        np.testing.assert_array_equal(results[key].returns, expected.returns, err_msg=str(key))
        np.testing.assert_array_equal(results[key].lengths, expected.lengths, err_msg=str(key))
    assert moved, "no game changed process"
