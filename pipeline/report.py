"""Learning curves and an aggregate table for runs grouped into settings.

    python -m pipeline.report RUN_OR_SWEEP_DIR... [--out DIR] [--threshold X]
        [--baselines FILE] [--references FILE] [--reps N]

Each argument is a run directory or a directory searched recursively for runs (a sweep's
output directory works). Runs whose config.gin are identical except for the seed form one
setting. Writes `learning_curves.png`, `report.md`, `report.csv` (one row per setting, baseline
and reference point) and `runs.csv` (one row per run) into `--out` (default: `report/` in the
runs' deepest common directory). Reads only the run directories' files: no TensorFlow, so it
runs beside training. Every number is defined in docs/reports.md.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from pipeline import cli
from pipeline.analysis.report.build import build_report, write_files
from pipeline.analysis.report.stats import DEFAULT_REPS
from pipeline.analysis.report.tables import REFERENCE_COLUMNS
from pipeline.analysis.runs import ReportError

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output directory (default: report/ beside the runs).")
flags.DEFINE_float("threshold", None, "Return level for 'env steps to reach'.")
flags.DEFINE_string("baselines", None, "CSV or Markdown table: policy, env, mean, std, ...")
flags.DEFINE_string("references", None, f"CSV: {','.join(REFERENCE_COLUMNS)}.")
flags.DEFINE_integer("reps", DEFAULT_REPS, "Bootstrap resamples.")


def main(argv: list[str]) -> None:
    """absl's entry point (`cli.run`): the flags are parsed; `argv[1:]` are the run dirs."""
    sys.exit(report(argv[1:], sys.argv[1:]))


def command(args: Sequence[str]) -> int:
    """The command from Python (tests, benchmarks): `args` parsed as the command line would
    be; returns the exit status."""
    FLAGS.unparse_flags()
    try:
        run_dirs = FLAGS(["pipeline.report", *args])[1:]
    except flags.Error as error:
        print(f"error: {error}: see --helpfull", file=sys.stderr)
        return cli.EXIT_BAD_INPUT
    return report(run_dirs, args)


def report(run_dirs: Sequence[str], args: Sequence[str]) -> int:
    """Writes the report of `run_dirs` with the parsed flags; `args`: the command line, for
    report.md. Returns the exit status (2 for a problem with the inputs, nothing written)."""
    try:
        if not run_dirs:
            raise ReportError("no run directories: pass run directories or a sweep directory")
        built = build_report(
            run_dirs,
            args,
            out=FLAGS.out,
            threshold=FLAGS.threshold,
            baselines=Path(FLAGS.baselines) if FLAGS.baselines else None,
            references=Path(FLAGS.references) if FLAGS.references else None,
            reps=FLAGS.reps,
        )
        write_files(built.out, built.files)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return cli.EXIT_BAD_INPUT
    except OSError as error:
        print(f"error: cannot write the report: {error}", file=sys.stderr)
        return cli.EXIT_BAD_INPUT
    for line in built.warnings:
        print(f"warning: {line}", file=sys.stderr)
    print(built.table, end="")
    print(f"wrote {', '.join(built.files)} to {built.out}")
    return 0


def run() -> None:
    cli.run(main)


if __name__ == "__main__":
    run()
