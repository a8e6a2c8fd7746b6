"""Signal to exit of a Breakout run whose replay holds `--capacity` transitions, with the
incremental replay checkpoint against a full one, side by side in one run.

    python scripts/bench/preemption.py --capacity=1_000_000

For each mode, a real `python -m pipeline.train --gin_file=dqn_breakout.gin` process fills its
replay with synthetic Breakout-sized frames before training (collecting 1M real frames
would take most of an hour; the cost of a checkpoint does not depend on the pixels), trains,
writes its periodic checkpoint, collects on for `--after_s` seconds, and gets a real SIGTERM.
The bench times SIGTERM -> exit 75 and checks that the new checkpoint is complete.
- incremental: the pipeline as shipped (chunks unchanged since the last checkpoint are
  hard-linked);
- full: the same, with every chunk written again (no previous checkpoint handed over).
It also reports the disk the kept checkpoints take against one replay (links counted once).
Then the same two modes again with the disk limited to `--throttle_mbps` (a cgroup v1 blkio
limit; root only), a stand-in for a cluster's shared filesystem.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BINDINGS = [
    "train.initial_collect_steps=1_000",
    "train.total_env_steps=10_000_000",
    "train.checkpoint_interval=2_000",
    "train.checkpoint_interval_s=100_000.0",
    "train.checkpoints_to_keep=2",
    "train.eval_interval=10_000_000",
    "train.progress_interval_s=5.0",
]


def child(mode: str, capacity: int, argv: list[str]) -> None:
    """Runs pipeline.train with the replay pre-filled (and, for `full`, never linked)."""
    sys.path.insert(0, str(REPO))
    import runpy

    import numpy as np

    sys.path.insert(0, str(REPO / "scripts" / "bench"))
    from replay_checkpoint import add as fill_synthetic

    from pipeline.loops import off_policy
    from pipeline.replay.frame_stack import FrameStackReplay

    real_init = off_policy.Experiment.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        fill_synthetic(self.replay, capacity, np.random.default_rng(0))

    off_policy.Experiment.__init__ = init
    if mode == "full":
        real_save = FrameStackReplay.save
        FrameStackReplay.save = lambda self, directory, contents, *_, **__: real_save(
            self, directory, contents
        )
    sys.argv = ["pipeline.train", *argv]
    runpy.run_module("pipeline.train", run_name="__main__")


def disk_bytes(folder: Path) -> int:
    seen, total = set(), 0
    for path in folder.rglob("*"):
        if path.is_file() and path.stat().st_ino not in seen:
            seen.add(path.stat().st_ino)
            total += path.stat().st_blocks * 512
    return total


def complete(root: Path) -> list[Path]:
    folder = root / "checkpoints"
    found = folder.glob("ckpt-*") if folder.is_dir() else []
    return sorted(p for p in found if (p / "MANIFEST.json").exists())


def throttled_cgroup(mbps: float) -> Path:
    """A cgroup-v1 blkio group limiting reads and writes on the run's disk to `mbps` MB/s
    (root only). v1 does not charge the kernel's flusher threads, so writeback that the
    kernel starts on its own escapes the limit: a stand-in for a slow shared filesystem."""
    device = os.stat(REPO).st_dev
    group = Path("/sys/fs/cgroup/blkio/pipeline_bench_throttle")
    group.mkdir(exist_ok=True)
    limit = f"{os.major(device)}:{os.minor(device)} {int(mbps * 1e6)}"
    for name in ("blkio.throttle.write_bps_device", "blkio.throttle.read_bps_device"):
        (group / name).write_text(limit)
    return group


def measure(mode: str, capacity: int, root: Path, after_s: float, cgroup: Path | None) -> dict:
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    log = open(f"{root}.log", "w")
    args = ["--gin_file=dqn_breakout.gin", *[f"--gin_bindings={b}" for b in BINDINGS],
            f"--gin_bindings=train.replay_capacity={capacity}", f"--root_dir={root}"]  # fmt: skip

    def enter_cgroup() -> None:
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    process = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, "--capacity", str(capacity), "--", *args],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, preexec_fn=enter_cgroup,
    )  # fmt: skip
    deadline = time.monotonic() + 1_800
    while not complete(root):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{mode}: no first checkpoint; see {root}.log")
        time.sleep(0.5)
    time.sleep(after_s)  # collecting and training on: the chunks written since go dirty
    before = complete(root)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    status = process.wait()
    elapsed = time.monotonic() - sent
    from pipeline.run.checkpoints import verify

    newest = complete(root)[-1]
    return {
        "mode": mode,
        "status": status,
        "signal_to_exit_s": elapsed,
        "new_checkpoint": newest not in before and verify(newest) is None,
        "disk_gb": disk_bytes(root / "checkpoints") / 1e9,
        "replay_gb": disk_bytes(newest / "replay") / 1e9 if mode == "full" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--after_s", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "preemption")
    parser.add_argument("--throttle_mbps", type=float, default=200.0,
                        help="also measure with the disk limited to this (0: skip)")  # fmt: skip
    parser.add_argument("--child", choices=["incremental", "full"])
    parser.add_argument("rest", nargs="*")
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.capacity, args.rest)
    sys.path.insert(0, str(REPO))
    disks: list[tuple[str, Path | None]] = [("local disk", None)]
    if args.throttle_mbps > 0:
        try:
            disks.append((f"disk limited to {args.throttle_mbps:.0f} MB/s",
                          throttled_cgroup(args.throttle_mbps)))  # fmt: skip
        except OSError as error:
            print(f"throttled disk not measured: {error} (needs root and cgroup v1 blkio)")
    for disk, cgroup in disks:
        out = args.out / ("throttled" if cgroup else "local")
        incremental, full = (
            measure(mode, args.capacity, out / mode, args.after_s, cgroup)
            for mode in ("incremental", "full")
        )
        print(f"{disk}:")
        for r in (incremental, full):
            print(f"  {r['mode']:>11}: SIGTERM -> exit {r['status']} in "
                  f"{r['signal_to_exit_s']:.1f} s, new complete checkpoint {r['new_checkpoint']}, "
                  f"checkpoints on disk {r['disk_gb']:.2f} GB")  # fmt: skip
        ratio = full["signal_to_exit_s"] / incremental["signal_to_exit_s"]
        print(f"  incremental is {ratio:.1f}x faster from signal to exit; two kept incremental "
              f"checkpoints take {incremental['disk_gb'] / full['replay_gb']:.2f}x one replay "
              f"({full['replay_gb']:.2f} GB)")  # fmt: skip
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
