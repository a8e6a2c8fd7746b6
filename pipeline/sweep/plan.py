"""A sweep as runs: built from the flags (checked, nothing written), and sweep.json."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.analysis import aggregate as aggregation
from pipeline.analysis.runs import load_run
from pipeline.sweep.gin_check import check_gin
from pipeline.sweep.grid import (
    SweepError,
    binding_name,
    default_sweep_dir,
    expand,
    normalize_gin_file,
    parse_grid,
    parse_seeds,
    setting_slug,
    train_command,
)

SWEEP_FILE = aggregation.SWEEP_FILE


@dataclass
class Run:
    """One training run of a sweep, as written to sweep.json."""

    setting: dict[str, str]
    slug: str
    seed: int
    run_dir: str  # relative to the sweep directory
    root_dir: str  # absolute, as passed to the trainer
    log: str  # the trainer's stdout and stderr, appended attempt after attempt
    command: list[str]
    total_env_steps: int | None

    def finished(self) -> bool:
        """The run evaluated at its last step, so running it again would only report."""
        return load_run(Path(self.root_dir), explicit=True).finished(self.total_env_steps)


@dataclass
class Sweep:
    gin_files: list[str]
    gin_bindings: list[str]
    grid: dict[str, list[str]]
    seeds: list[int]
    sweep_dir: Path
    seed_bindings: list[str]
    runs: list[Run]

    def to_json(self) -> dict[str, Any]:
        return {
            "gin_files": self.gin_files,
            "gin_bindings": self.gin_bindings,
            "grid": self.grid,
            "seeds": self.seeds,
            "sweep_dir": str(self.sweep_dir),
            "runs": [asdict(run) for run in self.runs],
        }


def build_sweep(
    gin_files: Sequence[str],
    gin_bindings: Sequence[str],
    grid_specs: Sequence[str],
    seeds_text: str,
    sweep_dir: str | None,
) -> Sweep:
    """Checks the flags and expands them into runs; writes nothing."""
    if not gin_files:
        raise SweepError("no --gin_file: give one, e.g. --gin_file=dqn_cartpole.gin")
    grid = parse_grid(grid_specs)
    seeds = parse_seeds(seeds_text) if seeds_text.strip() else []
    if not seeds:
        raise SweepError("no seeds: give --seeds=0,1,2 or --seeds=0-4")
    for binding in gin_bindings:
        if "=" not in binding:
            raise SweepError(f"malformed --gin_bindings={binding!r}: write name=value")
    fixed_names = {binding_name(b) for b in gin_bindings}
    for name in [*grid, *fixed_names]:
        if name.rsplit(".", 1)[-1] == "seed":
            raise SweepError(f"{name} is set by --seeds: remove it from --grid/--gin_bindings")
    for name in grid:
        if name in fixed_names:
            raise SweepError(f"{name} is both in --grid and --gin_bindings: keep one")
    files = [normalize_gin_file(name) for name in gin_files]
    settings = expand(grid)
    checked = check_gin(files, gin_bindings, settings)
    root = Path(sweep_dir) if sweep_dir else default_sweep_dir(gin_files, gin_bindings)
    root = root.resolve()
    if root.exists() and not root.is_dir():
        raise SweepError(f"--sweep_dir {root} is a file: choose a directory")
    runs, seed_bindings = [], []
    for setting, info in zip(settings, checked, strict=True):
        slug = setting_slug(setting)
        seed_bindings.append(info["seed_binding"])
        for seed in seeds:
            run_dir = f"{slug}/s{seed}"
            bindings = [
                *gin_bindings,
                *(f"{k}={v}" for k, v in setting.items()),
                f"{info['seed_binding']}={seed}",
            ]
            runs.append(
                Run(
                    setting=setting,
                    slug=slug,
                    seed=seed,
                    run_dir=run_dir,
                    root_dir=str(root / run_dir),
                    log=str(root / slug / f"s{seed}.log"),
                    command=train_command(files, bindings, root / run_dir),
                    total_env_steps=info["total_env_steps"],
                )
            )
    return Sweep(files, list(gin_bindings), grid, seeds, root, seed_bindings, runs)


def write_sweep_file(sweep: Sweep) -> None:
    """Writes sweep.json atomically, refusing a directory that holds another sweep."""
    path = sweep.sweep_dir / SWEEP_FILE
    if sweep.sweep_dir.is_dir() and not path.is_file() and any(sweep.sweep_dir.iterdir()):
        raise SweepError(
            f"--sweep_dir {sweep.sweep_dir} is not empty and holds no sweep (no {SWEEP_FILE}): "
            "choose a new or empty directory"
        )
    if path.is_file():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            before = {}
        for key in ("gin_files", "gin_bindings"):
            if key in before and before[key] != getattr(sweep, key):
                raise SweepError(
                    f"--sweep_dir {sweep.sweep_dir} holds a sweep with other {key} "
                    f"({before[key]} there, {getattr(sweep, key)} now): choose another --sweep_dir"
                )
    try:
        sweep.sweep_dir.mkdir(parents=True, exist_ok=True)
        aggregation.atomic_write_text(path, json.dumps(sweep.to_json(), indent=2) + "\n")
    except OSError as error:
        raise SweepError(
            f"cannot write --sweep_dir {sweep.sweep_dir} ({error.strerror}): choose a writable path"
        ) from None


def last_line(path: Path, prefix: str = "") -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    chosen = [line for line in lines if line.startswith(prefix)] if prefix else lines
    return (chosen or lines or [""])[-1].strip()


def print_runs(sweep: Sweep) -> None:
    for index, run in enumerate(sweep.runs, 1):
        print(f"[{index}/{len(sweep.runs)}] {run.run_dir}")
        print(f"  root_dir: {run.root_dir}")
        print(f"  command:  {shlex.join(run.command)}")
