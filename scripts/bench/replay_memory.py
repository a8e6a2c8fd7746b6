"""Memory per stored transition: FrameStackReplay vs TF-Agents' TFUniformReplayBuffer.

Fills each buffer with 84x84x4 uint8 frame stacks (random frames, a few env lanes, episodes of
100-2500 steps) in its own subprocess, so each process's RSS growth is its buffer's alone, and
reports KB (1,000 bytes) per transition side by side, their ratio, fill speed and `sample(32)`
rate at full capacity.

    .venv/bin/python scripts/bench/replay_memory.py                       # 1M ours, 100k TF-Agents
    .venv/bin/python scripts/bench/replay_memory.py --capacity=100000 --tf_capacity=20000

References: Dopamine's single-frame layout needs 7.06 KB per transition (one 84x84 frame),
TF-Agents' stacked layout 28.2 KB (four). Target for FrameStackReplay: <= 7.5 KB at 1M.
Filling 1M transitions needs ~7.1 GB of memory and takes under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FRAME = (84, 84)
STACK = 4
NUM_ACTIONS = 18
CHUNK = 2048  # steps per lane per add_numpy call
RESULT = "RESULT "


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def collect_spec():
    import pipeline  # noqa: F401  (first: prepares the TensorFlow stack, quiet start)

    # isort: split
    import tensorflow as tf
    from tf_agents.specs import tensor_spec
    from tf_agents.trajectories import policy_step, trajectory
    from tf_agents.trajectories import time_step as ts

    obs = tensor_spec.BoundedTensorSpec((*FRAME, STACK), tf.uint8, 0, 255)
    action = tensor_spec.BoundedTensorSpec((), tf.int64, 0, NUM_ACTIONS - 1)
    step_spec = ts.time_step_spec(obs)
    return trajectory.from_transition(step_spec, policy_step.PolicyStep(action, (), ()), step_spec)


def step_types(rng, lanes: int, steps: int):
    """`[lanes, steps + 1]` step types of Atari-like episodes (100-2500 steps each)."""
    import numpy as np

    out = np.ones((lanes, steps + 1), np.int32)  # MID
    for lane in range(lanes):
        t = 0
        while t <= steps:
            out[lane, t] = 0  # FIRST
            t += int(rng.integers(100, 2500))
            if t <= steps:
                out[lane, t] = 2  # LAST
            t += 1
    return out


def bench_ours(capacity: int, lanes: int, sample_calls: int) -> dict:
    """Fills a FrameStackReplay chunk by chunk through add_numpy; times sample(32)."""
    import numpy as np
    import tensorflow as tf
    from tf_agents.trajectories import trajectory

    from pipeline.replay.frame_stack import FrameStackReplay

    spec = collect_spec()
    rng = np.random.default_rng(0)
    steps = capacity // lanes
    types = step_types(rng, lanes, steps)
    gc.collect()
    before = rss()
    buffer = FrameStackReplay(spec, lanes, capacity, seed=0)
    constructed = rss()
    started = time.perf_counter()
    for start in range(0, steps, CHUNK):
        n = min(CHUNK, steps - start)
        words = rng.integers(0, 2**64 - 1, lanes * n * FRAME[0] * FRAME[1] // 8, np.uint64)
        frames = words.view(np.uint8).reshape(lanes, n, *FRAME)
        # Only the newest frame of a stack is read: pass the stacks as a zero-copy view.
        stacks = np.lib.stride_tricks.as_strided(
            frames, (lanes, n, *FRAME, STACK), (*frames.strides, 0), writeable=False
        )
        next_types = types[:, start + 1 : start + n + 1]
        buffer.add_numpy(
            trajectory.Trajectory(
                step_type=types[:, start : start + n],
                observation=stacks,
                action=rng.integers(0, NUM_ACTIONS, (lanes, n)),
                policy_info=(),
                next_step_type=next_types,
                reward=rng.integers(0, 2, (lanes, n)).astype(np.float32),
                discount=(next_types != 2).astype(np.float32),
            )
        )
        del words, frames, stacks
    fill_s = time.perf_counter() - started
    gc.collect()
    full = rss()
    assert buffer.num_transitions() == buffer.capacity

    buffer.sample_numpy(32)
    started = time.perf_counter()
    for _ in range(sample_calls):
        buffer.sample_numpy(32)
    numpy_rate = sample_calls / (time.perf_counter() - started)

    @tf.function(autograph=False)
    def sample_loop(n):
        def body(i, total):
            obs = buffer.sample(32).observation
            return i + 1, total + tf.reduce_sum(tf.cast(obs[:, :, 0, 0, :], tf.int64))

        return tf.while_loop(lambda i, _: i < n, body, (0, tf.constant(0, tf.int64)))

    sample_loop(tf.constant(1))
    started = time.perf_counter()
    sample_loop(tf.constant(sample_calls))
    graph_rate = sample_calls / (time.perf_counter() - started)
    return {
        "name": "FrameStackReplay (ours)",
        "capacity": buffer.capacity,
        "bytes_per_item": buffer.bytes_per_item(),
        "construct_rss_gb": (constructed - before) / 1e9,
        "rss_growth_gb": (full - before) / 1e9,
        "kb_per_transition": (full - before) / buffer.capacity / 1e3,
        "fill_steps_per_s": buffer.capacity / fill_s,
        "sample32_numpy_per_s": numpy_rate,
        "sample32_graph_per_s": graph_rate,
    }


def bench_tf_agents(capacity: int, lanes: int, sample_calls: int) -> dict:
    """Fills TF-Agents' TFUniformReplayBuffer (full stacks) in a graph loop; times get_next."""
    import tensorflow as tf
    from tf_agents.replay_buffers import tf_uniform_replay_buffer
    from tf_agents.trajectories import trajectory

    spec = collect_spec()
    per_lane = capacity // lanes
    gc.collect()
    before = rss()
    buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(spec, lanes, max_length=per_lane)
    constructed = rss()
    pool_size = 32  # distinct random stacks cycled through (RSS does not depend on contents)
    pool = tf.cast(
        tf.random.stateless_uniform(
            [pool_size, lanes, *FRAME, STACK], seed=(0, 1), maxval=256, dtype=tf.int32
        ),
        tf.uint8,
    )

    @tf.function(autograph=False)
    def fill(n):
        def body(i):
            mid = tf.fill([lanes], 1)
            add = buffer.add_batch(
                trajectory.Trajectory(
                    step_type=mid,
                    observation=tf.gather(pool, i % pool_size),
                    action=tf.zeros([lanes], tf.int64),
                    policy_info=(),
                    next_step_type=mid,
                    reward=tf.zeros([lanes]),
                    discount=tf.ones([lanes]),
                )
            )
            with tf.control_dependencies([add]):
                return [i + 1]

        return tf.while_loop(lambda i: i < n, body, [0], parallel_iterations=1)

    started = time.perf_counter()
    fill(tf.constant(per_lane))
    fill_s = time.perf_counter() - started
    gc.collect()
    full = rss()

    @tf.function(autograph=False)
    def sample_loop(n):
        def body(i, total):
            obs = buffer.get_next(sample_batch_size=32, num_steps=2)[0].observation
            return i + 1, total + tf.reduce_sum(tf.cast(obs[:, :, 0, 0, :], tf.int64))

        return tf.while_loop(lambda i, _: i < n, body, (0, tf.constant(0, tf.int64)))

    sample_loop(tf.constant(1))
    started = time.perf_counter()
    sample_loop(tf.constant(sample_calls))
    graph_rate = sample_calls / (time.perf_counter() - started)
    held = per_lane * lanes
    return {
        "name": "TF-Agents TFUniformReplayBuffer",
        "capacity": held,
        "construct_rss_gb": (constructed - before) / 1e9,
        "rss_growth_gb": (full - before) / 1e9,
        "kb_per_transition": (full - before) / held / 1e3,
        "fill_steps_per_s": held / fill_s,
        "sample32_numpy_per_s": None,
        "sample32_graph_per_s": graph_rate,
    }


def run_role(role: str, capacity: int, lanes: int, sample_calls: int) -> dict:
    command = [
        sys.executable,
        __file__,
        f"--role={role}",
        f"--capacity={capacity}",
        f"--lanes={lanes}",
        f"--sample_calls={sample_calls}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    lines = [x for x in result.stdout.splitlines() if x.startswith(RESULT)]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"{role} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT) :])


def report(rows: list[dict], lanes: int) -> str:
    def rate(x):
        return "-" if x is None else f"{x:,.0f}"

    lines = [
        f"replay memory: {FRAME[0]}x{FRAME[1]}x{STACK} uint8 stacks, {lanes} env lanes, "
        "KB = 1,000 bytes, RSS growth measured in a subprocess per buffer",
        f"{'buffer':<32}{'capacity':>11}{'KB/trans':>10}{'RSS GB':>8}{'at init':>9}"
        f"{'fill/s':>11}{'sample32/s np':>15}{'graph':>8}",
    ]
    for r in rows:
        lines.append(
            f"{r['name']:<32}{r['capacity']:>11,}{r['kb_per_transition']:>10.2f}"
            f"{r['rss_growth_gb']:>8.2f}{r['construct_rss_gb']:>9.2f}{r['fill_steps_per_s']:>11,.0f}"
            f"{rate(r['sample32_numpy_per_s']):>15}{rate(r['sample32_graph_per_s']):>8}"
        )
    ours, theirs = rows
    lines.append(
        f"TF-Agents / ours memory per transition: "
        f"{theirs['kb_per_transition'] / ours['kb_per_transition']:.2f}x; "
        f"graph sample(32) rate ours / TF-Agents: "
        f"{ours['sample32_graph_per_s'] / theirs['sample32_graph_per_s']:.2f}x"
    )
    lines.append(
        "references: Dopamine single-frame 7.06 KB, TF-Agents stacked 28.2 KB; target <= 7.5 KB "
        f"-> {'met' if ours['kb_per_transition'] <= 7.5 else 'MISSED'} at "
        f"{ours['capacity']:,} transitions"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=1_000_000, help="FrameStackReplay size")
    parser.add_argument("--tf_capacity", type=int, default=100_000, help="TF-Agents buffer size")
    parser.add_argument("--lanes", type=int, default=4, help="parallel env lanes (batch_size)")
    parser.add_argument("--sample_calls", type=int, default=2_000, help="sample(32) calls timed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--role", choices=["ours", "tf_agents"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role:
        import pipeline  # noqa: F401  (imported first: keeps TensorFlow quiet)

        bench = bench_ours if args.role == "ours" else bench_tf_agents
        print(RESULT + json.dumps(bench(args.capacity, args.lanes, args.sample_calls)))
        return

    rows = [
        run_role("ours", args.capacity, args.lanes, args.sample_calls),
        run_role("tf_agents", args.tf_capacity, args.lanes, args.sample_calls),
    ]
    print(report(rows, args.lanes))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
