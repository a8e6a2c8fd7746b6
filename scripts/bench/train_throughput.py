"""How fast is one update, in float32 and in mixed bfloat16, and how close is the loop to it?

Builds the experiment from a gin file (default drq_breakout.gin: Nature CNN with a dueling
head, batch 32, 10-step windows, augmentation) twice in one process, once in float32
(`--fp32_binding`, default `DuelingQNetwork.dtype='float32'`) and once with `--bf16_binding`
(default `DuelingQNetwork.dtype='mixed_bfloat16'`), fills each replay with the same
random-policy steps, then times, in alternating rounds:

  pipeline  the loop's own update call: N x (sample + augment + agent.train) in one graph loop,
            as `pipeline.loops.off_policy` runs it;
  bare      `tf.function(agent.train)` called N times on one fixed batch (no sampling): the
            fastest a loop around TF-Agents can be;
  sample    the batch the update trains on (n-step transition, augmented), N times;
  loop      N updates' worth of what the loop does at this gin file's ratio: collect with
            the exploration policy, then the updates due, whole rounds in blocks of up to
            32 updates per graph call as the loop runs them (end to end);
  calls     the same rounds with a collect call and a train call each, as the loop ran
            them before `Experiment.train_rounds`: loop / calls is what the blocks gain.

Prints updates/s for each in both precisions, the bf16 : fp32 ratios and loop : pipeline.
With `--prioritized_binding` (default `train.replay=@PrioritizedFrameStackReplay`) a third
subject, float32 with prioritized replay (draws by priority, importance weights, priorities
written back after every update), is timed in the same rounds: prioritized : uniform.
Where the gin file's agent reads the next states once (a target synced after every update,
`pipeline.agents.synced_target`), a subject "two-pass" is float32 on TF-Agents' own path: its
passes of the next states through the target and the online network and its copy of the online
weights into the target after every update (`--no_two_pass` skips it): fp32 : two-pass is what
reading them once and deferring the copy to checkpoints gain together.
`--compare=NAME=BINDING` (repeatable) adds a float32 subject with one more binding, e.g.
`--compare=fused='train.optimizer=@FusedAdam'`.

    .venv/bin/python scripts/bench/train_throughput.py [--gin_file=drq_breakout.gin]
    .venv/bin/python scripts/bench/train_throughput.py --gin_file=dqn_breakout.gin --bf16_binding=
    .venv/bin/python scripts/bench/train_throughput.py --gin_file=dqn_breakout.gin \
        --bf16_binding= --prioritized_binding=train.replay=@PrioritizedFrameStackReplay
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
import tensorflow as tf  # noqa: E402

from pipeline import config  # noqa: E402
from pipeline.loops.off_policy import UPDATE_CHUNK, Experiment  # noqa: E402
from pipeline.replay.prioritized import is_prioritized  # noqa: E402

FP32 = "DuelingQNetwork.dtype='float32'"
BF16 = "DuelingQNetwork.dtype='mixed_bfloat16'"
PRIORITIZED = "train.replay=@PrioritizedFrameStackReplay"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Subject:
    """One experiment and its timed rounds."""

    def __init__(
        self, gin_file: str, bindings: list[str], fill_steps: int, updates: int,
        two_pass: bool = False,
    ):  # fmt: skip
        gin.clear_config()
        config.parse([gin_file], bindings)
        with tempfile.TemporaryDirectory() as tmp:
            self.run = run = Experiment(tmp)
        if two_pass:  # before anything is traced: TF-Agents' two passes on s' and its copy
            run.agent._target_synced = False
        run.collect_random(fill_steps)
        self.updates = updates
        self.n = tf.constant(updates, tf.int64)

        def batch():
            if is_prioritized(run.replay):
                drawn, _, _ = run.replay.sample_prioritized(
                    run.batch_size, 0.0, transitions=run._trains_on_transitions
                )
                return run._training_batch(drawn)
            if run._trains_on_transitions:
                return run._training_batch(run.replay.sample_transition(run.batch_size))
            return run._training_batch(run.replay.sample(run.batch_size))

        self.fixed_batch = tf.function(batch, autograph=False)()
        self.bare_train = tf.function(run.agent.train, autograph=False)

        def sample_loop(k: tf.Tensor) -> tf.Tensor:
            def body(i, total):
                obs = tf.nest.flatten(batch())[0]
                return i + 1, total + tf.cast(tf.reduce_sum(obs), tf.float32)

            return tf.while_loop(lambda i, _: i < k, body, (tf.constant(0, k.dtype), 0.0))[1]

        self.sample_only = tf.function(sample_loop, autograph=False)
        # Per iteration: `collect` agent steps, then the updates that ratio makes due.
        self.collect = run.collect_steps_per_iteration
        self.per_iteration = max(round(run.updates_per_env_step * self.collect), 1)
        for round_ in (self.pipeline, self.bare, self.sample, self.loop):  # trace everything
            round_()

    def pipeline(self) -> None:
        self.run.train_updates(self.n).numpy()

    def bare(self) -> None:
        for _ in range(self.updates):
            loss = self.bare_train(self.fixed_batch).loss
        loss.numpy()

    def sample(self) -> None:
        self.sample_only(self.n).numpy()

    def loop(self) -> None:
        if not 1 <= self.per_iteration <= UPDATE_CHUNK:  # the loop makes a call per round
            self.calls()
            return
        rounds = max(self.updates // self.per_iteration, 1)
        while rounds:  # whole rounds, up to a block per graph call, as the loop runs them
            block = min(rounds, UPDATE_CHUNK // self.per_iteration)
            self.run.train_rounds(block)
            rounds -= block

    def calls(self) -> None:
        """The loop as it ran before `train_rounds`: a collect call, then a train call."""
        updates = tf.constant(self.per_iteration, tf.int64)
        for _ in range(max(self.updates // self.per_iteration, 1)):
            self.run._collect(self.run._collect_policy, self.collect)
            loss = self.run.train_updates(updates)
        loss.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gin_file", default="drq_breakout.gin")
    parser.add_argument("--gin_bindings", action="append", default=[])
    parser.add_argument("--fp32_binding", default=FP32, help="binding of the float32 subjects")
    parser.add_argument("--bf16_binding", default=BF16, help="empty: float32 only")
    parser.add_argument("--prioritized_binding", default=PRIORITIZED, help="empty: skip")
    parser.add_argument("--no_two_pass", action="store_true", help="skip the two-pass subject")
    parser.add_argument(
        "--compare", action="append", default=[], metavar="NAME=BINDING",
        help="a float32 subject with one more binding (repeatable)",
    )  # fmt: skip
    parser.add_argument("--fill_steps", type=int, default=5_000, help="random steps first")
    parser.add_argument("--updates", type=int, default=50, help="updates per timed round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds each")
    args = parser.parse_args()

    bindings = [
        f"train.replay_capacity = {max(args.fill_steps * 2, 10_000)}",
        f"train.initial_collect_steps = {args.fill_steps}",
        f"train.total_env_steps = {args.fill_steps * 100}",
        *args.gin_bindings,
    ]
    fp32 = [*bindings, args.fp32_binding] if args.fp32_binding else bindings
    subjects = {"fp32": Subject(args.gin_file, fp32, args.fill_steps, args.updates)}
    if not args.no_two_pass and getattr(subjects["fp32"].run.agent, "reads_next_states_once", 0):
        subjects["two-pass"] = Subject(
            args.gin_file, fp32, args.fill_steps, args.updates, two_pass=True
        )
    if args.bf16_binding:
        subjects["bf16"] = Subject(
            args.gin_file, [*bindings, args.bf16_binding], args.fill_steps, args.updates
        )
    if args.prioritized_binding:
        subjects["prioritized"] = Subject(
            args.gin_file, [*fp32, args.prioritized_binding], args.fill_steps, args.updates
        )
    for spec in args.compare:
        name, _, binding = spec.partition("=")
        if not binding:
            parser.error(f"--compare={spec}: give NAME=BINDING")
        subjects[name] = Subject(args.gin_file, [*fp32, binding], args.fill_steps, args.updates)
    kinds = ("pipeline", "bare", "sample", "loop", "calls")
    times = {(name, kind): [] for name in subjects for kind in kinds}
    for _ in range(args.rounds):
        for kind in kinds:
            for name, subject in subjects.items():
                times[name, kind].append(timed(getattr(subject, kind)))
    rate = {key: args.updates / statistics.median(t) for key, t in times.items()}
    batch = subjects["fp32"].run.batch_size
    print(
        f"config: {args.gin_file}; batch {batch}; {args.updates} updates x {args.rounds} "
        f"alternating rounds; medians; bf16: {args.bf16_binding or 'not measured'}"
    )
    print(f"{'updates/s':42s}" + "".join(f"{name:>12s}" for name in subjects))
    labels = {
        "pipeline": "pipeline (sample + augment + train)",
        "bare": "bare tf.function(agent.train)",
        "sample": f"training batches alone (batch {batch})",
        "loop": "loop end to end (collect + updates)",
        "calls": "loop, a collect and a train call a round",
    }
    for kind in kinds:
        print(f"{labels[kind]:42s}" + "".join(f"{rate[name, kind]:12.1f}" for name in subjects))
    for name in subjects:
        print(
            f"{name}: pipeline / bare {rate[name, 'pipeline'] / rate[name, 'bare']:.3f}; "
            f"loop / pipeline {rate[name, 'loop'] / rate[name, 'pipeline']:.3f}; "
            f"loop / calls {rate[name, 'loop'] / rate[name, 'calls']:.3f}"
        )
    ratio_labels = {"prioritized": "prioritized : uniform ratio (fp32)"}
    for name in subjects:
        if name == "fp32":
            continue
        ratios = ", ".join(f"{kind} {rate[name, kind] / rate['fp32', kind]:.2f}" for kind in kinds)
        if name == "two-pass":  # the gain of reading once: fp32 over the two passes
            ratios = ", ".join(
                f"{kind} {rate['fp32', kind] / rate[name, kind]:.2f}" for kind in kinds
            )
            print(f"fp32 (next states read once) : two-pass ratio: {ratios}")
            continue
        print(f"{ratio_labels.get(name, f'{name} : fp32 ratio')}: {ratios}")
    gin.clear_config()


if __name__ == "__main__":
    main()
