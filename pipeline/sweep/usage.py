"""What each attempt of a run cost: its wall seconds and the peak resident memory of its
trainer, appended to `<run log>.usage.jsonl` (`s0.log` -> `s0.usage.jsonl`) by the launchers.

The peak comes from `os.wait4`, which returns the resource usage of the one child it reaps:
`ru_maxrss` of the trainer or of a process it waited for (its evaluation worker), whichever
was largest. `getrusage(RUSAGE_CHILDREN)` would give the largest child this launcher ever
reaped instead, so the sweep's second run would inherit the first one's peak. Linux counts the
launcher's own resident memory when it starts the child into the child's peak (its pages at
exec), a floor of some tens of MB for these launchers, which import no TensorFlow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def usage_path(log: str | Path) -> Path:
    return Path(log).with_suffix(".usage.jsonl")


def reap(process: subprocess.Popen, block: bool = False) -> tuple[int, float | None] | None:
    """Reaps `process` if it exited (or waits for it, `block`): its exit code and peak RSS in
    MB, None while it runs. Sets `process.returncode`, as `Popen.poll` would; a child reaped
    elsewhere gives its code and no peak."""
    if process.returncode is not None:
        return process.returncode, None
    try:
        pid, status, rusage = os.wait4(process.pid, 0 if block else os.WNOHANG)
    except ChildProcessError:  # reaped by someone else (Popen.wait in a signal handler)
        process.poll()
        return (process.returncode, None) if process.returncode is not None else None
    if pid == 0:
        return None
    process.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 2**10
    return process.returncode, rusage.ru_maxrss * scale


def record(
    log: str | Path, where: str, seconds: float, code: int, peak_rss_mb: float | None
) -> None:
    """Appends one attempt's line; a launcher must not fail a finished run over it."""
    line = {
        "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "where": where,
        "wall_s": round(seconds, 3),
        "exit": code,
        "peak_rss_mb": None if peak_rss_mb is None else round(peak_rss_mb, 1),
    }
    try:
        with usage_path(log).open("a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
    except OSError:
        pass


def attempts(log: str | Path) -> list[dict]:
    """The attempts recorded for the run whose log this is, oldest first."""
    try:
        text = usage_path(log).read_text(encoding="utf-8")
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    return rows


def peak_rss_mb(log: str | Path) -> float | None:
    """The largest peak over the run's attempts; None where none was measured."""
    peaks = [row["peak_rss_mb"] for row in attempts(log) if row.get("peak_rss_mb") is not None]
    return max(peaks) if peaks else None
