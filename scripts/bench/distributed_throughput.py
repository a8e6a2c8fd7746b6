"""Environment steps per second: one process against the distributed mode, on Breakout.

Runs, one after the other in this process's lifetime, the same DQN Breakout experiment
(dqn_breakout.gin with a short random start and budget, see BINDINGS):

  single   python -m pipeline.train
  dist-1   python -m pipeline.distributed.launch --num_collectors=1
  dist-2   python -m pipeline.distributed.launch --num_collectors=2

and reads each run's progress lines (env steps, time) over its learning phase only (after the
random start, before the final evaluation). For the distributed runs it also polls the replay
table's rate limiter once a second and reports the samples-per-insert ratio measured over the
same phase against its setting (batch 32 x 1 update / 4 steps = 8; target within +-10%).
`--steps_per_update=32` lightens the learner (in every mode) to see whether collection
scales with collectors once the learner is not the bottleneck.

    .venv/bin/python scripts/bench/distributed_throughput.py [--learn_steps=8000]
        [--steps_per_update=4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the ratio probe imports reverb (TF)
PROGRESS = re.compile(r"^I(\d{4}) (\d\d:\d\d:\d\d\.\d+) .*env steps ([\d,]+)/")
BATCH = 32  # dqn_breakout.gin's batch size


def bindings(random_start: int, learn_steps: int, steps_per_update: int) -> list[str]:
    return [
        f"train.collect_steps_per_iteration={steps_per_update}",
        "train.train_steps_per_iteration=1",
        f"train.initial_collect_steps={random_start}",
        f"train.total_env_steps={random_start + learn_steps}",
        "train.replay_capacity=100_000",
        "train.eval_interval=10_000_000",
        "train.eval_episodes=1",
        "train.progress_interval_s=2.0",
        "train.checkpoint_interval=10_000_000",
        "train.checkpoint_replay=False",
    ]


def progress_points(text: str) -> list[tuple[float, int]]:
    points = []
    for line in text.splitlines():
        match = PROGRESS.match(line)
        if match:
            clock = dt.datetime.strptime(match.group(2), "%H:%M:%S.%f")
            seconds = clock.hour * 3600 + clock.minute * 60 + clock.second + clock.microsecond / 1e6
            points.append((seconds, int(match.group(3).replace(",", ""))))
    return points


def learning_rate(points: list[tuple[float, int]], random_start: int, end: int) -> float:
    """Env steps/s between the first and last progress line of the learning phase."""
    window = [(t, s) for t, s in points if random_start <= s < end]
    if len(window) < 2:
        raise SystemExit(f"too few progress lines in the learning phase: {points}")
    (t0, s0), (t1, s1) = window[0], window[-1]
    return (s1 - s0) / (t1 - t0)


class RatioProbe(threading.Thread):
    """Polls the replay table's insert and sample counts while a distributed run lasts."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.points, self.done = port, [], threading.Event()

    def run(self) -> None:
        import reverb

        client = reverb.Client(f"localhost:{self.port}")
        while not self.done.is_set():
            try:
                limiter = client.server_info(timeout=2)["replay"].rate_limiter_info
                self.points.append(
                    (int(limiter.insert_stats.completed), int(limiter.sample_stats.completed))
                )
            except Exception:  # not up yet, or gone: keep polling until told to stop
                pass
            time.sleep(1.0)

    def ratio(self, random_start: int) -> float:
        """Samples per insert over the learning phase (from 500 inserts past the start)."""
        learning = [(i, s) for i, s in self.points if i >= random_start + 500]
        (i0, s0), (i1, s1) = learning[0], learning[-1]
        return (s1 - s0) / (i1 - i0)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def run_mode(name: str, root: Path, args, gin: list[str]) -> dict:
    end = args.random_start + args.learn_steps
    port = free_port()
    if name == "single":
        command = [sys.executable, "-m", "pipeline.train", *gin, f"--root_dir={root}"]
    else:
        collectors = int(name.split("-")[1])
        command = [sys.executable, "-m", "pipeline.distributed.launch", *gin, f"--root_dir={root}",
                   f"--port={port}", f"--num_collectors={collectors}"]  # fmt: skip
    probe = RatioProbe(port) if name != "single" else None
    if probe:
        probe.start()
    started = time.monotonic()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - started
    if probe:
        probe.done.set()
        probe.join()
    if result.returncode != 0:
        raise SystemExit(f"{name} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    log = result.stderr if name == "single" else (root / "logs" / "learner.log").read_text()
    row = {
        "mode": name,
        "steps_per_s": learning_rate(progress_points(log), args.random_start, end),
        "wall_s": wall,
    }
    if probe:
        row["samples_per_insert"] = probe.ratio(args.random_start)
    print(f"{name}: {row}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random_start", type=int, default=2_000)
    parser.add_argument("--learn_steps", type=int, default=6_000)
    parser.add_argument("--modes", default="single,dist-1,dist-2")
    parser.add_argument(
        "--steps_per_update",
        type=int,
        default=4,
        help="env steps per update, in every mode (4: the gin file's; more: less learner work)",
    )
    args = parser.parse_args()
    setting = BATCH / args.steps_per_update
    gin = ["--gin_file=dqn_breakout.gin"]
    gin += [
        f"--gin_bindings={b}"
        for b in bindings(args.random_start, args.learn_steps, args.steps_per_update)
    ]
    tmp = Path(tempfile.mkdtemp(prefix="dist-bench-"))
    try:
        rows = [run_mode(m, tmp / m, args, gin) for m in args.modes.split(",")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = next((r["steps_per_s"] for r in rows if r["mode"] == "single"), None)
    print(f"\none update per {args.steps_per_update} env steps")
    header = f"samples/insert (setting {setting:g})"
    print(f"| mode | env steps/s (learning phase) | vs single | {header} |")
    print("|---|---|---|---|")
    for row in rows:
        ratio = f"{row['steps_per_s'] / base:.2f}" if base else "-"
        spi = row.get("samples_per_insert")
        spi_text = f"{spi:.2f} ({(spi / setting - 1) * 100:+.1f}%)" if spi else "-"
        print(f"| {row['mode']} | {row['steps_per_s']:.1f} | {ratio} | {spi_text} |")


if __name__ == "__main__":
    main()
