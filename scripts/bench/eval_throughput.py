"""How fast is an evaluation: the policy calls in one graph loop against the Python loop?

Builds dqn_cartpole.gin's agent with a linear Q-network (`TorchInitQNetwork.fc_layer_params=()`)
whose weights are set so the greedy action is the balancing rule of
`CartPoleHeuristicPyPolicy` (push right iff angle + 0.5 x angular velocity > 0), so every
game lasts the full 500 steps, as a solved policy's do. Then plays the same `--episodes`
seeded games, in alternating rounds, through both paths of `Evaluator.run`:

  graph   what every evaluation of a stateless policy uses: the policy calls and the env
          steps (a `numpy_function`) in one TensorFlow loop;
  python  the loop a filmed evaluation uses: one compiled policy call per step.

Checks the two give the same returns and lengths, and prints env steps/s for each and the
ratio graph : python.

With `--atari`, the question is the env step instead: drq_breakout.gin's evaluation policy
(its untrained network at epsilon 0.001, so games stall as a trained agent's do after a lost
life) plays `--episodes` Breakout games capped at `--max_episode_frames`, in one process and
with the odd-numbered games in a second one (`train.eval_processes = 2`), alternately; checks
the games are the same and prints env steps/s for each and the ratio two : one; and, in the
same rounds, two processes with every greedy action recomputed (`Evaluator.reuse_greedy =
False`): reuse : no reuse. The untrained network never serves, so its frame stacks repeat
more often than a trained agent's (80% of steps on seed 1's 100k checkpoint).

    .venv/bin/python scripts/bench/eval_throughput.py [--episodes=20] [--rounds=5]
    .venv/bin/python scripts/bench/eval_throughput.py --atari [--episodes=20 --rounds=3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import pipeline  # noqa: E402, F401  (first: prepares the TensorFlow stack, quiet start)

# isort: split
import gin  # noqa: E402
import numpy as np  # noqa: E402

import envs  # noqa: E402
from pipeline import config  # noqa: E402
from pipeline.loops.evaluation import CompiledPyPolicy, Evaluator  # noqa: E402
from pipeline.loops.off_policy import Experiment  # noqa: E402


def balancing_policy() -> CompiledPyPolicy:
    """The greedy policy of a linear Q-network with Q(s, right) - Q(s, left) = s . w."""
    gin.clear_config()
    config.parse(["dqn_cartpole.gin"], ["TorchInitQNetwork.fc_layer_params=()"])
    with tempfile.TemporaryDirectory() as tmp:
        run = Experiment(tmp)
    kernel, bias = run.agent._q_network.trainable_variables
    kernel.assign(np.array([[0, 0], [0, 0], [0, 1], [0, 0.5]], np.float32))
    bias.assign(np.zeros(2, np.float32))
    gin.clear_config()
    return CompiledPyPolicy(run.agent.policy)


def atari_processes(args: argparse.Namespace) -> None:
    """One process against two on the same seeded Breakout evaluation."""
    gin.clear_config()
    config.parse(["drq_breakout.gin"], ["train.replay_capacity=2000"])
    with tempfile.TemporaryDirectory() as tmp:
        run = Experiment(tmp)
    seeds = list(range(1_000, 1_000 + args.episodes))
    cap = {"seed": None, "training": False, "max_episode_frames": args.max_episode_frames}
    evaluators = {
        f"{n} process{'es' if n > 1 else ''}": Evaluator(
            [envs.load_atari(**cap) for _ in seeds], seeds, processes=n
        )
        for n in (1, 2)
    }
    # Two processes, every greedy action recomputed (no reuse while a frame stack repeats).
    evaluators["2, no reuse"] = Evaluator([envs.load_atari(**cap) for _ in seeds], seeds, 2)
    evaluators["2, no reuse"].reuse_greedy = False

    def play(evaluator: Evaluator):
        return evaluator.run(run.eval_policy_at(0))  # the same noise draws every time

    results = [play(evaluator) for evaluator in evaluators.values()]
    if not all(
        np.array_equal(results[0].returns, other.returns)
        and np.array_equal(results[0].lengths, other.lengths)
        for other in results[1:]
    ):
        raise SystemExit("error: one and two processes played different games")
    steps = int(results[0].lengths.sum())
    times: dict[str, list[float]] = {name: [] for name in evaluators}
    for _ in range(args.rounds):
        for name, evaluator in evaluators.items():
            start = time.perf_counter()
            play(evaluator)
            times[name].append(time.perf_counter() - start)
    rate = {name: steps / statistics.median(t) for name, t in times.items()}
    print(
        f"{args.episodes} Breakout games (drq_breakout.gin's eval policy, untrained, cap "
        f"{args.max_episode_frames:,} frames), {steps:,} env steps per evaluation, "
        f"{args.rounds} alternating rounds, medians; same games: yes"
    )
    for name, value in rate.items():
        print(f"{name:12s} {value:10,.0f} env steps/s  ({statistics.median(times[name]):.2f} s)")
    one, two, no_reuse = rate.values()
    print(f"two : one process {two / one:.2f}")
    print(f"reuse : no reuse (two processes) {two / no_reuse:.2f}")
    for evaluator in evaluators.values():
        evaluator.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20, help="games per evaluation")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds each")
    parser.add_argument("--atari", action="store_true", help="Breakout: one process or two")
    parser.add_argument("--max_episode_frames", type=int, default=8_000, help="--atari cap")
    args = parser.parse_args()
    if args.atari:
        atari_processes(args)
        return
    policy = balancing_policy()
    seeds = list(range(1_000, 1_000 + args.episodes))
    evaluator = Evaluator([envs.load_gymnasium("CartPole-v1") for _ in seeds], seeds)
    paths = {
        "graph": lambda: evaluator.run(policy),
        "python": lambda: evaluator.run(policy, observer=lambda i, env: None),
    }
    results = {name: play() for name, play in paths.items()}  # traces, and the check
    graph, python = results["graph"], results["python"]
    if not (
        np.array_equal(graph.returns, python.returns)
        and np.array_equal(graph.lengths, python.lengths)
    ):
        raise SystemExit("error: the two paths played different games")
    steps = int(graph.lengths.sum())
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, play in paths.items():
            start = time.perf_counter()
            play()
            times[name].append(time.perf_counter() - start)
    rate = {name: steps / statistics.median(t) for name, t in times.items()}
    print(
        f"{args.episodes} CartPole games, mean return {graph.returns.mean():.1f}, {steps:,} env "
        f"steps per evaluation, {args.rounds} alternating rounds, medians; same games: yes"
    )
    for name, value in rate.items():
        print(f"{name:8s} {value:10,.0f} env steps/s  ({statistics.median(times[name]):.3f} s)")
    print(f"graph : python {rate['graph'] / rate['python']:.2f}")


if __name__ == "__main__":
    main()
