"""Is the pipeline's update loop as fast as TF-Agents' agent.train on its own?

Builds the experiment from a gin file (default dqn_breakout.gin: Nature CNN, batch 32,
frame-stack replay), fills the replay buffer with random-policy steps, then times, in
alternating rounds in one process:

  pipeline  the loop's own update call: N x (sample from the replay buffer + agent.train)
            in one graph loop, as `pipeline.experiment` runs it;
  bare      `tf.function(agent.train)` called N times on one fixed batch of the same shape
            (no sampling at all), the fastest a loop around TF-Agents can be;
  sample    the replay buffer's `sample` alone, N times, in one tf.function.

Prints updates/s for both, the ratio pipeline/bare (target >= 0.9) and the share of an
update's time that sampling takes.

    .venv/bin/python scripts/bench/train_throughput.py [--gin_file=dqn_breakout.gin]
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

import gin  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline import config  # noqa: E402
from pipeline.experiment import Experiment  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gin_file", default="dqn_breakout.gin")
    parser.add_argument("--gin_bindings", action="append", default=[])
    parser.add_argument("--fill_steps", type=int, default=5_000, help="random steps first")
    parser.add_argument("--updates", type=int, default=50, help="updates per timed round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds each")
    args = parser.parse_args()

    bindings = [
        f"train.replay_capacity = {max(args.fill_steps * 2, 10_000)}",
        f"train.initial_collect_steps = {args.fill_steps}",
        f"train.total_env_steps = {args.fill_steps + 1}",
        *args.gin_bindings,
    ]
    config.parse([args.gin_file], bindings)
    with tempfile.TemporaryDirectory() as tmp:
        run = Experiment(tmp)
    run.collect_random(args.fill_steps)
    batch_size = run.batch_size
    n = tf.constant(args.updates, tf.int64)

    fixed_batch = tf.function(lambda: run.replay.sample(batch_size), autograph=False)()
    bare_train = tf.function(run.agent.train, autograph=False)

    def sample_loop(k: tf.Tensor) -> tf.Tensor:
        def body(i, total):
            return i + 1, total + tf.reduce_sum(run.replay.sample(batch_size).reward)

        return tf.while_loop(lambda i, _: i < k, body, (tf.constant(0, k.dtype), 0.0))[1]

    sample_only = tf.function(sample_loop, autograph=False)

    def bare_round() -> None:
        for _ in range(args.updates):
            loss = bare_train(fixed_batch).loss
        loss.numpy()

    def pipeline_round() -> None:
        run.train_updates(n).numpy()

    # Warm-up: trace every function once, outside the timings.
    pipeline_round()
    bare_round()
    sample_only(n)

    times: dict[str, list[float]] = {"pipeline": [], "bare": [], "sample": []}
    for _ in range(args.rounds):
        times["pipeline"].append(timed(pipeline_round))
        times["bare"].append(timed(bare_round))
        times["sample"].append(timed(lambda: sample_only(n)))
    rate = {name: args.updates / statistics.median(t) for name, t in times.items()}

    print(
        f"config: {args.gin_file}; batch {batch_size}; {args.updates} updates x "
        f"{args.rounds} alternating rounds; medians"
    )
    print(f"pipeline updates/s (sample + train):  {rate['pipeline']:8.1f}")
    print(f"bare tf.function(agent.train)/s:       {rate['bare']:8.1f}")
    print(f"replay samples/s (batch {batch_size}):          {rate['sample']:8.1f}")
    print(f"ratio pipeline / bare: {rate['pipeline'] / rate['bare']:.3f} (target >= 0.9)")
    print(f"sampling share of a pipeline update: {rate['pipeline'] / rate['sample']:.1%}")
    gin.clear_config()


if __name__ == "__main__":
    main()
