"""A full replay checkpoint against an incremental one, side by side in one run.

    python scripts/bench/replay_checkpoint.py --capacity=1_000_000 --new_items=10_000

Fills a FrameStackReplay of Breakout-sized frames (84x84 uint8, synthetic: the content does
not change the cost) to `capacity`, seals a first checkpoint through the real
`CheckpointStore`, adds `new_items` items (what a run collects between its last checkpoint and
a pre-emption), then times in the same process:
- full: the same replay saved with no previous checkpoint (every chunk written and hashed),
- incremental: saved next to the first, linking the chunks it did not change.
It prints both times, their ratio, and the disk the two sealed checkpoints of the
incremental path take together against one replay (hard links counted once).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import pipeline  # noqa: E402, F401  (first: prepares the TensorFlow stack, quiet start)

# isort: split
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tf_agents.specs import tensor_spec  # noqa: E402
from tf_agents.trajectories import policy_step, trajectory  # noqa: E402
from tf_agents.trajectories import time_step as ts  # noqa: E402

from pipeline.replay.frame_stack import FrameStackReplay  # noqa: E402
from pipeline.run.checkpoints import CheckpointStore, save_replay  # noqa: E402


def breakout_spec():
    obs = tensor_spec.BoundedTensorSpec((84, 84, 4), tf.uint8, 0, 255)
    action = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 3)
    step = ts.time_step_spec(obs)
    return trajectory.from_transition(step, policy_step.PolicyStep(action, (), ()), step)


def add(replay: FrameStackReplay, items: int, rng: np.random.Generator, block: int = 4_096):
    for start in range(0, items, block):
        n = min(block, items - start)
        step_type = np.ones([1, n], np.int32)
        replay.add_numpy(
            trajectory.Trajectory(
                step_type=step_type,
                observation=rng.integers(0, 255, [1, n, 84, 84, 1], dtype=np.uint8),
                action=rng.integers(0, 4, [1, n]),
                policy_info=(),
                next_step_type=step_type,
                reward=np.zeros([1, n], np.float32),
                discount=np.ones([1, n], np.float32),
            )
        )


def save(store: CheckpointStore, replay: FrameStackReplay, steps: int, linked: bool) -> float:
    """Seconds to seal one checkpoint; `linked=False` hands over no previous checkpoint."""
    source = store if linked else CheckpointStore(store.directory / "unused")
    started = time.perf_counter()
    store.save(steps, lambda directory: save_replay(source, replay, directory, True))
    return time.perf_counter() - started


def disk_bytes(folder: Path) -> int:
    seen, total = set(), 0
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            if stat.st_ino not in seen:
                seen.add(stat.st_ino)
                total += stat.st_blocks * 512
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--new_items", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        rng = np.random.default_rng(0)
        replay = FrameStackReplay(breakout_spec(), batch_size=1, capacity=args.capacity, seed=0)
        started = time.perf_counter()
        add(replay, args.capacity, rng)
        print(f"filled {args.capacity:,} items in {time.perf_counter() - started:.1f} s")
        incremental = CheckpointStore(root / "incremental", keep=2)
        first = save(incremental, replay, 1, linked=False)
        add(replay, args.new_items, rng)
        full = save(CheckpointStore(root / "full", keep=1), replay, 2, linked=False)
        step = save(incremental, replay, 2, linked=True)
        one = disk_bytes(root / "full")
        two = disk_bytes(root / "incremental")
        print(f"first checkpoint {first:.2f} s; after {args.new_items:,} new items: full "
              f"{full:.2f} s, incremental {step:.2f} s ({full / step:.1f}x faster)")  # fmt: skip
        print(f"disk: two incremental checkpoints {two / 1e9:.2f} GB, one full {one / 1e9:.2f} "
              f"GB ({two / one:.2f}x)")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
        os.sync()


if __name__ == "__main__":
    main()
