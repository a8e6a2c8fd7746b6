"""Grid x seeds sweeps of `pipeline.train`, run here or as one Slurm array job.

    python -m pipeline.sweep --gin_file=dqn_cartpole.gin \
        --grid='train.batch_size=32,64' --grid='Adam.learning_rate=1e-3,1e-4' \
        --seeds=0-2 [--launcher=slurm] [--parallel=2] [--dry_run] [--aggregate]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from absl import flags

from pipeline import cli
from pipeline.analysis import aggregate as aggregation
from pipeline.sweep.grid import SweepError, default_sweep_dir
from pipeline.sweep.local import LocalLauncher
from pipeline.sweep.plan import SWEEP_FILE, build_sweep, print_runs, write_sweep_file
from pipeline.sweep.slurm import SBATCH_MISSING, SlurmOptions, define_slurm_flags, submit_slurm

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Flags are defined only for the CLI: importing this module (as a Slurm job unpickling
    TrainTask does, or the gin check child that imports pipeline.train) must not clash."""
    flags.DEFINE_multi_string(
        "gin_file", ["dqn_cartpole.gin"], "Gin file (path or bare name in gin/). Repeatable."
    )
    flags.DEFINE_multi_string("gin_bindings", [], "Gin binding fixed for every run. Repeatable.")
    flags.DEFINE_multi_string(
        "grid", [], "name=v1,v2,...: values to sweep over; several --grid: cartesian product."
    )
    flags.DEFINE_string("seeds", "0", "Seeds for every setting: 0,1,2 or 0-4.")
    flags.DEFINE_string(
        "sweep_dir", None, "Sweep directory; default sweeps/<gin stems>[-<bindings hash>]."
    )
    flags.DEFINE_enum("launcher", "local", ["local", "slurm"], "Run here, or as a Slurm array.")
    flags.DEFINE_integer("parallel", 1, "local: runs at a time.")
    flags.DEFINE_bool("dry_run", False, "Print each run's directory and command; write nothing.")
    flags.DEFINE_bool("aggregate", False, "Only aggregate an existing sweep directory.")
    define_slurm_flags(time_min=120)


def only_aggregate() -> int:
    sweep_dir = Path(FLAGS.sweep_dir or default_sweep_dir(FLAGS.gin_file, FLAGS.gin_bindings))
    if not (sweep_dir / SWEEP_FILE).is_file():
        cli.fail(f"{sweep_dir / SWEEP_FILE} not found: pass --sweep_dir of a sweep run before")
    markdown, _ = aggregation.aggregate(sweep_dir)
    print(markdown.read_text(encoding="utf-8"), end="")
    print(f"wrote {markdown} and {sweep_dir / aggregation.CSV_FILE}")
    return 0


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}: pass --grid/--gin_bindings flags")
    if FLAGS.aggregate:
        sys.exit(only_aggregate())
    try:
        if FLAGS.parallel < 1:
            raise SweepError(f"--parallel={FLAGS.parallel}: give 1 or more")
        if FLAGS.launcher == "slurm" and not FLAGS.dry_run and not shutil.which("sbatch"):
            raise SweepError(SBATCH_MISSING)
        sweep = build_sweep(
            FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.grid, FLAGS.seeds, FLAGS.sweep_dir
        )
    except SweepError as error:
        cli.fail(str(error))
    options = SlurmOptions.from_flags()
    settings = len(sweep.runs) // len(sweep.seeds)
    print(
        f"sweep {sweep.sweep_dir}: {len(sweep.runs)} runs "
        f"({settings} settings x {len(sweep.seeds)} seeds), launcher {FLAGS.launcher}"
    )
    if FLAGS.dry_run:
        print_runs(sweep)
        if FLAGS.launcher == "slurm":
            folder = sweep.sweep_dir / "slurm"
            print(f"sbatch parameters: {options.describe(len(sweep.runs), folder)}")
        print("dry run: nothing written")
        return
    try:
        write_sweep_file(sweep)
    except SweepError as error:
        cli.fail(str(error))
    if FLAGS.launcher == "slurm":
        sys.exit(submit_slurm(sweep, options))
    status = LocalLauncher(sweep, FLAGS.parallel).run()
    markdown, _ = aggregation.aggregate(sweep.sweep_dir)
    print(markdown.read_text(encoding="utf-8"), end="")
    print(f"wrote {markdown} and {sweep.sweep_dir / aggregation.CSV_FILE}")
    sys.exit(status)


def run() -> None:
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    run()
