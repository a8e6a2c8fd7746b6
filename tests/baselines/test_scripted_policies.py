"""Baseline policies: script semantics, the CartPole rule's score, the Breakout tracker, gin."""

from __future__ import annotations

import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.environments import tf_py_environment
from tf_agents.policies import random_py_policy
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts

import envs
from pipeline.baselines.scripted_policies import (
    BreakoutTrackerPyPolicy,
    CartPoleHeuristicPyPolicy,
    ScriptedPyPolicy,
    as_tf_policy,
)
from pipeline.loops.evaluation import Evaluator, eval_episode_seeds

FIRST, MID, LAST = int(ts.StepType.FIRST), int(ts.StepType.MID), int(ts.StepType.LAST)
NOOP, FIRE, RIGHT, LEFT = 0, 1, 2, 3  # Breakout's minimal action set

TIME_STEP_SPEC = ts.time_step_spec(array_spec.ArraySpec((1,), np.float32, name="observation"))
ACTION_SPEC = array_spec.BoundedArraySpec((), np.int64, minimum=0, maximum=3, name="action")
SCRIPT = [(2, 1), (0, 3), (3, 0), (1, 2)]  # 1 1 0 0 0 2, then again (entry 1 is skipped)
ONE_PASS = [1, 1, 0, 0, 0, 2]


def batch(step_types) -> ts.TimeStep:
    step_type = np.asarray(step_types, np.int32)
    n = len(step_type)
    zeros = np.zeros(n, np.float32)
    return ts.TimeStep(step_type, zeros, np.ones(n, np.float32), np.zeros((n, 1), np.float32))


def play(policy, step_types_per_call) -> list[list[int]]:
    """Calls the policy once per row of step types (one column per batch element)."""
    state = policy.get_initial_state(len(step_types_per_call[0]))
    actions = []
    for step_types in step_types_per_call:
        result = policy.action(batch(step_types), state)
        state = result.state
        actions.append(result.action.tolist())
    return actions


def episode(length: int) -> list[int]:
    return [FIRST] + [MID] * (length - 1)


@pytest.fixture
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


# --- the action script -------------------------------------------------------------------


def test_script_repeats_entries_skips_zero_repeats_and_loops():
    policy = ScriptedPyPolicy(TIME_STEP_SPEC, ACTION_SPEC, script=SCRIPT)
    actions = [a for [a] in play(policy, [[t] for t in episode(15)])]
    assert actions == ONE_PASS + ONE_PASS + [1, 1, 0]
    assert policy.length == 6


def test_script_fails_at_its_end_naming_its_length():
    policy = ScriptedPyPolicy(TIME_STEP_SPEC, ACTION_SPEC, script=SCRIPT, at_end="fail")
    assert [a for [a] in play(policy, [[t] for t in episode(6)])] == ONE_PASS
    with pytest.raises(ValueError, match=r"its 4 entries last 6 steps .* step 7"):
        play(policy, [[t] for t in episode(7)])
    # An episode that ends exactly as the script does is fine: the action after LAST is unused.
    assert [a for [a] in play(policy, [[t] for t in [*episode(6), LAST]])][:6] == ONE_PASS


def test_script_restarts_at_every_first_step():
    policy = ScriptedPyPolicy(TIME_STEP_SPEC, ACTION_SPEC, script=SCRIPT, at_end="fail")
    steps = [*episode(4), LAST, *episode(5), *episode(6)]
    actions = [a for [a] in play(policy, [[t] for t in steps])]
    assert actions == [*ONE_PASS[:4], ONE_PASS[4], *ONE_PASS[:5], *ONE_PASS]


def test_script_positions_are_per_batch_element():
    policy = ScriptedPyPolicy(TIME_STEP_SPEC, ACTION_SPEC, script=SCRIPT)
    columns = [episode(9), [*episode(3), *episode(6)], [*episode(5), LAST, LAST, LAST, FIRST]]
    together = play(policy, list(zip(*columns, strict=True)))
    for i, column in enumerate(columns):
        alone = [a for [a] in play(policy, [[t] for t in column])]
        assert [row[i] for row in together] == alone
    assert [row[1] for row in together] == [1, 1, 0, 1, 1, 0, 0, 0, 2]


def test_script_accepts_an_unbatched_time_step():
    policy = ScriptedPyPolicy(TIME_STEP_SPEC, ACTION_SPEC, script=SCRIPT)
    first = ts.restart(np.zeros(1, np.float32))
    step = policy.action(first, policy.get_initial_state())
    assert step.action.shape == () and int(step.action) == 1 and int(step.state) == 1


@pytest.mark.parametrize(
    ("script", "at_end", "message"),
    [
        ([(2, 1), (-1, 0)], "loop", r"entry 1 \(-1, 0\) repeats a negative number"),
        ([(0, 1), (0, 2)], "loop", r"every entry repeats 0 times"),
        ([(2, 4)], "loop", r"action 4 outside the action spec \[0, 3\]"),
        ([(2, 1), (3,)], "loop", r"entry 1 is \(3,\), not a \(repeats, action\) pair"),
        ([], "loop", r"non-empty list"),
        ([(2, 1)], "stop", r"at_end must be one of \('loop', 'fail'\)"),
    ],
)
def test_script_is_checked_up_front(script, at_end, message):
    with pytest.raises(ValueError, match=message):
        ScriptedPyPolicy(TIME_STEP_SPEC, ACTION_SPEC, script=script, at_end=at_end)


def test_script_reports_every_problem_at_once():
    with pytest.raises(ValueError, match=r"3 entries: entry 0 .* negative.*; entry 2 .* outside"):
        ScriptedPyPolicy(TIME_STEP_SPEC, ACTION_SPEC, script=[(-1, 0), (1, 1), (1, 9)])


def test_script_under_the_evaluator_waits_for_the_longest_episode():
    """Finished episodes wait on LAST while others run: that must not exhaust their script."""
    seeds = [11, 12, 13]
    cartpoles = [envs.load_gymnasium(seed=None, training=False) for _ in seeds]
    evaluator = Evaluator(cartpoles, seeds)
    spec = (cartpoles[0].time_step_spec(), cartpoles[0].action_spec())
    # Always pushing left ends CartPole within ~10 steps; the lengths differ by seed.
    stats = evaluator.run(ScriptedPyPolicy(*spec, script=[(12, 0)], at_end="fail"))
    assert len(set(stats.lengths.tolist())) > 1 and stats.lengths.max() <= 12
    with pytest.raises(ValueError, match="its 1 entries last 3 steps"):
        evaluator.run(ScriptedPyPolicy(*spec, script=[(3, 0)], at_end="fail"))
    evaluator.close()


# --- CartPole ------------------------------------------------------------------------------


def cartpole_evaluator(n: int = 5) -> tuple[Evaluator, tuple]:
    cartpoles = [envs.load_gymnasium(seed=None, training=False) for _ in range(n)]
    spec = (cartpoles[0].time_step_spec(), cartpoles[0].action_spec())
    return Evaluator(cartpoles, eval_episode_seeds(0, n)), spec


def test_cartpole_heuristic_scores_far_above_random():
    evaluator, spec = cartpole_evaluator()
    heuristic = evaluator.run(CartPoleHeuristicPyPolicy(*spec)).returns
    random = evaluator.run(random_py_policy.RandomPyPolicy(*spec, seed=0)).returns
    evaluator.close()
    assert heuristic.mean() > 100 and heuristic.min() > 100
    assert random.mean() < 50


def test_cartpole_heuristic_rule():
    spec = (envs.load_gymnasium().time_step_spec(), envs.load_gymnasium().action_spec())
    policy = CartPoleHeuristicPyPolicy(*spec, angular_velocity_gain=0.5)
    # (x, x_dot, theta, theta_dot): falling right, falling left, tilted right but swinging back
    obs = np.asarray([[0, 0, 0.05, 0.0], [0, 0, -0.05, 0.0], [0, 0, 0.05, -0.2]], np.float32)
    time_step = ts.TimeStep(np.zeros(3, np.int32), np.zeros(3, np.float32), np.ones(3), obs)
    assert policy.action(time_step).action.tolist() == [1, 0, 0]


def test_as_tf_policy_drives_a_tf_environment():
    env = tf_py_environment.TFPyEnvironment(envs.load_gymnasium(seed=3))
    py = CartPoleHeuristicPyPolicy(env.time_step_spec(), env.action_spec())
    policy = as_tf_policy(py)
    time_step, state = env.reset(), policy.get_initial_state(env.batch_size)
    for _ in range(20):
        step = policy.action(time_step, state)
        expected = py.action(tf.nest.map_structure(np.asarray, time_step)).action
        np.testing.assert_array_equal(step.action.numpy(), expected)
        time_step = env.step(step.action)
    assert not time_step.is_last().numpy().any()  # the rule keeps the pole up


def test_as_tf_policy_keeps_the_script_position_and_its_error():
    env = tf_py_environment.TFPyEnvironment(envs.load_gymnasium(seed=3))
    spec = (env.time_step_spec(), env.action_spec())
    policy = as_tf_policy(ScriptedPyPolicy(*spec, script=[(2, 1), (1, 0)], at_end="fail"))
    time_step, state, actions = env.reset(), policy.get_initial_state(env.batch_size), []
    for _ in range(3):
        step = policy.action(time_step, state)
        time_step, state = env.step(step.action), step.state
        actions.append(int(step.action[0]))
    assert actions == [1, 1, 0]
    with pytest.raises(tf.errors.InvalidArgumentError, match="its 2 entries last 3 steps"):
        policy.action(time_step, state)


# --- Breakout ------------------------------------------------------------------------------


def breakout_frames(ball: tuple[int, int] | None, paddle: int = 40) -> np.ndarray:
    """A synthetic (1, 84, 84, 4) stack: walls, an 8-column paddle on row 76, maybe a ball."""
    frame = np.zeros((84, 84), np.uint8)
    frame[6:84, :4] = frame[6:84, 80:] = frame[6:12] = 142
    frame[75:78, paddle - 4 : paddle + 4] = 110
    if ball is not None:
        frame[ball[0] : ball[0] + 2, ball[1]] = 96
    stack = np.zeros((1, 84, 84, 4), np.uint8)
    stack[..., -1] = frame
    return stack


def breakout_step(frames: np.ndarray, step_type: int = MID) -> ts.TimeStep:
    return ts.TimeStep(
        np.asarray([step_type], np.int32), np.zeros(1, np.float32), np.ones(1), frames
    )


@pytest.fixture(scope="module")
def breakout_spec():
    env = envs.load_atari(seed=None, training=False)
    spec = (env.time_step_spec(), env.action_spec())
    env.close()
    return spec


def test_breakout_tracker_fires_without_a_ball_and_follows_one(breakout_spec):
    policy = BreakoutTrackerPyPolicy(*breakout_spec)
    state = policy.get_initial_state(1)
    assert policy.action(breakout_step(breakout_frames(None), FIRST), state).action == [FIRE]
    assert policy.action(breakout_step(breakout_frames((60, 20))), state).action == [LEFT]
    assert policy.action(breakout_step(breakout_frames((60, 65))), state).action == [RIGHT]
    assert policy.action(breakout_step(breakout_frames((60, 41))), state).action == [NOOP]
    # A paddle still gliding right from the last move (state +1) is stopped by pushing left.
    moving = policy.action(breakout_step(breakout_frames((60, 41))), np.ones(1, np.int64))
    assert moving.action == [LEFT]
    # ... unless the episode just started: FIRST resets that state.
    restarted = policy.action(breakout_step(breakout_frames((60, 41)), FIRST), np.ones(1, np.int64))
    assert restarted.action == [NOOP] and restarted.state == [0]


def test_breakout_tracker_serves_again_after_a_lost_life(breakout_spec):
    env = envs.load_atari(seed=5, training=False)
    policy = BreakoutTrackerPyPolicy(*breakout_spec)
    time_step = env.reset()
    for _ in range(200):  # standing still loses the first ball
        time_step = env.step(np.int64(NOOP))
        if env.last_info["lives"] < 5:
            break
    assert env.last_info["lives"] == 4 and not time_step.is_last()
    state, actions = policy.get_initial_state(), []
    for _ in range(300):
        step = policy.action(time_step, state)
        state, time_step = step.state, env.step(step.action)
        actions.append(int(step.action))
    env.close()
    assert actions[0] == FIRE  # no ball in play: serve
    assert set(actions[5:]) & {LEFT, RIGHT}  # ... and the ball came back: the paddle tracks it
    assert env.last_info["lives"] == 4  # and catches it


def test_breakout_tracker_beats_random(breakout_spec):
    """A short seeded game each (6,000 frames): the tracker clearly beats uniform random."""
    seeds = [21, 22]
    atari = [envs.load_atari(seed=None, training=False, max_episode_frames=6_000) for _ in seeds]
    evaluator = Evaluator(atari, seeds)
    tracker = evaluator.run(BreakoutTrackerPyPolicy(*breakout_spec)).returns
    random = evaluator.run(random_py_policy.RandomPyPolicy(*breakout_spec, seed=0)).returns
    evaluator.close()
    assert tracker.min() >= 20 and tracker.mean() > 5 * max(random.mean(), 1.0)


def test_breakout_tracker_checks_its_inputs(breakout_spec):
    cartpole = envs.load_gymnasium()
    with pytest.raises(ValueError, match=r"\(84, 84, stack >= 2\)"):
        BreakoutTrackerPyPolicy(cartpole.time_step_spec(), breakout_spec[1])
    with pytest.raises(ValueError, match="fire=7 is outside the actions 0..3"):
        BreakoutTrackerPyPolicy(*breakout_spec, fire=7)


# --- gin -----------------------------------------------------------------------------------


def test_each_policy_takes_its_settings_from_gin(clean_gin, breakout_spec):
    gin.parse_config(
        [
            "ScriptedPyPolicy.script = [(1, 2), (0, 1), (2, 3)]",
            "ScriptedPyPolicy.at_end = 'fail'",
            "CartPoleHeuristicPyPolicy.angular_velocity_gain = 0.0",
            "BreakoutTrackerPyPolicy.fire = 0",
            "BreakoutTrackerPyPolicy.lead = False",
        ]
    )
    scripted = ScriptedPyPolicy(TIME_STEP_SPEC, ACTION_SPEC)
    assert [a for [a] in play(scripted, [[t] for t in episode(3)])] == [2, 3, 3]
    with pytest.raises(ValueError, match="its 3 entries last 3 steps"):
        play(scripted, [[t] for t in episode(4)])

    cartpole = envs.load_gymnasium()
    heuristic = CartPoleHeuristicPyPolicy(cartpole.time_step_spec(), cartpole.action_spec())
    obs = np.asarray([[0, 0, 0.05, -0.2]], np.float32)  # the gain alone decides this one
    time_step = ts.TimeStep(np.zeros(1, np.int32), np.zeros(1, np.float32), np.ones(1), obs)
    assert heuristic.action(time_step).action.tolist() == [1]

    tracker = BreakoutTrackerPyPolicy(*breakout_spec)
    no_ball = breakout_step(breakout_frames(None), FIRST)
    assert tracker.action(no_ball, tracker.get_initial_state(1)).action == [0]
    assert tracker._lead is False
