"""Learning curves and an aggregate table for runs grouped into settings.

    python -m pipeline.report RUN_OR_SWEEP_DIR... [--out DIR] [--threshold X]
        [--baselines FILE] [--references FILE] [--reps N]

Each argument is a run directory or a directory searched recursively for runs (a sweep's
output directory works). Runs whose config.gin are identical except for the seed form one
setting. Writes `learning_curves.png`, `report.md`, `report.csv` (one row per setting, baseline
and reference point) and `runs.csv` (one row per run) into `--out` (default: `report/` in the
runs' deepest common directory). Reads only the run directories' files: no TensorFlow, so it
runs beside training. Every number is defined in README.md, section "Reports".
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags

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


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; returns the exit status (2 for a problem with the inputs, nothing written)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    FLAGS.unparse_flags()
    try:
        run_dirs = FLAGS(["pipeline.report", *argv])[1:]
        if not run_dirs:
            raise ReportError("no run directories: pass run directories or a sweep directory")
        report = build_report(
            run_dirs,
            argv,
            out=FLAGS.out,
            threshold=FLAGS.threshold,
            baselines=Path(FLAGS.baselines) if FLAGS.baselines else None,
            references=Path(FLAGS.references) if FLAGS.references else None,
            reps=FLAGS.reps,
        )
        write_files(report.out, report.files)
    except (ReportError, flags.Error) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot write the report: {error}", file=sys.stderr)
        return 2
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    print(report.table, end="")
    print(f"wrote {', '.join(report.files)} to {report.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
