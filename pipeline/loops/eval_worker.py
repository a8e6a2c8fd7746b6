"""Half of an evaluation's games stepped in a second process: two cores' emulators, same games.

An evaluation at the Atari-100k protocol plays about 900k agent steps (100 whole games at
epsilon 0.001, each life lost waits for the agent, or a random action, to press FIRE), and
the emulator, which holds the GIL, is most of that time. `EvalWorker` is a forked child that
owns the odd-numbered envs of an evaluator and steps them while this process steps the even
ones: each game is played by one process from its own reset seed, so the games, and every
number they give, are those of the one-process evaluation (`tests/loops/test_evaluation_policy.py`).

Forked, not spawned, so the child has the envs exactly as the run built them (gin settings
and all) without importing or configuring anything. The child touches no TensorFlow (which is
not fork-safe), only the envs. It ignores SIGINT and SIGTERM (the run stops it) and exits when
the run's end of the pipe closes, a killed run included.

A game can move between the processes mid-evaluation (`adopt`, `release`: the env's exact
`get_state`, as a checkpoint holds it), so the evaluator keeps the running games split evenly
as games end (see `_Lockstep`).
"""

from __future__ import annotations

import multiprocessing
import signal
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from tf_agents.environments import py_environment

STOP_TIMEOUT_S = 10.0


class EvalWorker:
    """A child process that seeds, resets and steps `envs` (index -> env) on request.

    `indices`: the games it plays from their reset (default: all of `envs`); the others it
    holds only to `adopt` mid-game.
    """

    def __init__(
        self,
        envs: dict[int, py_environment.PyEnvironment],
        indices: Iterable[int] | None = None,
    ):
        context = multiprocessing.get_context("fork")
        self._conn, child = context.Pipe()
        with warnings.catch_warnings():  # Python 3.12+ warns of fork in a threaded process
            warnings.simplefilter("ignore", DeprecationWarning)
            self._process = context.Process(
                target=_serve, args=(child, envs, self._conn), name="eval-worker", daemon=True
            )
            self._process.start()
        child.close()
        self.indices = frozenset(envs if indices is None else indices)
        if not self.indices <= envs.keys():
            raise ValueError(f"indices {sorted(self.indices - envs.keys())} have no env")

    def reset(self, seeds: Sequence[tuple[int, int]]) -> None:
        """Starts resetting env i with seed s for each (i, s); `receive` gives the steps."""
        self._conn.send(("reset", list(seeds)))

    def step(self, actions: Sequence[tuple[int, Any]]) -> None:
        """Starts stepping env i with action a for each (i, a); `receive` gives the steps."""
        self._conn.send(("step", list(actions)))

    def adopt(self, states: Sequence[tuple[int, bytes]]) -> None:
        """Env i continues from `states` (i's `get_state()` in the run's process) here."""
        self._conn.send(("adopt", list(states)))
        self._reply()

    def release(self, indices: Sequence[int]) -> list[tuple[int, bytes]]:
        """The (index, `get_state()`) pairs of `indices`, for the run's process to continue."""
        self._conn.send(("release", list(indices)))
        return self._reply()

    def receive(self) -> list[tuple[int, Any]]:
        """The (index, time step) pairs of the last `reset` or `step`."""
        return self._reply()

    def _reply(self) -> Any:
        try:
            reply = self._conn.recv()
        except EOFError:
            raise RuntimeError(
                f"the evaluation worker (pid {self._process.pid}) died "
                f"(exit {self._process.exitcode})"
            ) from None
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
            self._process.join(STOP_TIMEOUT_S)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._conn.close()


def _serve(conn, envs: dict[int, py_environment.PyEnvironment], run_end) -> None:
    # The fork copied the run's end of the pipe too: while this process holds it, the run's
    # death never reaches `recv` as EOF and the worker would outlive a killed run.
    run_end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _single_threaded_opencv()
    while True:
        try:
            command, payload = conn.recv()
        except EOFError:  # the run has gone
            return
        if command == "close":
            for env in envs.values():
                env.close()
            return
        try:
            if command == "adopt":
                reply = [envs[i].set_state(state) for i, state in payload]
            elif command == "release":
                reply = [(i, envs[i].get_state()) for i in payload]
            elif command == "reset":
                reply = [(i, _reset(envs[i], seed)) for i, seed in payload]
            else:
                reply = [(i, envs[i].step(action)) for i, action in payload]
        except Exception as error:  # noqa: BLE001 - raised again in the run's process
            reply = error
        conn.send(reply)


def _reset(env: py_environment.PyEnvironment, seed: int):
    env.seed(seed)
    return env.reset()


def _single_threaded_opencv() -> None:
    """OpenCV's thread pool did not survive the fork: resize on this thread alone."""
    try:
        import cv2
    except ImportError:
        return
    cv2.setNumThreads(0)
