"""Runs one experiment: `python -m pipeline.train --gin_file=dqn_cartpole.gin`.

Flags only say how to run (files, bindings, where); everything that changes results is gin.
"""

import sys
from pathlib import Path

from absl import app, flags, logging

from envs.errors import UserError
from pipeline import config, experiment, rundir

flags.DEFINE_multi_string(
    "gin_file",
    ["dqn_cartpole.gin"],
    "Gin file: a path, or a bare name found in the repository's gin/ folder. Repeatable.",
)
flags.DEFINE_multi_string(
    "gin_bindings", [], "Gin binding such as 'train.total_env_steps=20_000'. Repeatable."
)
flags.DEFINE_string(
    "root_dir", None, "Run directory; default runs/<gin file>[-<bindings hash>]-s<seed>."
)
flags.DEFINE_bool("tf_logs", False, "Show TensorFlow's own start-up and C++ log lines.")
FLAGS = flags.FLAGS


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}: pass settings as --gin_bindings='name=value'")
    logging.set_verbosity(logging.INFO)
    try:
        gin_paths = config.parse(FLAGS.gin_file, FLAGS.gin_bindings)
        seed = config.query("train.seed", 0)
        root_dir = Path(
            FLAGS.root_dir or rundir.default_root_dir(FLAGS.gin_file, FLAGS.gin_bindings, seed)
        )
        run = experiment.Experiment(root_dir)
        rundir.prepare(root_dir)
    except UserError as error:
        fail(str(error).splitlines()[0])
    experiment.write_run_files(root_dir, rundir.run_info(seed, gin_paths, FLAGS.gin_bindings))
    logging.info("run directory: %s", root_dir.resolve())
    rows = run.run()
    final, best = rows[-1], max(rows, key=lambda row: row["eval_return_mean"])
    print(
        f"final eval return {final['eval_return_mean']:.1f} +- {final['eval_return_std']:.1f} "
        f"over {final['eval_episodes']} episodes (best {best['eval_return_mean']:.1f} at "
        f"{best['env_steps']:,} env steps); run directory: {root_dir.resolve()}"
    )


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
