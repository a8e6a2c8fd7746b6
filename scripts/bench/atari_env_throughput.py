"""Atari env throughput: our single and batched paths against gymnasium's own wrappers.

Breakout, uniformly random actions, `--steps` agent steps per measurement, each path
measured `--repeats` times in turn (interleaved, so a busy neighbour slows all alike) in this
one process; the medians are reported as agent steps per second:

  (a) gymnasium: `AtariPreprocessing(frame_skip=4, noop_max=30, terminal_on_life_loss=False,
      screen_size=84, grayscale_obs=True)` + `FrameStackObservation(stack_size=4)` over
      `gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0)`, driven
      directly (`env.step`, `env.reset` at episode ends);
  (b) ours, single: `envs.load_atari()` (training env, num_envs=1) as a TF-Agents
      `PyEnvironment`, `env.step(action)` with its auto-resets;
  (c) ours, batched: `envs.load_atari(num_envs=N)`; agent steps = N x batch steps;
  (d) for reference, the ceiling of (c): ale-py's C++ `AtariVectorEnv(num_envs=N)` driven
      directly (its own 4-frame stack, no TF-Agents layer).

Targets: b/a >= 0.9 (our preprocessing and the TF-Agents layer cost no more than
gymnasium's), c/b >= 2.0 on 2 cores (the C++ threads pay off). One C++ thread steps about
as fast as (b), so c/b is bounded by the number of free cores: a busy neighbour on a 2-core
machine shows up first in (c); c/d shows what our layer costs on top of the C++ env.

    python scripts/bench/atari_env_throughput.py --steps=5000 --num_envs=8
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
from ale_py.vector_env import AtariVectorEnv

import pipeline  # noqa: F401  (imported first: keeps TensorFlow quiet)
from envs import load_atari


def gymnasium_runner(steps: int, seed: int) -> Callable[[], float]:
    env = gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0)
    env = gym.wrappers.AtariPreprocessing(
        env,
        frame_skip=4,
        noop_max=30,
        terminal_on_life_loss=False,
        screen_size=84,
        grayscale_obs=True,
    )
    env = gym.wrappers.FrameStackObservation(env, stack_size=4)
    env.reset(seed=seed)
    actions = np.random.default_rng(seed).integers(env.action_space.n, size=steps).tolist()

    def run() -> float:
        start = time.perf_counter()
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        return steps / (time.perf_counter() - start)

    return run


def single_runner(steps: int, seed: int) -> Callable[[], float]:
    env = load_atari(seed=seed)
    env.reset()
    n = int(env.action_spec().maximum) + 1
    actions = list(np.random.default_rng(seed).integers(n, size=steps, dtype=np.int64))

    def run() -> float:
        start = time.perf_counter()
        for action in actions:
            env.step(action)
        return steps / (time.perf_counter() - start)

    return run


def batched_runner(steps: int, seed: int, num_envs: int, threads: int) -> Callable[[], float]:
    env = load_atari(seed=seed, num_envs=num_envs, num_threads=threads)
    env.reset()
    n = int(env.action_spec().maximum) + 1
    batch_steps = max(1, steps // num_envs)
    actions = np.random.default_rng(seed).integers(n, size=(batch_steps, num_envs), dtype=np.int64)

    def run() -> float:
        start = time.perf_counter()
        for batch in actions:
            env.step(batch)
        return batch_steps * num_envs / (time.perf_counter() - start)

    return run


def vector_runner(steps: int, seed: int, num_envs: int, threads: int) -> Callable[[], float]:
    env = AtariVectorEnv("breakout", num_envs, num_threads=threads, life_loss_info=True)
    env.reset(seed=seed)
    batch_steps = max(1, steps // num_envs)
    actions = np.random.default_rng(seed).integers(4, size=(batch_steps, num_envs), dtype=np.int64)

    def run() -> float:
        start = time.perf_counter()
        for batch in actions:
            env.step(batch)
        return batch_steps * num_envs / (time.perf_counter() - start)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5_000, help="agent steps per measurement")
    parser.add_argument("--num_envs", type=int, default=8, help="envs in the batched path")
    parser.add_argument("--num_threads", type=int, default=0, help="C++ threads (0: per core)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    runners = {
        "a gymnasium": gymnasium_runner(args.steps, args.seed),
        "b ours single": single_runner(args.steps, args.seed),
        f"c ours batched x{args.num_envs}": batched_runner(
            args.steps, args.seed, args.num_envs, args.num_threads
        ),
        f"d C++ vector x{args.num_envs}": vector_runner(
            args.steps, args.seed, args.num_envs, args.num_threads
        ),
    }
    for run in runners.values():  # warm-up: caches, first resets, thread start
        run()
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            rates[name].append(run())

    medians = {name: statistics.median(values) for name, values in rates.items()}
    cores = len(os.sched_getaffinity(0))
    print(
        f"Breakout, random actions, {args.steps} agent steps x {args.repeats} rounds "
        f"(medians), {cores} cores"
    )
    for name, values in rates.items():
        spread = ", ".join(f"{v:,.0f}" for v in values)
        print(f"  {name:<22} {medians[name]:>8,.0f} agent steps/s   (rounds: {spread})")
    a, b, c, d = medians.values()
    print(f"  b/a = {b / a:.2f}   (target >= 0.9)")
    print(f"  c/b = {c / b:.2f}   (target >= 2.0 on 2 cores)")
    print(f"  c/d = {c / d:.2f}   (our batched layer over the raw C++ env)")


if __name__ == "__main__":
    main()
