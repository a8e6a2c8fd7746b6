"""One model of a run directory's results, read from its files alone (no TensorFlow).

The report, the sweep's aggregate and its launchers all read runs through `load_run`: which
evaluations a run has made, its final and best return, whether it has finished, and what
identifies it (config.gin, run.json, its seed). One spread across seeds too: `sample_std`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.run.files import holds_run, parse_config_str
from pipeline.run_settings import SEED_BINDINGS, TOTAL_STEPS_BINDINGS


class ReportError(Exception):
    """A problem with the inputs: one line `error: ...`, exit status 2, nothing written."""


def normalize_binding(binding: str) -> str:
    """`a.b = 1` and `a.b=1` are the same binding; labels show the compact form."""
    name, _, value = binding.partition("=")
    return f"{name.strip()}={value.strip()}"


def _is_seed_binding(binding: str) -> bool:
    return binding.partition("=")[0].strip() in SEED_BINDINGS


def natural_key(path: Path) -> list[object]:
    """Sorts s2 before s10, so seeds and settings appear in the order people expect."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


@dataclass
class Run:
    """One run directory's evaluations and identity, as the report needs them."""

    path: Path
    explicit: bool  # named on the command line, not found by searching
    seed: int | None = None
    config: dict[str, str] = field(default_factory=dict)
    gin_files: list[str] = field(default_factory=list)
    gin_bindings: list[str] = field(default_factory=list)
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    returns: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def final_return(self) -> float:
        return float(self.returns[-1])

    @property
    def best_return(self) -> float:
        return float(self.returns.max())

    @property
    def last_step(self) -> int:
        """Env steps of the last evaluation; 0 before the first."""
        return int(self.steps[-1]) if len(self.steps) else 0

    @property
    def total_env_steps(self) -> int | None:
        for name in TOTAL_STEPS_BINDINGS:
            value = self.config.get(name, "").replace("_", "")
            if value.isdigit():
                return int(value)
        return None

    @property
    def env(self) -> str | None:
        """The environment id (gymnasium) or game (Atari) from config.gin, quotes removed."""
        for name in ("load_gymnasium.env_id", "load_atari.game"):
            if name in self.config:
                return self.config[name].strip("'\"")
        return None

    @property
    def atari(self) -> bool:
        return "load_atari.game" in self.config

    def finished(self, total_env_steps: int | None = None) -> bool:
        """Evaluated at `total_env_steps` (default: config.gin's), so running it again would
        only report; never where the total is unknown."""
        total = self.total_env_steps if total_env_steps is None else total_env_steps
        return bool(len(self.steps)) and total is not None and self.last_step >= total

    def steps_to(self, threshold: float) -> float:
        """Env steps of the first evaluation at or above `threshold`; inf when none is."""
        reached = np.nonzero(self.returns >= threshold)[0]
        return float(self.steps[reached[0]]) if len(reached) else math.inf

    def grouping_key(self) -> tuple:
        """What must be equal for two runs to be seeds of one setting: config.gin less seeds."""
        if self.config:
            return tuple(sorted((k, v) for k, v in self.config.items() if k not in SEED_BINDINGS))
        if self.gin_files or self.gin_bindings:
            return (
                "run.json",
                tuple(Path(f).stem for f in self.gin_files),
                tuple(sorted(normalize_binding(b) for b in self.non_seed_bindings())),
            )
        return ("directory", str(self.path.parent))

    def non_seed_bindings(self) -> list[str]:
        return [normalize_binding(b) for b in self.gin_bindings if not _is_seed_binding(b)]

    def stems(self) -> str:
        if self.gin_files:
            return "+".join(Path(f).name.removesuffix(".gin") for f in self.gin_files)
        return self.path.parent.name or str(self.path)


def find_run_dirs(paths: Sequence[str | Path]) -> list[tuple[Path, bool]]:
    """(run directory, named explicitly) pairs: arguments that are runs, and runs found below
    the others. Run directories are not searched further (checkpoints live there)."""
    found: list[tuple[Path, bool]] = []
    for arg in paths:
        path = Path(arg)
        if not path.exists():
            raise ReportError(f"{path} does not exist: pass run directories or a sweep directory")
        if not path.is_dir():
            raise ReportError(f"{path} is a file: pass run directories or a sweep directory")
        if holds_run(path):
            found.append((path, True))
            continue
        below = []
        for root, dirs, _ in os.walk(path):
            if holds_run(Path(root)):
                below.append(Path(root))
                dirs[:] = []
            else:
                dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend((run, False) for run in sorted(below, key=natural_key))
    unique: dict[Path, tuple[Path, bool]] = {}  # a run named and also found counts once
    for run, explicit in found:
        first, named = unique.get(run.resolve(), (run, False))
        unique[run.resolve()] = (first, named or explicit)
    if not unique:
        names = ", ".join(str(p) for p in paths)
        raise ReportError(
            f"no run directories found under {names} (a run directory holds metrics.jsonl): "
            "pass run directories or a sweep's output directory"
        )
    return list(unique.values())


def read_evaluations(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(env steps, eval return mean) per evaluation; a torn last line (a writer killed or
    still writing) is skipped, and a repeated step keeps its last row."""
    path = run_dir / "metrics.jsonl"
    by_step: dict[int, float] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict):
                continue
            value, steps = row.get("eval_return_mean"), row.get("env_steps")
            if isinstance(value, int | float) and isinstance(steps, int | float):
                if math.isfinite(value):
                    by_step[int(steps)] = float(value)
    steps = np.array(sorted(by_step), dtype=float)
    return steps, np.array([by_step[int(s)] for s in steps], dtype=float)


def load_run(path: Path, explicit: bool) -> Run:
    run = Run(path=path, explicit=explicit)
    config_path = path / "config.gin"
    if config_path.is_file():
        run.config = parse_config_str(config_path.read_text(encoding="utf-8"))
    info_path = path / "run.json"
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            info = {}
        if isinstance(info, dict):
            run.gin_files = [str(f) for f in info.get("gin_files") or []]
            run.gin_bindings = [str(b) for b in info.get("gin_bindings") or []]
            if isinstance(info.get("seed"), int):
                run.seed = info["seed"]
    if run.seed is None:
        for name in SEED_BINDINGS:
            if run.config.get(name, "").lstrip("-").isdigit():
                run.seed = int(run.config[name])
                break
    run.steps, run.returns = read_evaluations(path)
    return run


def load_runs(paths: Sequence[str | Path], warn: list[str]) -> list[Run]:
    """Runs with evaluations. A run without any is an error when named on the command line
    (it was asked for) and skipped with a warning when found by searching (a sweep still
    starting up); no evaluated run at all is an error."""
    runs, waiting = [], []
    for path, explicit in find_run_dirs(paths):
        run = load_run(path, explicit)
        if len(run.steps):
            runs.append(run)
        elif explicit:
            raise ReportError(
                f"run {path} has no evaluations yet: wait for its first eval or remove it"
            )
        else:
            waiting.append(path)
    for path in waiting:
        warn.append(f"skipped run {path}: no evaluations yet (wait for its first eval)")
    if not runs:
        raise ReportError(
            f"run {waiting[0]} has no evaluations yet, nor has any other of the "
            f"{len(waiting)} runs found: wait for their first evals"
        )
    return runs


def sample_std(values: np.ndarray) -> float:
    """Across seeds, with n - 1 (seeds are a sample); nan for a single seed."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
