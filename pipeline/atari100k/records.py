"""A suite run's results, read from its run directory or its archived record, and the
records themselves: what outlives `runs/` (a new machine, a new session) in git.

A finished run's record is a few KB, no checkpoints: its run.json, config.gin and
metrics.jsonl, and bench.json with what it cost (`wall_s`, the seconds it trained over all
its sessions, evaluations included; `eval_s`, each evaluation's seconds by env steps; and
`peak_rss_mb`, its trainer's peak memory). Records live in `<archive>/<Game>/sS`; records
written by the Breakout-only bench before the suite (`<archive>/sS`, no game level) are read
where they stand, as the game their config.gin names, so the files that docs/results.md cites
stay where it cites them. No TensorFlow: the Slurm report job imports this.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.analysis.runs import load_run
from pipeline.atari100k.report import GameRun
from pipeline.run.files import holds_run, parse_config_str
from pipeline.sweep import usage

REPO = Path(__file__).resolve().parents[2]
ARCHIVE_ROOT = REPO / "data" / "results" / "atari100k"
ARCHIVED_FILES = ("run.json", "config.gin", "metrics.jsonl")
ARCHIVE_INFO = "bench.json"
DEFAULT_GAME = "Breakout"  # load_atari's default: a config.gin that binds no game played it
# Bindings that tell a suite's runs apart; everything else must be equal to pool them.
PER_RUN_BINDINGS = ("train.seed", "load_atari.game")
# A sealed checkpoint (pipeline/run/checkpoints.py, which imports TensorFlow: not here): its
# directory, or one moved aside by a replacement a kill interrupted, with its manifest.
_CHECKPOINT = re.compile(r"^\.?ckpt-(\d+)(?:\.replaced)?$")
_MANIFEST = "MANIFEST.json"


class SuiteError(Exception):
    """A request the suite refuses, told in one line (`error: ...`, exit status 2)."""


@dataclass
class Result:
    """One (game, seed) of a suite as the report sees it, from wherever its files are."""

    game: str
    seed: int
    run_dir: Path  # the live run directory, or the archived record where that is used
    log: Path | None  # the trainer's log under OUT (its .usage.jsonl holds the peaks)
    archived: bool
    finished: bool
    env_steps: int
    final_score: float | None
    revision: str
    wall_s: float | None
    eval_s: dict[str, float]
    peak_rss_mb: float | None
    started: bool

    def eval_split(self) -> tuple[float, float]:
        """Seconds in the evaluations along the way, and in the final one (the score's)."""
        final_key = str(self.env_steps) if self.finished else None
        final = self.eval_s.get(final_key, 0.0) if final_key else 0.0
        return sum(self.eval_s.values()) - final, final

    def game_run(self, config: str) -> GameRun:
        along, final = self.eval_split()
        return GameRun(
            config=config,
            game=self.game,
            seed=self.seed,
            final_score=self.final_score,
            env_steps=self.env_steps,
            wall_s=self.wall_s or 0.0,
            eval_wall_s=along,
            final_eval_wall_s=final,
            peak_rss_mb=self.peak_rss_mb,
            revision=self.revision,
        )


def record_game(record: Path) -> str:
    """The game a record or run directory played, from its config.gin."""
    config_path = record / "config.gin"
    if not config_path.is_file():
        return DEFAULT_GAME
    config = parse_config_str(config_path.read_text(encoding="utf-8"))
    return config.get("load_atari.game", repr(DEFAULT_GAME)).strip("'\"")


def record_dir(archive: Path | None, game: str, seed: int) -> Path | None:
    """The archived record of (game, seed): `<archive>/<Game>/sS`, or a pre-suite
    `<archive>/sS` whose config.gin played that game; None where there is none."""
    if archive is None:
        return None
    for candidate in (archive / game / f"s{seed}", archive / f"s{seed}"):
        if (candidate / ARCHIVE_INFO).is_file():
            if candidate.parent == archive and record_game(candidate) != game:
                continue
            return candidate
    return None


def timings(run_dir: Path) -> tuple[float | None, dict[str, float]]:
    """Seconds the run trained over its sessions and each evaluation's seconds, from its
    record or else its newest checkpoint; (None, {}) before the first checkpoint."""
    if (run_dir / ARCHIVE_INFO).is_file():
        info = json.loads((run_dir / ARCHIVE_INFO).read_text(encoding="utf-8"))
        return info.get("wall_s"), info.get("eval_s", {})
    newest = newest_checkpoint(run_dir)
    if newest is None:
        return None, {}
    loop = json.loads((newest[1] / "loop.json").read_text(encoding="utf-8"))
    return loop.get("wall_s"), loop.get("eval_s", {})


def newest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """(env steps, folder) of the run's newest complete checkpoint, if it has one: where an
    unfinished run stands (its last evaluation may be well behind, after a SIGTERM)."""
    sealed = []
    if (run_dir / "checkpoints").is_dir():
        for path in (run_dir / "checkpoints").iterdir():
            match = _CHECKPOINT.match(path.name)
            if match and (path / _MANIFEST).is_file() and (path / "loop.json").is_file():
                sealed.append((int(match.group(1)), path))
    return max(sealed) if sealed else None


def revision_of(run_dir: Path) -> str:
    """The commit the run ran, short, marked where the tree had uncommitted changes."""
    try:
        info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "unknown"
    git = info.get("git") or {}
    revision = (git.get("revision") or "unknown")[:7]
    return revision + ("+dirty" if git.get("dirty") else "")


def read_result(game: str, seed: int, out: Path | None, archive: Path | None) -> Result:
    """(game, seed) from its archived record where one exists (what the run scored, once
    written, stays), else from its run directory `<out>/<Game>/sS` (maybe unfinished or
    absent)."""
    live = out / game / f"s{seed}" if out is not None else None
    log = live.with_suffix(".log") if live is not None else None
    record = record_dir(archive, game, seed)
    return result_from(game, seed, record if record is not None else live, log)


def result_from(game: str, seed: int, source: Path | None, log: Path | None) -> Result:
    """(game, seed) read from `source`, a record (it holds bench.json) or a run directory;
    the peak memory from the record, else from the attempts logged beside `log`."""
    exists = source is not None and source.is_dir()
    run = load_run(source, explicit=True) if exists else None
    finished = run is not None and run.finished()
    archived = exists and (source / ARCHIVE_INFO).is_file()
    wall_s, eval_s = timings(source) if exists else (None, {})
    env_steps = run.last_step if run is not None else 0
    newest = newest_checkpoint(source) if exists and not finished else None
    if newest is not None:
        env_steps = max(env_steps, newest[0])
    peak = usage.peak_rss_mb(log) if log is not None else None
    if archived:
        info = json.loads((source / ARCHIVE_INFO).read_text(encoding="utf-8"))
        peak = info.get("peak_rss_mb", peak)
    return Result(
        game=game,
        seed=seed,
        run_dir=source if source is not None else Path(game, f"s{seed}"),
        log=log,
        archived=archived,
        finished=finished,
        env_steps=env_steps,
        final_score=run.final_return if run is not None and finished else None,
        revision=revision_of(source) if exists else "unknown",
        wall_s=wall_s,
        eval_s=eval_s,
        peak_rss_mb=peak,
        started=exists and holds_run(source),
    )


def archive_result(result: Result, archive: Path | None) -> Path | None:
    """Copies a finished run's record out of runs/ (which does not outlive the machine) into
    `<archive>/<Game>/sS`; a record, once written, is what the run scored and is kept."""
    if archive is None or result.archived or not result.finished:
        return None
    target = archive / result.game / f"s{result.seed}"
    if (target / ARCHIVE_INFO).is_file():
        return None
    target.mkdir(parents=True, exist_ok=True)
    for name in ARCHIVED_FILES:
        if (result.run_dir / name).is_file():
            shutil.copy2(result.run_dir / name, target / name)
    along, final = result.eval_split()
    info = {
        "wall_s": result.wall_s,
        "eval_s": result.eval_s,
        "eval_wall_s": along,
        "final_eval_wall_s": final,
        "peak_rss_mb": result.peak_rss_mb,
        "attempts": usage.attempts(result.log) if result.log is not None else [],
        "archived": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "from": str(result.run_dir),
    }
    (target / ARCHIVE_INFO).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return target


def config_without_run(run_dir: Path) -> str:
    """config.gin less what tells the suite's runs apart (game, seed), to compare configs."""
    config = parse_config_str((run_dir / "config.gin").read_text(encoding="utf-8"))
    return json.dumps(
        {k: v for k, v in config.items() if k not in PER_RUN_BINDINGS}, sort_keys=True
    )


def check_one_config(results: list[Result]) -> None:
    """Runs that ran different configs (a gin file changed between sessions) are not one
    sample: refuse to pool them, naming which runs ran which."""
    groups: dict[str, list[str]] = {}
    for r in results:
        if r.finished and (r.run_dir / "config.gin").is_file():
            groups.setdefault(config_without_run(r.run_dir), []).append(f"{r.game}/s{r.seed}")
    if len(groups) > 1:
        described = "; ".join(", ".join(names) for names in groups.values())
        raise SuiteError(
            f"the runs ran {len(groups)} different configs ({described}): move the outdated "
            "runs' directories and archived records aside and run them again"
        )


_SEED_DIR = re.compile(r"s(\d+)$")


def results_in(directory: Path) -> list[Result]:
    """Every run or record in a directory that holds no suite.json (an archive, or the
    output of the bench before the suite), for --compare: `<Game>/sS` directories, and
    pre-suite `sS` ones read as the game their config.gin names."""
    found: dict[tuple[str, int], Result] = {}
    for path in sorted(directory.glob("*/s*")) + sorted(directory.glob("s*")):
        match = _SEED_DIR.match(path.name)
        if not match or not path.is_dir() or not holds_run(path):
            continue
        game = record_game(path) if path.parent == directory else path.parent.name
        seed = int(match.group(1))
        found.setdefault((game, seed), result_from(game, seed, path, path.with_suffix(".log")))
    return [found[key] for key in sorted(found)]
