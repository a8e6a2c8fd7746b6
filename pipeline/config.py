"""Gin handling: finding gin files by bare name, strict parsing, and one-line errors.

Strict means `skip_unknown=False`: a misspelled configurable or parameter fails at parse
time, before any environment, network or run directory exists.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
from pathlib import Path

import gin

from envs.errors import UserError

REPO_GIN_DIR = Path(__file__).resolve().parents[1] / "gin"
_UNKNOWN_CONFIGURABLE = re.compile(r"No configurable matching '([^']+)'")
_UNKNOWN_PARAMETER = re.compile(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'")


def gin_search_dirs() -> list[Path]:
    """The repository's gin/ folder, then any folders in PIPELINE_GIN_PATH (os.pathsep list)."""
    extra = [Path(p) for p in os.environ.get("PIPELINE_GIN_PATH", "").split(os.pathsep) if p]
    return [REPO_GIN_DIR, *extra]


def available_gin_files() -> list[str]:
    return sorted({p.name for d in gin_search_dirs() if d.is_dir() for p in d.glob("*.gin")})


def resolve_gin_file(name: str) -> Path:
    """A path that exists wins; a bare name is looked up in the gin search folders."""
    candidates = [Path(name)]
    if not name.endswith(".gin"):
        candidates.append(Path(name + ".gin"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    if os.sep not in name:
        for directory in gin_search_dirs():
            for candidate in candidates:
                if (directory / candidate).is_file():
                    return (directory / candidate).resolve()
    known = available_gin_files()
    close = difflib.get_close_matches(Path(name).name, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"available: {', '.join(known)}"
    raise UserError(f"gin file {name!r} not found (looked in . and {REPO_GIN_DIR}): {hint}")


def _registered_names() -> list[str]:
    try:
        return sorted({selector.split(".")[-1] for selector, _ in gin.config._REGISTRY.items()})
    except AttributeError:  # gin internals moved; suggestions are a nicety
        return []


def _parameters_of(configurable_name: str) -> list[str]:
    try:
        wrapped = gin.config._REGISTRY.get_match(configurable_name).wrapped
    except (AttributeError, KeyError, ValueError):
        return []
    target = wrapped.__init__ if inspect.isclass(wrapped) else wrapped
    try:
        return [p for p in inspect.signature(target).parameters if p != "self"]
    except (TypeError, ValueError):
        return []


def explain_gin_error(error: Exception) -> str:
    """Turns gin's multi-line message into one line with a suggestion."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    if match := _UNKNOWN_PARAMETER.search(first_line):
        configurable, parameter = match.groups()
        close = difflib.get_close_matches(parameter, _parameters_of(configurable), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "check the spelling"
        return f"gin: unknown parameter {configurable}.{parameter}: {hint}"
    if match := _UNKNOWN_CONFIGURABLE.search(first_line):
        name = match.group(1)
        close = difflib.get_close_matches(name.split(".")[-1], _registered_names(), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "check the spelling"
        return f"gin: unknown configurable {name!r}: {hint}"
    return f"gin: {first_line}"


def parse(gin_files: list[str], gin_bindings: list[str]) -> list[Path]:
    """Parses files then bindings strictly; returns the resolved file paths."""
    paths = [resolve_gin_file(name) for name in gin_files]
    for directory in gin_search_dirs():
        gin.add_config_file_search_path(str(directory))
    try:
        gin.parse_config_files_and_bindings(
            [str(p) for p in paths], gin_bindings, skip_unknown=False
        )
    except (ValueError, KeyError, SyntaxError, OSError, TypeError) as error:
        raise UserError(explain_gin_error(error)) from None
    return paths


def query(name: str, default=None):
    """The bound value of `Configurable.param`, or `default` when nothing binds it."""
    try:
        return gin.query_parameter(name)
    except ValueError:
        return default
