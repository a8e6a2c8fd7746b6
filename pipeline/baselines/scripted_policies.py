"""Baseline policies that need no training: an action script, a CartPole rule, a Breakout tracker.

Why: a learning curve means little without a floor and a bar to compare it with (uniform
random is the floor; these rules are the bar), a fixed action script is the simplest way to
drive an environment into a known state in tests, and a decent scripted player can fill a
replay buffer with experience a random policy never reaches (Breakout beyond the first
bricks).

All three are `PyPolicy`s that take a *batch* of time steps, as
`pipeline.loops.evaluation.Evaluator` passes them (an unbatched time step works too). Their
state, where they have one, is per batch element and starts over at each FIRST step, so every
episode is played the same way however the batch is laid out. `as_tf_policy` wraps any of them
for TF drivers (collection).

Each is gin-configurable under its class name; the specs come from the environment:

    ScriptedPyPolicy.script = [(30, 0), (1, 1), (5, 2)]
    ScriptedPyPolicy.at_end = 'fail'
    CartPoleHeuristicPyPolicy.angular_velocity_gain = 0.5
    BreakoutTrackerPyPolicy.lead = True
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import numpy as np
from tf_agents.policies import py_policy, tf_policy, tf_py_policy
from tf_agents.specs import array_spec, tensor_spec
from tf_agents.trajectories import policy_step
from tf_agents.trajectories import time_step as ts
from tf_agents.utils import nest_utils

from pipeline.agents.policies import discrete_action_range

_FIRST = int(ts.StepType.FIRST)
_LAST = int(ts.StepType.LAST)


class _BatchedPyPolicy(py_policy.PyPolicy):
    """Base: subclasses see `(n, ...)` arrays always; an unbatched call is batched for them."""

    def __init__(self, time_step_spec, action_spec, policy_state_spec=()):
        super().__init__(time_step_spec, action_spec, policy_state_spec)
        self._low, self._high = discrete_action_range(action_spec)

    def _action(self, time_step, policy_state, seed=None):
        del seed  # deterministic
        outer = nest_utils.get_outer_array_shape(
            time_step.observation, self.time_step_spec.observation
        )
        batched = len(outer) > 0
        if not batched:
            time_step = nest_utils.batch_nested_array(time_step)
            policy_state = nest_utils.batch_nested_array(policy_state)
        action, state = self._batched_action(time_step, policy_state)
        action = np.asarray(action, dtype=self.action_spec.dtype)
        if not batched:
            action, state = nest_utils.unbatch_nested_array((action, state))
        return policy_step.PolicyStep(action, state, ())

    def _batched_action(self, time_step, policy_state):
        raise NotImplementedError


_AT_END = ("loop", "fail")


@gin.configurable(denylist=["time_step_spec", "action_spec"])
class ScriptedPyPolicy(_BatchedPyPolicy):
    """Plays `script`, a list of `(repeats, action)` pairs, from the start of every episode.

    An entry with `repeats == 0` is skipped. Past the script's end, `at_end='loop'` starts it
    over; `at_end='fail'` raises a ValueError naming the script's length, so a test that
    expects an episode to end within the script finds out when it does not. The state is the
    number of steps played in the current pass through the script, one per batch element,
    reset to 0 at every FIRST step; a LAST step neither advances it nor fails (the
    environment ignores the action that follows LAST).
    """

    def __init__(
        self,
        time_step_spec: ts.TimeStep,
        action_spec: array_spec.BoundedArraySpec,
        script: Sequence[tuple[int, int]],
        at_end: str = "loop",
    ) -> None:
        state_spec = array_spec.ArraySpec((), np.int64, name="script_step")
        super().__init__(time_step_spec, action_spec, state_spec)
        repeats, actions = self._validate(script, at_end)
        self._actions = np.asarray(actions, np.int64)
        self._ends = np.cumsum(repeats)  # entry i covers steps [ends[i-1], ends[i])
        self._length = int(self._ends[-1])
        self._entries = len(repeats)
        self._loop = at_end == "loop"

    @property
    def length(self) -> int:
        """Steps in one pass through the script."""
        return self._length

    def _validate(self, script, at_end: str) -> tuple[list[int], list[int]]:
        """Every problem with the script at once, in one ValueError, before anything runs."""
        problems = []
        if at_end not in _AT_END:
            problems.append(f"at_end must be one of {_AT_END}, got {at_end!r}")
        entries = list(script) if isinstance(script, Sequence) else None
        if not entries:
            raise ValueError(
                f"invalid action script: need a non-empty list of (repeats, action) pairs, "
                f"got {script!r}" + (f"; {'; '.join(problems)}" if problems else "")
            )
        repeats, actions = [], []
        for i, entry in enumerate(entries):
            if not (isinstance(entry, Sequence) and len(entry) == 2) or not all(
                isinstance(v, int | np.integer) and not isinstance(v, bool) for v in entry
            ):
                problems.append(f"entry {i} is {entry!r}, not a (repeats, action) pair of ints")
                continue
            count, action = int(entry[0]), int(entry[1])
            if count < 0:
                problems.append(f"entry {i} {entry!r} repeats a negative number of times")
            if not self._low <= action <= self._high:
                problems.append(
                    f"entry {i} {entry!r} has action {action} outside the action spec "
                    f"[{self._low}, {self._high}]"
                )
            repeats.append(count)
            actions.append(action)
        if len(repeats) == len(entries) and sum(max(r, 0) for r in repeats) == 0:
            problems.append("every entry repeats 0 times, so the script has no steps")
        if problems:
            raise ValueError(
                f"invalid action script of {len(entries)} entries: {'; '.join(problems)}"
            )
        return repeats, actions

    def _batched_action(self, time_step, policy_state):
        step_type = np.asarray(time_step.step_type)
        step = np.where(step_type == _FIRST, 0, np.asarray(policy_state, np.int64))
        last = step_type == _LAST
        if not self._loop:
            over = (step >= self._length) & ~last
            if over.any():
                raise ValueError(
                    f"the action script ran out: its {self._entries} entries last "
                    f"{self._length} steps and an episode needs step {int(step[over][0]) + 1}; "
                    "lengthen the script or bind ScriptedPyPolicy.at_end = 'loop'"
                )
        entry = np.searchsorted(self._ends, np.minimum(step, self._length - 1), side="right")
        next_step = np.where(last, step, step + 1)
        if self._loop:
            next_step %= self._length
        return self._actions[entry], next_step.astype(np.int64)


@gin.configurable(denylist=["time_step_spec", "action_spec"])
class CartPoleHeuristicPyPolicy(_BatchedPyPolicy):
    """Pushes toward the side the pole is falling to: right iff `angle + k * angular_vel > 0`.

    `k` is `angular_velocity_gain` (seconds). The angle alone (k = 0) reacts too late and
    scores about 43 on CartPole-v1; k = 0.1 .. 0.5 balances the pole for the whole 500
    steps on every seed we tried (20 evaluation seeds); the angular velocity alone (large k)
    lets the cart drift and scores about 200. The cart position is ignored, which is why
    this rule is a baseline, not a controller. Observation: (x, x_dot, theta, theta_dot).
    """

    def __init__(
        self,
        time_step_spec: ts.TimeStep,
        action_spec: array_spec.BoundedArraySpec,
        angular_velocity_gain: float = 0.5,
    ) -> None:
        super().__init__(time_step_spec, action_spec)
        shape = tensor_spec.to_array_spec(time_step_spec.observation).shape
        if shape != (4,) or self._high - self._low != 1:
            raise ValueError(
                f"CartPoleHeuristicPyPolicy needs CartPole's 4-number observation and 2 "
                f"actions, got observation shape {shape} and actions {self._low}..{self._high}"
            )
        self._gain = float(angular_velocity_gain)

    def _batched_action(self, time_step, policy_state):
        obs = np.asarray(time_step.observation)
        right = obs[:, 2] + self._gain * obs[:, 3] > 0
        return right.astype(np.int64) + self._low, policy_state


# Geometry of Breakout in our (84, 84) frames (envs.atari: 210x160 -> 84x84, INTER_AREA),
# found by printing frames next to the emulator's RAM (paddle x at RAM[72], ball x/y at
# RAM[99]/RAM[101]): the side walls cover columns 0-4 and 79-83, the top wall rows 6-12,
# the bricks rows 22-37, the paddle is brightest on row 76. Between those the background
# is exactly 0, so any lit pixel there is the ball.
_FIELD = slice(5, 79)
_FIELD_COLUMNS = np.arange(5, 79, dtype=np.float64)
_BALL_ROWS = np.r_[13:22, 38:75]
_PADDLE_ROW = 76
_PADDLE_LEVEL = 60  # the paddle's row reads about 110; the ball's smear less
_CATCH_ROW = 75.0  # the ball's centre row when it meets the paddle
_LEFT_EDGE, _RIGHT_EDGE = 5.0, 78.0  # the ball's centre bounces between these columns


def _ball(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(visible, row, column) of the ball's centre in each (84, 84) frame; hidden in bricks."""
    region = frames[:, _BALL_ROWS, _FIELD].astype(np.float64)
    mass = region.sum(axis=(1, 2))
    visible = mass > 0
    mass = np.where(visible, mass, 1.0)
    row = region.sum(axis=2) @ _BALL_ROWS.astype(np.float64) / mass
    column = region.sum(axis=1) @ _FIELD_COLUMNS / mass
    return visible, row, column


def _paddle(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(visible, centre column) of the paddle in each frame."""
    lit = (frames[:, _PADDLE_ROW, _FIELD] > _PADDLE_LEVEL).astype(np.float64)
    count = lit.sum(axis=1)
    return count > 0, lit @ _FIELD_COLUMNS / np.maximum(count, 1.0)


def _fold(column: np.ndarray) -> np.ndarray:
    """Where a ball heading for `column` in an unbounded field is after bouncing off walls."""
    span = _RIGHT_EDGE - _LEFT_EDGE
    offset = np.mod(column - _LEFT_EDGE, 2 * span)
    return _LEFT_EDGE + np.where(offset <= span, offset, 2 * span - offset)


@gin.configurable(denylist=["time_step_spec", "action_spec"])
class BreakoutTrackerPyPolicy(_BatchedPyPolicy):
    """Plays Breakout from our (84, 84, stack) pixels: FIRE when no ball is in play, else track.

    No ball in view means the game waits for a serve (the start, or after a lost life; in
    evaluation nothing else presses FIRE, and a game left waiting runs to the frame cap) or
    the ball is among the bricks; FIRE serves in the first case and is a no-op in the
    second. With the ball in view the paddle heads for where the ball will cross the
    paddle's row (`lead=True`: the ball's velocity from the last two frames, bounced off
    the side walls) or for the ball's column (`lead=False`).

    The paddle has momentum: each agent step holding LEFT or RIGHT moves it about
    `paddle_step` columns (84-pixel frame) in that step and as much again in the next. The
    state is the last move (-1, 0, +1) per batch element, so each step picks the move
    that puts the paddle nearest the target after that carry-over, which keeps the paddle
    from swinging around the ball. On the eval protocol (20 seeds) it scores 357.5 ± 41.9
    per game against uniform random's 1.4 ± 1.5 and never loses its last life there: the
    ball ends up in a loop that hits no more bricks until the frame cap
    (scripts/bench/baselines.py).

    The action indices default to Breakout's minimal action set (NOOP, FIRE, RIGHT, LEFT).
    """

    def __init__(
        self,
        time_step_spec: ts.TimeStep,
        action_spec: array_spec.BoundedArraySpec,
        lead: bool = True,
        paddle_step: float = 5.5,
        noop: int = 0,
        fire: int = 1,
        right: int = 2,
        left: int = 3,
    ) -> None:
        state_spec = array_spec.ArraySpec((), np.int64, name="last_move")
        super().__init__(time_step_spec, action_spec, state_spec)
        shape = tensor_spec.to_array_spec(time_step_spec.observation).shape
        if len(shape) != 3 or shape[:2] != (84, 84) or shape[2] < 2:
            raise ValueError(
                "BreakoutTrackerPyPolicy reads (84, 84, stack >= 2) frames as envs.load_atari "
                f"makes them (screen_size=84, frame_stack >= 2), got observation shape {shape}"
            )
        for label, index in dict(noop=noop, fire=fire, right=right, left=left).items():
            if not self._low <= index <= self._high:
                raise ValueError(
                    f"{label}={index} is outside the actions {self._low}..{self._high}"
                )
        self._lead = bool(lead)
        self._paddle_step = float(paddle_step)
        self._fire = fire
        self._move_actions = np.asarray([noop, left, right], np.int64)  # moves 0, -1, +1
        self._moves = np.asarray([0, -1, 1], np.int64)  # ties go to standing still

    def _batched_action(self, time_step, policy_state):
        frames = np.asarray(time_step.observation)
        last_move = np.where(
            np.asarray(time_step.step_type) == _FIRST, 0, np.asarray(policy_state, np.int64)
        )
        seen, row, column = _ball(frames[..., -1])
        paddle_seen, paddle = _paddle(frames[..., -1])
        target = column
        if self._lead:
            seen_before, row_before, column_before = _ball(frames[..., -2])
            drop = row - row_before
            falling = seen & seen_before & (drop > 0)
            steps = np.where(falling, (_CATCH_ROW - row) / np.where(falling, drop, 1.0), 0.0)
            target = np.where(falling, _fold(column + (column - column_before) * steps), column)
        # Paddle after this step for each move: this step's push plus last step's carry-over.
        reach = paddle[:, None] + self._paddle_step * (last_move[:, None] + self._moves[None])
        choice = np.argmin(np.abs(target[:, None] - reach), axis=1)
        play = seen & paddle_seen
        action = np.where(play, self._move_actions[choice], self._fire)
        return action, np.where(play, self._moves[choice], 0)


class _TFPyPolicy(tf_py_policy.TFPyPolicy):
    """TF-Agents' wrapper with the initial state built in TF: zeros, as our py policies use.

    TF-Agents 0.19 asks the py policy for it through a numpy_function that passes the batch
    size as a tuple and cannot pack an empty state; zeros from the spec need neither.
    """

    def _get_initial_state(self, batch_size):
        return tensor_spec.zero_spec_nest(self.policy_state_spec, outer_dims=[batch_size])


def as_tf_policy(policy: py_policy.PyPolicy) -> tf_policy.TFPolicy:
    """The same policy for TF drivers (collection); it runs in Python through a numpy_function.

    A ValueError the policy raises (a `ScriptedPyPolicy` that ran out) reaches the caller as
    `tf.errors.InvalidArgumentError` with the same message.
    """
    return _TFPyPolicy(policy, py_policy_is_batched=True)
