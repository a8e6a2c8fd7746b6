"""Runs `python -m pipeline.train` with two real faults timed from inside the process.

Right after the run resumes from its checkpoint, a real SIGTERM (a pre-emption): the loop
then checkpoints the same step again, replacing the checkpoint it resumed from. The moment
that checkpoint's directory loses its name (deleted or renamed away), a real SIGKILL. Used
by tests/test_disk_faults.py; arguments are pipeline.train's.
"""

from __future__ import annotations

import os
import re
import runpy
import shutil
import signal
import sys
from pathlib import Path

from pipeline import loop

CHECKPOINT_NAME = re.compile(r"ckpt-\d+")
_replace, _rmtree, _restore = os.replace, shutil.rmtree, loop.TrainingLoop.restore


def _kill_if_a_checkpoint_lost_its_name(path) -> None:
    if CHECKPOINT_NAME.fullmatch(Path(path).name) and not Path(path).exists():
        os.kill(os.getpid(), signal.SIGKILL)


def replace(src, dst, *args, **kwargs):
    _replace(src, dst, *args, **kwargs)
    _kill_if_a_checkpoint_lost_its_name(src)


def rmtree(path, *args, **kwargs):
    _rmtree(path, *args, **kwargs)
    _kill_if_a_checkpoint_lost_its_name(path)


def restore_then_sigterm(self):
    resumed_at = _restore(self)
    if resumed_at is not None:
        os.kill(os.getpid(), signal.SIGTERM)
    return resumed_at


os.replace, shutil.rmtree = replace, rmtree
loop.TrainingLoop.restore = restore_then_sigterm
sys.argv = ["pipeline.train", *sys.argv[1:]]
runpy.run_module("pipeline.train", run_name="__main__")
