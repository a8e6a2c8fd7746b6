"""Each attempt's peak memory is its own trainer's, not the largest child's so far."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipeline.sweep import usage
from tests.conftest import REPO

# Run in a fresh interpreter: Linux counts a parent's resident pages at the child's exec into
# the child's peak, and this test process may hold TensorFlow's hundreds of MB by now.
PEAKS = """
import json, subprocess, sys, time
from pipeline.sweep import usage
ALLOCATE = "block = bytearray({mb} * 2**20); block[::4096] = bytes(len(block[::4096]))"
peaks = []
for mb in (300, 10):
    process = subprocess.Popen([sys.executable, "-c", ALLOCATE.format(mb=mb)])
    while (reaped := usage.reap(process)) is None:
        time.sleep(0.05)
    assert process.returncode == reaped[0] == 0
    peaks.append(reaped[1])
print(json.dumps(peaks))
"""


def test_peaks_are_per_child_and_recorded_per_attempt(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-c", PEAKS], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    big, small = json.loads(result.stdout)
    assert big > 300 and small < 150, (big, small)  # RUSAGE_CHILDREN would give 300+ twice
    log = tmp_path / "Pong" / "s0.log"
    log.parent.mkdir()
    usage.record(log, "local", 12.0, 75, big)
    usage.record(log, "local", 8.0, 0, small)
    with (log.parent / "s0.usage.jsonl").open("a") as f:
        f.write('{"torn')  # a line cut short by a kill
    assert [a["exit"] for a in usage.attempts(log)] == [75, 0]
    assert usage.peak_rss_mb(log) == round(big, 1)
    assert usage.peak_rss_mb(tmp_path / "none.log") is None
