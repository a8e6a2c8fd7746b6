"""Evaluation: N episodes played side by side, one policy call per step for all.

The policy is the agent's greedy one, wrapped in a little epsilon where the gin file asks
(`train.eval_epsilon`: the Atari protocols). Each episode starts from a fixed reset seed
(`eval_episode_seeds`), so evaluations differ only by the weights. With epsilon-greedy
evaluation a game whose frame stack has not changed since its greedy action was computed takes
that action again (`EpsilonGreedyPolicy.action_reusing_greedy`): the same games, with the
greedy policy run on about a fifth of the rows for a trained DrQ agent on Breakout, whose
games wait for a serve most of the time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from tf_agents.policies import py_policy, py_tf_eager_policy, tf_policy
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import policy_step
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories.time_step import StepType
from tf_agents.utils import nest_utils

from envs.gym_bridge import GymnasiumEnvironment
from pipeline.loops.eval_worker import EvalWorker

EVAL_SEED_OFFSET = 1_000_003  # keeps eval resets apart from the training env's seed


def eval_episode_seeds(seed: int, episodes: int) -> list[int]:
    """The reset seeds of a run's evaluation episodes (the trainer, evaluate and baselines)."""
    return [seed * EVAL_SEED_OFFSET + EVAL_SEED_OFFSET + i for i in range(episodes)]


@dataclass(frozen=True)
class EpisodeStats:
    returns: np.ndarray
    lengths: np.ndarray

    def summary(self) -> dict[str, float]:
        return {
            "eval_return_mean": float(np.mean(self.returns)),
            "eval_return_std": float(np.std(self.returns)),
            "eval_return_min": float(np.min(self.returns)),
            "eval_return_max": float(np.max(self.returns)),
            "eval_length_mean": float(np.mean(self.lengths)),
            "eval_episodes": int(len(self.returns)),
        }


class Evaluator:
    """Plays one episode in each of its envs, reset with fixed seeds so evals are comparable.

    Each evaluation starts every env from the same seed, so two evaluations of the same
    weights give the same numbers and curves show changes in the policy, not in the draws.
    """

    def __init__(
        self, envs: Sequence[GymnasiumEnvironment], seeds: Sequence[int], processes: int = 1
    ):
        """`processes=2`: the odd-numbered games are stepped in an `EvalWorker` process (the
        same games; worth it where the env step, not the policy, is the cost: Atari)."""
        if len(envs) != len(seeds):
            raise ValueError("one seed per evaluation env")
        if processes not in (1, 2):
            raise ValueError(f"processes must be 1 or 2, got {processes}")
        self._envs = list(envs)
        self._seeds = list(seeds)
        self._processes = processes
        self._worker: EvalWorker | None = None  # forked at the first evaluation that uses it
        # Greedy actions reused while a game's observation repeats (`_Lockstep.policy_inputs`);
        # False recomputes every row (for benchmarks).
        self.reuse_greedy = True

    def run(
        self,
        policy: py_policy.PyPolicy,
        should_stop: Callable[[], bool] = lambda: False,
        observer: Callable[[int, GymnasiumEnvironment], None] | None = None,
        episodes: int | None = None,
    ) -> EpisodeStats | None:
        """Plays the episodes; None if `should_stop()` turned true first (a pre-emption).

        `episodes`: play only the first that many envs (default: all), so a run can hold
        more envs for its final evaluation than for the ones along the way.
        `observer(i, env)` is called after episode i's reset and after each of its steps
        (to film it).
        """
        n = len(self._envs) if episodes is None else episodes
        if not 0 < n <= len(self._envs):
            raise ValueError(f"episodes must be in 1..{len(self._envs)}, got {n}")
        envs = self._envs[:n]
        compiled = isinstance(policy, CompiledPyPolicy)
        reuse = compiled and policy.reuses_greedy and self.reuse_greedy
        games = _Lockstep(envs, self._seeds[:n], self._worker_for(observer), reuse)
        if compiled and observer is None:
            return games.play_in_graph(policy, should_stop)
        if observer is not None:
            for i, env in enumerate(envs):
                observer(i, env)
        policy_state = policy.get_initial_state(n)
        stateless = not tf.nest.flatten(policy_state)
        while games.running.any():
            if should_stop():
                return None
            live = np.flatnonzero(games.running)
            if compiled:  # the moves of `play_in_graph`, one call at a time
                games.take(policy.call(games.policy_inputs(policy), reuse), observer)
            elif stateless:  # only the games still running, padded to a power of two
                action_step = policy.action(games.policy_rows(), ())
                games.advance(np.asarray(action_step.action)[: live.size], observer)
            else:  # a policy with state sees every env, as it was built for
                batch = nest_utils.stack_nested_arrays(games.time_steps)
                action_step = policy.action(batch, policy_state)
                policy_state = action_step.state
                games.advance(np.asarray(action_step.action)[live], observer)
        return games.stats()

    def _worker_for(self, observer) -> EvalWorker | None:
        """The worker, where games go to two processes: not for a filmed evaluation, whose
        observer reads the envs of this process."""
        if self._processes == 1 or observer is not None or len(self._envs) < 2:
            return None
        if self._worker is None:
            self._worker = EvalWorker(
                dict(enumerate(self._envs)), indices=range(1, len(self._envs), 2)
            )
        return self._worker

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
        for env in self._envs:
            env.close()


class _Lockstep:
    """One evaluation's games, advanced one step for all at a time; finished ones wait.

    With a `worker`, the games it owns (`worker.indices`) are stepped there, while this
    process steps the others."""

    def __init__(
        self,
        envs: Sequence[GymnasiumEnvironment],
        seeds: Sequence[int],
        worker: EvalWorker | None = None,
        reuse: bool = False,
    ):
        """`reuse`: a game whose observation is the one its greedy action was computed on
        takes that action again (`EpsilonGreedyPolicy.action_reusing_greedy`)."""
        self._envs = list(envs)
        self._reuse = reuse
        # game -> its last computed greedy action and the observation it was computed on
        self._greedy: dict[int, tuple[Any, np.ndarray]] = {}
        self._asked: tuple[np.ndarray, np.ndarray] | None = None
        n = len(self._envs)
        self.returns = np.zeros(n, np.float64)
        self.lengths = np.zeros(n, np.int64)
        self.running = np.ones(n, bool)
        self._worker = worker
        self._remote = {i for i in worker.indices if i < n} if worker else set()
        self._unmovable: set[int] = set()  # games whose env cannot say its state
        self._balanced_for = n  # running games when the split was last evened out
        if self._remote:
            worker.reset([(i, seeds[i]) for i in sorted(self._remote)])
        self.time_steps: list = [None] * n
        for i, (env, seed) in enumerate(zip(self._envs, seeds, strict=True)):
            if i not in self._remote:
                env.seed(seed)
                self.time_steps[i] = env.reset()
        if self._remote:
            for i, time_step in worker.receive():
                self.time_steps[i] = time_step

    def policy_rows(self) -> ts.TimeStep:
        """The running games' time steps, stacked and padded by `_padded`."""
        return self._stacked(_padded(np.flatnonzero(self.running), len(self._envs)))

    def _stacked(self, games: np.ndarray) -> ts.TimeStep:
        return nest_utils.stack_nested_arrays([self.time_steps[i] for i in games])

    def policy_inputs(self, policy: CompiledPyPolicy) -> list[np.ndarray]:
        """What `policy.call` takes for the running games (rows padded by `_padded`): their
        flat time steps; with reuse, those of the rows whose greedy action is not known for
        their observation, those rows, and every row's known greedy action (0 where not)."""
        rows = _padded(np.flatnonzero(self.running), len(self._envs))
        if not self._reuse:
            return policy.flat_inputs(self._stacked(rows))
        live = np.count_nonzero(self.running)
        fresh = np.array([p for p in range(live) if not self._known(rows[p])], np.int32)
        reused = np.array(
            [self._greedy[game][0] if game in self._greedy else 0 for game in rows],
            policy.action_dtype,
        )
        self._asked = (rows, fresh)
        inputs = policy.flat_inputs(self._stacked(rows[fresh] if fresh.size else rows[:1]))
        if not fresh.size:  # every greedy action known: the policy runs on no rows
            inputs = [value[:0] for value in inputs]
        return [*inputs, fresh, reused]

    def _known(self, game: int) -> bool:
        known = self._greedy.get(game)
        return known is not None and np.array_equal(known[1], self.time_steps[game].observation)

    def take(self, outputs: Sequence[np.ndarray], observer=None) -> None:
        """Plays the actions `policy.call(self.policy_inputs(policy))` returned; with reuse,
        keeps the greedy actions it computed and the observations they are for."""
        if self._reuse:
            rows, fresh = self._asked
            greedy = np.asarray(outputs[1])
            for row in fresh:
                game = rows[row]
                self._greedy[game] = (greedy[row], np.array(self.time_steps[game].observation))
        self.advance(np.asarray(outputs[0])[: np.count_nonzero(self.running)], observer)

    def advance(
        self,
        actions: np.ndarray,
        observer: Callable[[int, GymnasiumEnvironment], None] | None = None,
    ) -> None:
        """Steps each running game with its action (`actions` in the order of the games)."""
        live = np.flatnonzero(self.running)
        chosen = np.zeros(len(self._envs), np.int64)
        chosen[live] = actions
        if self._worker is not None and live.size != self._balanced_for:
            self._balance(live)
            self._balanced_for = live.size
        far = [i for i in live if i in self._remote]
        if far:  # the worker steps its games meanwhile
            self._worker.step([(i, chosen[i]) for i in far])
        for i in live:
            if i not in self._remote:
                self._record(i, self._envs[i].step(chosen[i]), observer)
        if far:
            for i, time_step in self._worker.receive():
                self._record(i, time_step, observer)

    def _balance(self, live: np.ndarray) -> None:
        """Moves games between the processes so each steps half the running ones (this one
        the odd one out) as games end: the games' lengths differ a lot (a stalled Breakout
        game runs to the frame cap), and a process left with the long ones alone would step
        them while the other waits. A game moves with its env's exact `get_state`."""
        remote = [i for i in live if i in self._remote]
        excess = live.size - len(remote) - (live.size + 1) // 2  # games this process has too many
        here = [i for i in live if i not in self._remote and i not in self._unmovable]
        there = [i for i in remote if i not in self._unmovable]
        if excess > 0 and here:
            states = [(i, self._envs[i].get_state()) for i in here[-excess:]]
            self._unmovable.update(i for i, state in states if state is None)
            states = [(i, state) for i, state in states if state is not None]
            if states:
                self._worker.adopt(states)
                self._remote.update(i for i, _ in states)
        elif excess < 0 and there:
            for i, state in self._worker.release(there[excess:]):
                if state is None:
                    self._unmovable.add(i)
                else:
                    self._envs[i].set_state(state)
                    self._remote.discard(i)

    def _record(self, i: int, time_step: ts.TimeStep, observer) -> None:
        self.time_steps[i] = time_step
        self.returns[i] += time_step.reward
        self.lengths[i] += 1
        self.running[i] = time_step.step_type != StepType.LAST
        if observer is not None:
            observer(i, self._envs[i])

    def stats(self) -> EpisodeStats:
        return EpisodeStats(returns=self.returns, lengths=self.lengths)

    def play_in_graph(
        self, policy: CompiledPyPolicy, should_stop: Callable[[], bool]
    ) -> EpisodeStats | None:
        """The same moves as `Evaluator.run`'s loop, with the policy calls in one TF loop:
        a step then costs no Python dispatch of the policy (about half an evaluation's time
        on CartPole). None if `should_stop()` turned true before the games ended."""
        first = self.policy_inputs(policy)
        empty = [value[:0] for value in first]
        stopped = False

        def step(*outputs: np.ndarray) -> list[np.ndarray]:
            nonlocal stopped
            self.take(outputs)
            if not self.running.any():
                return [np.asarray(True), *empty]
            stopped = should_stop()
            if stopped:
                return [np.asarray(True), *empty]
            return [np.asarray(False), *self.policy_inputs(policy)]

        if should_stop():
            return None
        policy.play(first, step, self._reuse)
        return None if stopped else self.stats()


class CompiledPyPolicy(py_policy.PyPolicy):
    """A stateless TF policy called through one concrete function on the flat time step.

    `PyTFEagerPolicy` spends milliseconds per call on CPU converting nests and dispatching
    its `tf.function` (3.7 ms a call in a CartPole run, more than the MLP itself); an
    evaluation calls the policy once per step. One concrete function with a free batch
    dimension runs the same graph for every batch size without that overhead.

    Where the TF policy can reuse greedy actions (`EpsilonGreedyPolicy.reuses_greedy`: the
    Atari evaluations), `reuses_greedy` is true and `call` takes `[*time step of the rows to
    compute, their rows, every row's known greedy action]` (`_Lockstep.policy_inputs`).
    """

    def __init__(self, policy: tf_policy.TFPolicy):
        if not is_stateless(policy):
            raise ValueError("CompiledPyPolicy serves stateless policies only")
        super().__init__(
            tensor_spec.to_nest_array_spec(policy.time_step_spec),
            tensor_spec.to_nest_array_spec(policy.action_spec),
        )
        specs = tf.nest.map_structure(
            lambda spec: tf.TensorSpec([None, *spec.shape], spec.dtype, spec.name),
            policy.time_step_spec,
        )
        flat_specs = tf.nest.flatten(specs)
        self._dtypes = [spec.dtype.as_numpy_dtype for spec in flat_specs]

        def action(*flat: tf.Tensor):
            return (policy.action(tf.nest.pack_sequence_as(specs, list(flat))).action,)

        self._action_fn = _concrete(action, flat_specs)
        self.reuses_greedy = bool(getattr(policy, "reuses_greedy", False)) and (
            len(tf.nest.flatten(policy.time_step_spec.observation)) == 1
        )
        self._loops = {False: (self._action_fn, flat_specs)}
        if self.reuses_greedy:
            self.action_dtype = tf.nest.flatten(policy.action_spec)[0].dtype.as_numpy_dtype
            reuse_specs = [
                *flat_specs,
                tf.TensorSpec([None], tf.int32, "rows"),
                tf.TensorSpec([None], tf.nest.flatten(policy.action_spec)[0].dtype, "reused"),
            ]

            def reusing(*inputs: tf.Tensor):
                *flat, rows, reused = inputs
                time_step = tf.nest.pack_sequence_as(specs, flat)
                return policy.action_reusing_greedy(time_step, rows, reused)

            self._loops[True] = (_concrete(reusing, reuse_specs), reuse_specs)
        self._play_fns: dict[bool, Callable] = {}
        self._step: Callable[..., list[np.ndarray]] | None = None

    def flat_inputs(self, time_step: ts.TimeStep) -> list[np.ndarray]:
        return [
            np.asarray(value, dtype)
            for value, dtype in zip(tf.nest.flatten(time_step), self._dtypes, strict=True)
        ]

    def call(self, inputs: list[np.ndarray], reuse: bool = False) -> list[np.ndarray]:
        """The policy on `inputs`: `[actions]`, or with `reuse` `[actions, greedy actions]`."""
        return [np.asarray(value) for value in self._loops[reuse][0](*inputs)]

    def play(self, first: list[np.ndarray], step: Callable[..., list], reuse: bool = False) -> None:
        """Calls the policy on `first`, then on each list `step(*outputs of call)` returns,
        inside one graph loop; `step` returns `[done, *next inputs]`; the loop ends when
        done."""
        if reuse not in self._play_fns:
            self._play_fns[reuse] = _concrete(
                self._graph_loop(*self._loops[reuse]), self._loops[reuse][1]
            )
        self._step = step
        try:
            self._play_fns[reuse](*first)
        finally:
            self._step = None

    def _graph_loop(self, fn: Callable, specs: list[tf.TensorSpec]) -> Callable:
        def play(*first: tf.Tensor) -> tf.Tensor:
            """Policy, then `self._step` (Python), until `_step` says the games are over."""

            def body(done, *inputs):
                out = tf.numpy_function(
                    lambda *outputs: self._step(*outputs),
                    list(fn(*inputs)),
                    [tf.bool, *[spec.dtype for spec in specs]],
                )
                out[0].set_shape([])
                for value, spec in zip(out[1:], specs, strict=True):
                    value.set_shape(spec.shape)
                return tuple(out)

            invariants = (tf.TensorShape([]), *[spec.shape for spec in specs])
            return tf.while_loop(
                lambda done, *_: tf.logical_not(done),
                body,
                (tf.constant(False), *first),
                shape_invariants=invariants,
                parallel_iterations=1,
            )[0]

        return play

    def _action(self, time_step, policy_state):
        action = tf.nest.map_structure(np.asarray, self._action_fn(*self.flat_inputs(time_step))[0])
        return policy_step.PolicyStep(action, policy_state, ())


def _concrete(fn: Callable, specs: list[tf.TensorSpec]):
    return tf.function(fn, autograph=False).get_concrete_function(*specs)


def is_stateless(policy: tf_policy.TFPolicy) -> bool:
    return not tf.nest.flatten(policy.policy_state_spec)


def py_policy_for_evaluation(policy: tf_policy.TFPolicy) -> py_policy.PyPolicy:
    """The fastest exact Python wrapper for `policy`: compiled when stateless."""
    if is_stateless(policy):
        return CompiledPyPolicy(policy)
    return py_tf_eager_policy.PyTFEagerPolicy(policy, use_tf_function=True, batch_time_steps=False)


def _padded(live: np.ndarray, most: int) -> np.ndarray:
    """`live` padded (repeating its first) to the next power of two, at most `most` rows.

    Whole games last very different lengths (a stalled Atari game runs to the frame cap);
    evaluating only the running ones saves the policy's work on finished ones, and a few
    batch sizes keep the policy's tf.function from tracing once per size.
    """
    size = min(1 << int(live.size - 1).bit_length(), most)
    size = max(size, live.size)
    return np.concatenate([live, np.full(size - live.size, live[0])])
