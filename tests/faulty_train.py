"""Runs `python -m pipeline.train` with a real fault timed from inside the process.

    python -m tests.faulty_train FAULT [pipeline.train arguments...]   (from the repository)

FAULT is one of:
- `kill-at-replacement`: right after the run resumes from its checkpoint, a real SIGTERM (a
  pre-emption), so the loop checkpoints the same step again, replacing the checkpoint it
  resumed from; the moment that checkpoint's directory loses its name (deleted or renamed
  away), a real SIGKILL.
- `sigterm-mid-round`: a real SIGTERM after the first call of the first update round, so
  the signal lands inside a round of updates.
- `kill-after-episode`: a real SIGKILL right after the Nth training episode ends (N from
  the environment variable FAULTY_EPISODES).
Used by tests/run/test_disk_faults.py and tests/loops/test_resume.py.
"""

from __future__ import annotations

import os
import re
import runpy
import shutil
import signal
import sys
from pathlib import Path

from pipeline.loops import base, off_policy

CHECKPOINT_NAME = re.compile(r"ckpt-\d+")


def kill_at_replacement() -> None:
    real_replace, real_rmtree, real_restore = os.replace, shutil.rmtree, base.TrainingLoop.restore

    def kill_if_a_checkpoint_lost_its_name(path) -> None:
        if CHECKPOINT_NAME.fullmatch(Path(path).name) and not Path(path).exists():
            os.kill(os.getpid(), signal.SIGKILL)

    def replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        kill_if_a_checkpoint_lost_its_name(src)

    def rmtree(path, *args, **kwargs):
        real_rmtree(path, *args, **kwargs)
        kill_if_a_checkpoint_lost_its_name(path)

    def restore_then_sigterm(self):
        resumed_at = real_restore(self)
        if resumed_at is not None:
            os.kill(os.getpid(), signal.SIGTERM)
        return resumed_at

    os.replace, shutil.rmtree = replace, rmtree
    base.TrainingLoop.restore = restore_then_sigterm


def sigterm_mid_round() -> None:
    real_init = off_policy.Experiment.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        updates = self.train_updates
        calls = []

        def first_call_then_sigterm(count):
            result = updates(count)
            calls.append(count)
            if len(calls) == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            return result

        self.train_updates = first_call_then_sigterm

    off_policy.Experiment.__init__ = init


def kill_after_episode() -> None:
    """SIGKILL right after the Nth training episode this process sees end (N: env
    FAULTY_EPISODES), from an observer inside the collection driver."""
    import tensorflow as tf

    target = int(os.environ.get("FAULTY_EPISODES", "3"))
    ended = []
    real_init = off_policy.Experiment.__init__

    def count(is_last):
        ended.extend(bool(x) for x in is_last.numpy() if x)
        if len(ended) >= target:
            os.kill(os.getpid(), signal.SIGKILL)
        return 0

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self._observers.append(lambda traj: tf.py_function(count, [traj.is_last()], tf.int32))

    off_policy.Experiment.__init__ = init


FAULTS = {
    "kill-at-replacement": kill_at_replacement,
    "sigterm-mid-round": sigterm_mid_round,
    "kill-after-episode": kill_after_episode,
}

if __name__ == "__main__":
    FAULTS[sys.argv[1]]()
    sys.argv = ["pipeline.train", *sys.argv[2:]]
    runpy.run_module("pipeline.train", run_name="__main__")
