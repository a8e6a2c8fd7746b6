"""The Atari-100k suite as runs of the sweep machinery: games x seeds of one gin file, each
an unchanged `python -m pipeline.train` in `<out>/<Game>/sS`, launched here one at a time or
as one Slurm array, and the suite report over what they (and the archive) hold.

A suite is `pipeline.sweep`'s `Sweep` with the game as its one grid setting and a directory
layout of its own (`<Game>/sS` rather than `game='Breakout'/sS`, so records and reports read
as games), built here rather than by `build_sweep`. Whatever the launcher, a run is resumed
by the trainer from its own checkpoints, and one whose record is archived is not run again.
Nothing here imports TensorFlow: the gin check runs in a child, as for sweeps.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.atari100k import records
from pipeline.atari100k.records import SuiteError
from pipeline.atari100k.references import ATARI100K_GAMES
from pipeline.run.files import atomic_write_text
from pipeline.sweep.gin_check import check_gin
from pipeline.sweep.grid import (
    SweepError,
    binding_name,
    normalize_gin_file,
    parse_seeds,
    train_command,
)
from pipeline.sweep.plan import Run, Sweep

SUITE_FILE = "suite.json"  # in <out>: the suite's games, seeds, gin file and archive
SUITES = {"atari100k": ATARI100K_GAMES}
GAME_BINDING = "load_atari.game"
SEED_BINDING = "train.seed"


@dataclass
class Suite:
    """What one `python -m pipeline.atari100k` command runs and reports."""

    gin_file: str
    gin_bindings: list[str]
    games: list[str]
    seeds: list[int]
    out: Path
    archive: Path | None
    total_env_steps: int | None = None  # from the gin check; None where it did not run
    compare: str | None = None  # another suite's --out or archive, beside this one in reports

    @property
    def label(self) -> str:
        """The config's name in reports: the output directory's."""
        return self.out.name

    def runs(self) -> list[Run]:
        """Seed-major: every game's seed 0, then every game's seed 1, ... A suite cut short
        then still covers every game, which the suite's aggregates (over games) need; more
        seeds only narrow their intervals."""
        gin_files = [normalize_gin_file(self.gin_file)]
        planned = []
        for seed in self.seeds:
            for game in self.games:
                root = self.out / game / f"s{seed}"
                bindings = [f"{GAME_BINDING}='{game}'", f"{SEED_BINDING}={seed}"]
                planned.append(
                    Run(
                        setting={GAME_BINDING: f"'{game}'"},
                        slug=game,
                        seed=seed,
                        run_dir=f"{game}/s{seed}",
                        root_dir=str(root),
                        log=str(root.with_suffix(".log")),
                        command=train_command(gin_files, [*bindings, *self.gin_bindings], root),
                        total_env_steps=self.total_env_steps,
                    )
                )
        return planned

    def sweep(self, runs: list[Run]) -> Sweep:
        """The sweep the launchers take: these runs, the game as the grid."""
        return Sweep(
            gin_files=[normalize_gin_file(self.gin_file)],
            gin_bindings=list(self.gin_bindings),
            grid={GAME_BINDING: [f"'{game}'" for game in self.games]},
            seeds=list(self.seeds),
            sweep_dir=self.out,
            seed_bindings=[SEED_BINDING],
            runs=runs,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "gin_file": self.gin_file,
            "gin_bindings": self.gin_bindings,
            "games": self.games,
            "seeds": self.seeds,
            "out": str(self.out),
            "archive": None if self.archive is None else str(self.archive),
            "total_env_steps": self.total_env_steps,
            "compare": self.compare,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Suite:
        archive = data.get("archive")
        return cls(
            gin_file=data["gin_file"],
            gin_bindings=list(data["gin_bindings"]),
            games=list(data["games"]),
            seeds=[int(s) for s in data["seeds"]],
            out=Path(data["out"]),
            archive=None if archive is None else Path(archive),
            total_env_steps=data.get("total_env_steps"),
            compare=data.get("compare"),
        )

    def results(self) -> list[records.Result]:
        return [
            records.read_result(run.slug, run.seed, self.out, self.archive) for run in self.runs()
        ]


def parse_games(games_text: str | None, suite_name: str | None) -> list[str]:
    """`--games=Breakout,Pong` or `--suite=atari100k`, in the order given, each once."""
    if games_text and suite_name:
        raise SuiteError("give --games or --suite, not both: e.g. --suite=atari100k")
    if suite_name:
        if suite_name not in SUITES:
            raise SuiteError(f"unknown --suite={suite_name}: the suite is --suite=atari100k")
        return list(SUITES[suite_name])
    names = [g.strip() for g in (games_text or "").split(",") if g.strip()]
    if not names:
        raise SuiteError("no games: give --games=Breakout,Pong or --suite=atari100k")
    unknown = [g for g in names if g not in ATARI100K_GAMES]
    if unknown:
        raise SuiteError(
            f"unknown game {', '.join(unknown)} in --games: the Atari 100k games are "
            + ",".join(ATARI100K_GAMES)
        )
    return list(dict.fromkeys(names))


def default_out(gin_file: str, bindings: list[str]) -> Path:
    """runs/atari100k/<gin file>[-<hash of bindings>], as runs/ and sweeps/ name theirs."""
    name = Path(gin_file).name.removesuffix(".gin")
    if bindings:
        name += "-" + hashlib.sha1("\n".join(bindings).encode()).hexdigest()[:8]
    return records.REPO / "runs" / "atari100k" / name


def build_suite(
    gin_file: str,
    gin_bindings: list[str],
    games_text: str | None,
    suite_name: str | None,
    seeds_text: str,
    out: str | None,
    archive: str | None,
) -> Suite:
    """Checks the flags (not the gin files: `check_suite_gin`); writes nothing."""
    games = parse_games(games_text, suite_name)
    try:
        seeds = parse_seeds(seeds_text)
    except SweepError as error:
        raise SuiteError(str(error)) from None
    for binding in gin_bindings:
        if "=" not in binding:
            raise SuiteError(f"malformed --gin_bindings={binding!r}: write name=value")
        name = binding_name(binding)
        if name in (GAME_BINDING, SEED_BINDING):
            flag = "--games" if name == GAME_BINDING else "--seeds"
            raise SuiteError(f"{name} is set by {flag}: remove it from --gin_bindings")
    out_dir = Path(out) if out else default_out(gin_file, gin_bindings)
    out_dir = out_dir.resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise SuiteError(f"--out {out_dir} is a file: choose a directory")
    if archive is None:
        archive_dir: Path | None = records.ARCHIVE_ROOT / out_dir.name
    elif archive.strip() in ("", "."):
        archive_dir = None
    else:
        archive_dir = Path(archive).resolve()
    return Suite(gin_file, list(gin_bindings), games, seeds, out_dir, archive_dir)


def check_suite_gin(suite: Suite) -> None:
    """Parses the gin file with each game bound, strictly, in a child process (TensorFlow
    is imported there, not here); sets the suite's step budget."""
    settings = [{GAME_BINDING: f"'{game}'"} for game in suite.games]
    try:
        checked = check_gin([normalize_gin_file(suite.gin_file)], suite.gin_bindings, settings)
    except SweepError as error:
        raise SuiteError(str(error)) from None
    first = checked[0]
    if first["env_loader"] != "load_atari":
        raise SuiteError(
            f"--gin_file={suite.gin_file} plays no Atari game (its env loader is "
            f"{first['env_loader'] or 'the default, load_gymnasium'}): pass an Atari gin file "
            "such as atari100k.gin"
        )
    if first["seed_binding"] != SEED_BINDING:
        raise SuiteError(
            f"--gin_file={suite.gin_file} runs in another loop ({first['seed_binding']}): the "
            "suite runs the off-policy loop train, as atari100k.gin does"
        )
    suite.total_env_steps = first["total_env_steps"]


def write_suite_file(suite: Suite) -> None:
    """Writes <out>/suite.json (this command's games and seeds, which the Slurm report job
    reads), refusing an output directory that holds a suite of another gin file or bindings
    (its runs could not resume with these settings)."""
    path = suite.out / SUITE_FILE
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        for key in ("gin_file", "gin_bindings"):
            if before.get(key) != getattr(suite, key):
                raise SuiteError(
                    f"--out {suite.out} holds a suite with other {key} ({before.get(key)} "
                    f"there, {getattr(suite, key)} now): choose another --out"
                )
    try:
        suite.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(suite.to_json(), indent=2) + "\n")
    except OSError as error:
        raise SuiteError(
            f"cannot write --out {suite.out} ({error.strerror}): choose a writable path"
        ) from None


def load_suite(out: Path) -> Suite:
    return Suite.from_json(json.loads((out / SUITE_FILE).read_text(encoding="utf-8")))


def describe(suite: Suite, results: list[records.Result]) -> list[str]:
    """The plan, one block per run: where it is, what state it is in, its command."""
    lines = []
    runs = suite.runs()
    for index, (run, result) in enumerate(zip(runs, results, strict=True), 1):
        if result.archived:
            state = f"finished, record in {result.run_dir}"
        elif result.finished:
            kept = " (its record is archived at the next report)" if suite.archive else ""
            state = "finished" + kept
        elif result.started:
            state = f"resumes (evaluated at {result.env_steps:,} env steps)"
        else:
            state = "new"
        lines += [
            f"[{index}/{len(runs)}] {run.run_dir}: {state}",
            f"  command: {shlex.join(run.command)}",
            f"  log:     {run.log}",
        ]
    return lines


def archive_finished(suite: Suite, results: list[records.Result]) -> None:
    for result in results:
        target = records.archive_result(result, suite.archive)
        if target is not None:
            print(f"{result.game}/s{result.seed}: record archived in {target}")


def write_report(suite: Suite, reps: int | None = None) -> tuple[Path, dict]:
    """Archives finished runs' records, then writes the suite report into `<out>`: over the
    runs that have started (or have a record), and `suite.compare`'s, if given, beside them.
    A refusal (nothing to report, mixed configs) comes before anything is written."""
    from pipeline.atari100k.report import write_suite_report

    results = suite.results()
    records.check_one_config(results)
    present = [r for r in results if r.started or r.archived]
    if not present:
        where = f"{suite.out}" + (f" or {suite.archive}" if suite.archive else "")
        raise SuiteError(
            f"nothing to report: no run of these games and seeds in {where}; train first "
            "(drop --report_only) or pass the --out of a suite that ran"
        )
    other = compare_runs(Path(suite.compare)) if suite.compare else None
    archive_finished(suite, results)
    runs = [r.game_run(suite.label) for r in present]
    options = {} if reps is None else {"reps": reps}
    report = write_suite_report(runs, suite.out, compare=other, **options)
    return suite.out / "report.md", report


def compare_runs(directory: Path) -> list:
    """The other config's runs for --compare: a suite's output directory (its suite.json
    says its games, seeds and archive) or a directory of records or runs."""
    if not directory.is_dir():
        raise SuiteError(
            f"--compare={directory} is not a directory: pass another suite's --out or its "
            "archive in data/results/atari100k/"
        )
    if (directory / SUITE_FILE).is_file():
        other = load_suite(directory)
        label, found = other.label, other.results()
    else:
        label, found = directory.name, records.results_in(directory)
    found = [r for r in found if r.game in ATARI100K_GAMES and (r.started or r.archived)]
    if not found:
        raise SuiteError(
            f"--compare={directory} holds no Atari 100k runs or records: pass another "
            "suite's --out or its archive in data/results/atari100k/"
        )
    return [r.game_run(label) for r in found]


def report_job(out_dir: str) -> str:
    """The small Slurm job after the array (afterany): the suite report over what the array
    left, archiving finished runs' records. Its settings are the submission's suite.json."""
    markdown, _ = write_report(load_suite(Path(out_dir)))
    print(markdown.read_text(encoding="utf-8"))
    return str(markdown)


def runs_without_records(suite: Suite) -> list[Run]:
    """The runs still to train; those with an archived record are named and left out."""
    todo = []
    for run, result in zip(suite.runs(), suite.results(), strict=True):
        if result.archived:
            print(f"{run.run_dir}: finished earlier, record in {result.run_dir}")
        else:
            todo.append(run)
    return todo


def run_local(suite: Suite) -> int:
    """Trains the runs that have no record, one at a time, archiving each finished run's
    record as it ends (a session cut short in the next run keeps it); 0, 1 (a run failed) or
    75 (stopped by a signal: every run checkpointed, the same command goes on)."""
    from pipeline.sweep.local import LocalLauncher

    todo = runs_without_records(suite)

    def archive_if_finished(run: Run, code: int) -> None:
        if code == 0:
            result = records.read_result(run.slug, run.seed, suite.out, suite.archive)
            archive_finished(suite, [result])

    launcher = LocalLauncher(suite.sweep(todo), parallel=1, on_exit=archive_if_finished)
    return launcher.run()


def submit(suite: Suite, options: Any) -> int:
    """One Slurm array task per run without a record (requeued on pre-emption), then the
    report job (`report_job`) after the array."""
    from pipeline.sweep.slurm import submit_slurm

    todo = runs_without_records(suite)
    return submit_slurm(
        suite.sweep(todo), options, after=report_job, after_name="report", results="report.md"
    )
