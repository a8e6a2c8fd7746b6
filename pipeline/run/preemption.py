"""Turns the signals a cluster sends before killing a job into a checkpoint and a clean exit.

Slurm sends SIGTERM when it pre-empts, cancels or requeues a job (then SIGKILL after
KillWait, 30 s by default), and SIGUSR1 when asked to warn ahead (`--signal=USR1@120`).
The handler only raises a flag; the loop checks it between iterations, writes a
checkpoint and raises `Preempted`, and `pipeline.train` exits with `EXIT_PREEMPTED`.
"""

from __future__ import annotations

import signal
import types

from absl import logging

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped early, a checkpoint is written; run it again
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preempted(Exception):
    """Raised by the loop once the checkpoint asked for by a signal is written."""

    def __init__(self, signal_name: str, env_steps: int):
        super().__init__(f"stopped by {signal_name} at {env_steps:,} env steps")
        self.signal_name = signal_name
        self.env_steps = env_steps


class PreemptionFlag:
    """Within `with`, the first of SIGNALS sets `requested`; a second SIGINT still aborts."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        del frame
        name = signal.Signals(signum).name
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.requested:
            logging.warning("received %s: writing a checkpoint, then exiting", name)
        self.signal_name = self.signal_name or name

    def __enter__(self) -> PreemptionFlag:
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
