"""The Atari-100k suite: games x seeds of one gin file at 100k agent steps, and its report.

    python -m pipeline.atari100k --suite=atari100k --seeds=0-4        # all 26 games
    python -m pipeline.atari100k --games=Breakout,Pong --seeds=0-2 [--gin_file=atari100k.gin]
        [--gin_bindings=...] [--out=DIR] [--launcher=local|slurm] [--report_only] [--dry_run]
        [--compare=OTHER_OUT]

Each run is `python -m pipeline.train --gin_file=GIN --gin_bindings=load_atari.game='G'
--gin_bindings=train.seed=S --root_dir=OUT/G/sS`, its output appended to `OUT/G/sS.log`.
Locally the runs go one at a time (wall times are per run, on a quiet machine), every game's
seed 0 first; Ctrl-C or SIGTERM goes to the running one, which checkpoints, and the command
writes the report so far and exits 75. With --launcher=slurm they are one array job, requeued
on pre-emption, and a report job runs after it. The same command again resumes unfinished
runs and skips finished ones: a finished run's record (run.json, config.gin, metrics.jsonl
and bench.json with its wall times and peak memory) is archived in
`data/results/atari100k/<OUT name>/<Game>/sS`, where git carries it, and counts as finished
even where OUT is gone. docs/atari.md, "The Atari-100k suite", says more.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from absl import flags

from pipeline import cli
from pipeline.atari100k import suite as suites
from pipeline.atari100k.records import SuiteError
from pipeline.sweep.slurm import SBATCH_MISSING, SlurmOptions, define_slurm_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Flags are defined only for the CLI: the Slurm report job imports the package."""
    flags.DEFINE_string("games", None, "Games, ale-py names: Breakout,Pong,...")
    flags.DEFINE_string("suite", None, "A named suite instead of --games: atari100k (26 games).")
    flags.DEFINE_string("seeds", "0-4", "Seeds for every game: 0,1,2 or 0-4.")
    flags.DEFINE_string("gin_file", "atari100k.gin", "Gin file (path or bare name in gin/).")
    flags.DEFINE_multi_string("gin_bindings", [], "Gin binding for every run. Repeatable.")
    flags.DEFINE_string(
        "out", None, "Output directory; default runs/atari100k/<gin file>[-<hash>]."
    )
    flags.DEFINE_string(
        "archive",
        None,
        "Where finished runs' records go; default data/results/atari100k/<OUT name>; "
        "--archive= keeps none.",
    )
    flags.DEFINE_enum("launcher", "local", ["local", "slurm"], "Run here, or as a Slurm array.")
    flags.DEFINE_bool("report_only", False, "Train nothing: archive finished runs, report.")
    flags.DEFINE_bool("dry_run", False, "Print each run's state and command; write nothing.")
    flags.DEFINE_string(
        "compare", None, "Another suite's --out or archive: its runs beside these in the report."
    )
    flags.DEFINE_integer("reps", None, "Bootstrap resamples in the report (default: its own).")
    define_slurm_flags(time_min=240)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}: pass --games/--gin_bindings flags")
    try:
        suite = chosen_suite()
        if FLAGS.report_only:
            markdown, _ = suites.write_report(suite, reps=FLAGS.reps)
            print(markdown.read_text(encoding="utf-8"), end="")
            print(f"wrote {markdown}")
            return
        if FLAGS.launcher == "slurm" and not FLAGS.dry_run and not shutil.which("sbatch"):
            raise SuiteError(SBATCH_MISSING)
        suites.check_suite_gin(suite)
    except SuiteError as error:
        cli.fail(str(error))
    options = SlurmOptions.from_flags()
    runs = len(suite.games) * len(suite.seeds)
    print(
        f"suite {suite.out}: {len(suite.games)} games x {len(suite.seeds)} seeds = {runs} runs "
        f"(every game's seed first), launcher {FLAGS.launcher}; records: "
        f"{suite.archive or 'none kept (--archive=)'}"
    )
    if FLAGS.dry_run:
        print("\n".join(suites.describe(suite, suite.results())))
        if FLAGS.launcher == "slurm":
            described = options.describe(runs, suite.out / "slurm")
            print(f"sbatch parameters: {described.replace('aggregates', 'writes the report')}")
        print("dry run: nothing written")
        return
    try:
        suites.write_suite_file(suite)
    except SuiteError as error:
        cli.fail(str(error))
    if FLAGS.launcher == "slurm":
        sys.exit(suites.submit(suite, options))
    status = suites.run_local(suite)
    try:
        markdown, _ = suites.write_report(suite, reps=FLAGS.reps)
    except SuiteError as error:  # after training: a failed run's status says more than 2
        print(f"error: {error}", file=sys.stderr)
        sys.exit(status or cli.EXIT_BAD_INPUT)
    print(markdown.read_text(encoding="utf-8"), end="")
    print(f"wrote {markdown}")
    sys.exit(status)


def chosen_suite() -> suites.Suite:
    """The suite the flags name; `--report_only --out=DIR` alone reports DIR's suite.json."""
    if FLAGS.report_only and not (FLAGS.games or FLAGS.suite) and FLAGS.out:
        out = Path(FLAGS.out).resolve()
        if (out / suites.SUITE_FILE).is_file():
            suite = suites.load_suite(out)
            suite.compare = compare_dir() or suite.compare
            return suite
    suite = suites.build_suite(
        FLAGS.gin_file,
        FLAGS.gin_bindings,
        FLAGS.games,
        FLAGS.suite,
        FLAGS.seeds,
        FLAGS.out,
        FLAGS.archive,
    )
    suite.compare = compare_dir()
    return suite


def compare_dir() -> str | None:
    """--compare as an absolute path, checked before anything runs or is written."""
    if FLAGS.compare is None:
        return None
    path = Path(FLAGS.compare).resolve()
    if not path.is_dir():
        raise SuiteError(
            f"--compare={FLAGS.compare} is not a directory: pass another suite's --out or its "
            "archive in data/results/atari100k/"
        )
    return str(path)


def run() -> None:
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    run()
