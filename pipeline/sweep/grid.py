"""What a sweep's runs are called and run: the grid and seed flags parsed, each setting's
slug, the trainer's command line and the environment it starts in. No TensorFlow here: sweeps
plan and submit from login nodes."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_SLUG = 80
_NAME = re.compile(r"^[A-Za-z_][\w./]*\.[A-Za-z_]\w*$")
_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")


class SweepError(Exception):
    """A mistake in the sweep's flags: one line, exit status 2, nothing written."""


def split_values(text: str) -> list[str]:
    """Splits `v1,v2,...` at top-level commas, so `(64,64),(32,)` is two values."""
    values: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth < 0:
                raise SweepError(f"unbalanced {char!r} in {text!r}")
        elif char == "," and depth == 0:
            values.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    if quote or depth:
        raise SweepError(f"unclosed quote or bracket in {text!r}")
    values.append("".join(current).strip())
    return values


def binding_name(binding: str) -> str:
    return binding.split("=", 1)[0].strip()


def parse_grid(specs: Sequence[str]) -> dict[str, list[str]]:
    """`--grid='name=v1,v2'` flags as {name: values}, in the order given."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, values_text = spec.partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name):
            raise SweepError(
                f"malformed --grid={spec!r}: write --grid='Configurable.parameter=v1,v2', "
                "e.g. --grid='train.batch_size=32,64'"
            )
        try:
            values = split_values(values_text)
        except SweepError as error:
            raise SweepError(f"malformed --grid={spec!r}: {error}") from None
        if any(not value for value in values):
            raise SweepError(
                f"empty value in --grid={spec!r}: list values separated by commas, "
                "e.g. --grid='train.batch_size=32,64'"
            )
        if len(set(values)) != len(values):
            raise SweepError(f"repeated value in --grid={spec!r}: list each value once")
        if name in grid:
            raise SweepError(f"--grid names {name} twice: give all its values in one --grid")
        grid[name] = values
    return grid


def parse_seeds(text: str) -> list[int]:
    """`0,1,2`, `0-4` or a mix (`0-2,7`), in order, each once."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise SweepError(
                f"bad --seeds={text!r}: give seeds such as --seeds=0,1,2 or --seeds=0-4"
            )
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low:
            raise SweepError(f"bad --seeds={text!r}: the range {part} is empty; write {high}-{low}")
        seeds.extend(s for s in range(low, high + 1) if s not in seeds)
    return seeds


def expand(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """The cartesian product of the grid, first name slowest; one empty setting for no grid."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def _short_names(names: Sequence[str]) -> dict[str, str]:
    """`train.batch_size` -> `batch_size`, unless two names would then look the same."""
    short = {name: name.rsplit(".", 1)[-1] for name in names}
    if len(set(short.values())) < len(short):
        return {name: name for name in names}
    return short


def setting_slug(setting: dict[str, str]) -> str:
    """A readable, stable directory name for a setting: `batch_size=32,learning_rate=1e-3`.

    Characters a path should not hold are replaced, and then (or when the name is long) a
    hash of the exact setting is appended, so two settings never share a directory.
    """
    if not setting:
        return "default"
    short = _short_names(list(setting))
    parts, lossy = [], False
    for name, value in setting.items():
        shown = value.strip().strip("'\"").removeprefix("@")
        safe = _SAFE.sub("_", shown).strip("_")
        lossy = lossy or safe != shown or not safe
        parts.append(f"{short[name]}={safe}")
    slug = ",".join(parts)
    if lossy or len(slug) > MAX_SLUG:
        exact = "\n".join(f"{name}={value}" for name, value in sorted(setting.items()))
        digest = hashlib.sha1(exact.encode()).hexdigest()[:8]
        slug = f"{slug[: MAX_SLUG - 10].rstrip(',=_')}-{digest}"
    return slug


def default_sweep_dir(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> Path:
    """sweeps/<gin stems>[-<hash of fixed bindings>], like runs/ for single runs."""
    stems = "+".join(Path(f).name.removesuffix(".gin") for f in gin_files) or "default"
    if gin_bindings:
        stems += "-" + hashlib.sha1("\n".join(gin_bindings).encode()).hexdigest()[:8]
    return Path("sweeps") / stems


def normalize_gin_file(name: str) -> str:
    """A gin file that exists from here becomes absolute (runs may start elsewhere); a bare
    name stays bare, for the trainer to find in gin/ as usual."""
    for candidate in (Path(name), Path(name + ".gin")):
        if candidate.is_file():
            return str(candidate.resolve())
    return name


def train_command(gin_files: Sequence[str], bindings: Sequence[str], root_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline.train",
        *(f"--gin_file={name}" for name in gin_files),
        *(f"--gin_bindings={binding}" for binding in bindings),
        f"--root_dir={root_dir}",
    ]


def child_env() -> dict[str, str]:
    """This process's environment, with the repository importable from any working directory."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env
