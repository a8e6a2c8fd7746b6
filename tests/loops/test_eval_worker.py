"""The evaluation worker process ends with the run, a SIGKILLed run included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.conftest import REPO

KILLED_RUN = """
import os, signal, sys
import envs
from pipeline.loops.eval_worker import EvalWorker
worker = EvalWorker({1: envs.load_gymnasium(training=False)})
worker.reset([(1, 7)])
worker.receive()
print(worker._process.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited, only not been reaped yet
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_the_worker_exits_when_its_run_is_killed():
    run = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    worker_pid = int(run.stdout.readline())  # not read to EOF: a live worker holds stdout
    assert run.wait(timeout=120) == -signal.SIGKILL
    run.stdout.close()
    deadline = time.monotonic() + 20
    while _alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _alive(worker_pid)
    if alive:
        os.kill(worker_pid, signal.SIGKILL)
    assert not alive, "the evaluation worker outlived its killed run"
