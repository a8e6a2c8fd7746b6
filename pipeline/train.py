"""Runs one experiment: `python -m pipeline.train --gin_file=dqn_cartpole.gin`.

Flags only say how to run (files, bindings, where); everything that changes results is gin.
"""

import sys
from collections.abc import Callable
from pathlib import Path

import gin
from absl import flags, logging

from pipeline import cli, config
from pipeline.errors import UserError
from pipeline.loops import off_policy
from pipeline.loops.base import TrainingLoop
from pipeline.run import files, metrics, preemption, rundir
from pipeline.run.checkpoints import WriteError

cli.define_run_flags()
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    execute(argv, off_policy.build_loop)


def execute(
    argv: list[str], build_loop: Callable[[Path], TrainingLoop], launched: bool = False
) -> None:
    """Parses gin, checks the run directory, trains (or resumes) and prints the result.

    The distributed learner runs through here too, with its own `build_loop` and `launched`:
    its launcher checked the directory before the other roles wrote their files into it.
    """
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}: pass settings as --gin_bindings='name=value'")
    logging.set_verbosity(logging.INFO)
    # Signals from here on lead to a checkpoint and exit 75, not to a bare kill.
    stop = preemption.PreemptionFlag().__enter__()
    lock = None
    try:
        gin_paths = config.parse(FLAGS.gin_file, FLAGS.gin_bindings)
        seed = config.run_settings().seed
        root_dir = Path(
            FLAGS.root_dir or rundir.default_root_dir(FLAGS.gin_file, FLAGS.gin_bindings, seed)
        )
        if not launched:
            rundir.check_writable_run(root_dir)
        resuming = files.holds_own_run(root_dir)
        if resuming:  # lock before building anything, so a second process stops here
            lock = rundir.RunLock(root_dir, enabled=not FLAGS.no_lock).acquire()
            rundir.check_same_settings(root_dir, gin.config_str())
        run = build_loop(root_dir)
        config.check_bindings_used(FLAGS.gin_bindings)
        rundir.prepare(root_dir)
        lock = lock or rundir.RunLock(root_dir, enabled=not FLAGS.no_lock).acquire()
    except UserError as error:
        cli.fail(str(error).splitlines()[0])
    except Exception as error:  # raised inside a configurable gin called: a setting's fault
        message = config.explain_call_error(error)
        if message is None:
            raise
        cli.fail(message)
    info = rundir.run_info(seed, gin_paths, FLAGS.gin_bindings)
    if resuming:
        rundir.record_resume(root_dir, info)
    else:
        rundir.write_run_files(root_dir, info)
    logging.info("run directory: %s", root_dir.resolve())
    try:
        run.run(stop)
    except preemption.Preempted as stopped:
        print(
            f"{stopped}: checkpoint written; run the same command to resume "
            f"(exit status {preemption.EXIT_PREEMPTED}); run directory: {root_dir.resolve()}"
        )
        sys.exit(preemption.EXIT_PREEMPTED)
    except WriteError as error:
        print(
            f"error: {error}: free space or fix permissions, then run the same command "
            "to resume from the last checkpoint",
            file=sys.stderr,
        )
        sys.exit(1)
    except UserError as error:
        cli.fail(str(error).splitlines()[0])
    finally:
        lock.release()
    rows = [row for row in metrics.read_rows(root_dir) if "eval_return_mean" in row]
    final, best = rows[-1], max(rows, key=lambda row: row["eval_return_mean"])
    print(
        f"final eval return {final['eval_return_mean']:.1f} +- {final['eval_return_std']:.1f} "
        f"over {final['eval_episodes']} episodes (best {best['eval_return_mean']:.1f} at "
        f"{best['env_steps']:,} env steps); run directory: {root_dir.resolve()}"
    )


def run() -> None:
    cli.run(main)


if __name__ == "__main__":
    run()
