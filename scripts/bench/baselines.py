"""Baseline rows without training: uniform random and our scripted players, on the eval protocol.

What a trained agent has to beat, measured exactly as the training loop evaluates it:
`--episodes` episodes played side by side by `pipeline.loops.evaluation.Evaluator`, env i reset
with the loop's fixed eval seeds (`pipeline.loops.evaluation.eval_episode_seeds`).

  - CartPole-v1: `envs.load_gymnasium(seed=None, training=False)`; TF-Agents'
    `RandomPyPolicy` and `CartPoleHeuristicPyPolicy`.
  - Breakout: `envs.load_atari(seed=None, training=False)`: whole games over all lives, true
    (unclipped) scores, no-op starts, no sticky actions; `RandomPyPolicy` and
    `BreakoutTrackerPyPolicy`. The protocol's frame cap is 108,000 frames (27,000 agent
    steps); the tracker keeps its lives for that long, so by default the cap here is
    `--breakout_max_episode_frames=27000` to keep the script to a couple of minutes on two
    cores (the table says which cap was used; 108000 gives the full protocol).

Writes the Markdown table to stdout and to `--out` (default runs/bench/baselines.md):

    python scripts/bench/baselines.py
    python scripts/bench/baselines.py --episodes=30 --breakout_max_episode_frames=108000 \
        --gin_bindings='CartPoleHeuristicPyPolicy.angular_velocity_gain=1.0'
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pipeline  # noqa: F401  (imported first: keeps TensorFlow quiet)

# isort: split
import gin
from tf_agents.environments import py_environment
from tf_agents.policies import py_policy, random_py_policy

from envs import load_atari, load_gymnasium
from pipeline.baselines.scripted_policies import BreakoutTrackerPyPolicy, CartPoleHeuristicPyPolicy
from pipeline.loops.evaluation import Evaluator, eval_episode_seeds

EnvMaker = Callable[[], py_environment.PyEnvironment]
PolicyMaker = Callable[[py_environment.PyEnvironment, int], py_policy.PyPolicy]


def random_policy(env: py_environment.PyEnvironment, seed: int) -> py_policy.PyPolicy:
    return random_py_policy.RandomPyPolicy(env.time_step_spec(), env.action_spec(), seed=seed)


def scripted(cls: type[py_policy.PyPolicy]) -> PolicyMaker:
    """A maker for one of our baseline classes, settings from gin."""
    return lambda env, seed: cls(env.time_step_spec(), env.action_spec())


def evaluate(make_env: EnvMaker, make_policy: PolicyMaker, episodes: int, seed: int) -> dict:
    """One Evaluator run; returns the summary plus the wall time."""
    envs = [make_env() for _ in range(episodes)]
    seeds = eval_episode_seeds(seed, episodes)
    evaluator = Evaluator(envs, seeds)
    started = time.perf_counter()
    try:
        stats = evaluator.run(make_policy(envs[0], seed))
    finally:
        evaluator.close()
    return {**stats.summary(), "wall_s": time.perf_counter() - started}


def table(rows: list[dict]) -> str:
    lines = [
        "| policy | env | episodes | return mean ± std | min / max | mean length (agent steps) "
        "| wall s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['policy']} | {r['env']} | {r['eval_episodes']} "
            f"| {r['eval_return_mean']:.1f} ± {r['eval_return_std']:.1f} "
            f"| {r['eval_return_min']:.0f} / {r['eval_return_max']:.0f} "
            f"| {r['eval_length_mean']:.1f} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="the loop's train.seed for eval seeds")
    parser.add_argument("--breakout_max_episode_frames", type=int, default=27_000)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/baselines.md"))
    parser.add_argument("--gin_bindings", action="append", default=[], help="policy settings")
    args = parser.parse_args()
    gin.parse_config_files_and_bindings(None, args.gin_bindings)

    cap = args.breakout_max_episode_frames
    cartpole = lambda: load_gymnasium(seed=None, training=False)  # noqa: E731
    breakout = lambda: load_atari(seed=None, training=False, max_episode_frames=cap)  # noqa: E731
    breakout_label = "Breakout" + ("" if cap == 108_000 else f" (cap {cap:,} frames)")
    cases = [
        ("uniform random", "CartPole-v1", cartpole, random_policy),
        ("CartPole heuristic", "CartPole-v1", cartpole, scripted(CartPoleHeuristicPyPolicy)),
        ("uniform random", breakout_label, breakout, random_policy),
        ("Breakout tracker", breakout_label, breakout, scripted(BreakoutTrackerPyPolicy)),
    ]
    rows = []
    for name, env_name, make_env, make_policy in cases:
        row = {"policy": name, "env": env_name}
        row.update(evaluate(make_env, make_policy, args.episodes, args.seed))
        print(
            f"{name} on {env_name}: {row['eval_return_mean']:.1f} +- {row['eval_return_std']:.1f}"
            f" ({row['wall_s']:.0f} s)",
            file=sys.stderr,
        )
        rows.append(row)

    command = " ".join(["python", "scripts/bench/baselines.py", *map(shlex.quote, sys.argv[1:])])
    report = "\n".join(
        [
            "# Baselines (no training)",
            "",
            f"`{command}`",
            "",
            table(rows),
            "",
            f"Eval protocol: {args.episodes} episodes side by side, fixed reset seeds "
            f"(train.seed={args.seed}). Breakout: whole games over all lives, true scores, "
            f"up to 30 no-op starts, no sticky actions, {cap:,}-frame cap"
            + ("" if cap == 108_000 else " (the protocol's is 108,000)")
            + "; one agent step is 4 frames. Std is over episodes (population std).",
            "",
        ]
    )
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


if __name__ == "__main__":
    main()
