"""Gin handling: finding gin files by bare name, strict parsing, the setting checks, a run's
settings, and one-line errors.

Strict means `skip_unknown=False`: a misspelled configurable or parameter fails at parse
time, before any environment, network or run directory exists. Each file and each binding is
parsed on its own, so an error names the one at fault; then `pipeline.validation` checks
every bound value.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import logging
import os
import re
import tokenize
from pathlib import Path

import gin

from pipeline import validation
from pipeline.errors import UserError
from pipeline.run_settings import RunSettings

REPO_GIN_DIR = Path(__file__).resolve().parents[1] / "gin"
_UNKNOWN_CONFIGURABLE = re.compile(r"No configurable matching '([^']+)'")
_UNQUOTED = re.compile(r"malformed node or string.*ast\.Name")
_UNKNOWN_PARAMETER = re.compile(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'")


class _QuietIncludeLookups(logging.Filter):
    """Drops gin's resource lookups: an `include` of a bare name logs 'Path not found'
    (an ERROR) for every folder it tries before the search path finds the file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.endswith(os.path.join("gin", "resource_reader.py"))


logging.getLogger().addFilter(_QuietIncludeLookups())


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


def explain_gin_error(error: Exception, binding: str | None = None) -> str:
    """Turns gin's multi-line message into one line with a suggestion."""
    if isinstance(error, tokenize.TokenError):
        return "unbalanced brackets or quotes: close every (, [, { and string"
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    if _UNQUOTED.search(first_line):
        return _unquoted_hint(binding)
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


def _unquoted_hint(binding: str | None) -> str:
    """A bare word where a value belongs: almost always a string without its quotes."""
    if binding and "=" in binding:
        name, value = (part.strip() for part in binding.split("=", 1))
        return f"the value {value} is not a Python literal: quote strings, e.g. {name}='{value}'"
    return "a value is not a Python literal: quote strings ('CartPole-v1'), refer with @Name"


def parse(gin_files: list[str], gin_bindings: list[str]) -> list[Path]:
    """Parses files then bindings strictly and checks every bound setting.

    Returns the resolved file paths. Each problem is one `UserError` line naming the file
    (and line) or the binding it comes from.
    """
    importlib.import_module("pipeline.gin_names")  # TensorFlow: here, not when config loads
    paths = [resolve_gin_file(name) for name in gin_files]
    for directory in gin_search_dirs():
        gin.add_config_file_search_path(str(directory))
    for path in paths:
        _check_readable_text(path)
        with _explained(f"in {path.name}"):
            gin.parse_config_file(str(path), skip_unknown=False)
    for binding in gin_bindings:
        with _explained(f"in binding {binding!r}", binding):
            gin.parse_config(binding, skip_unknown=False)
    with _explained("gin"):
        gin.finalize()
    validation.check_bound_settings()
    return paths


_GIN_ERRORS = (ValueError, KeyError, SyntaxError, OSError, TypeError, tokenize.TokenError)


@contextlib.contextmanager
def _explained(where: str, binding: str | None = None):
    """Turns gin's parse errors into one line that says where and what to fix."""
    try:
        yield
    except UserError:
        raise
    except _GIN_ERRORS as error:
        raise UserError(f"{where}: {explain_gin_error(error, binding)}") from None


def _check_readable_text(path: Path) -> None:
    try:
        path.read_bytes().decode("utf-8")
    except OSError as error:
        raise UserError(
            f"gin file {path} cannot be read ({error.strerror}): fix its "
            "permissions or pass another file"
        ) from None
    except UnicodeDecodeError:
        raise UserError(
            f"gin file {path} is not text (not UTF-8): pass a gin file, e.g. one from "
            f"{REPO_GIN_DIR}"
        ) from None


_IN_CALL = re.compile(r"In call to configurable '([^']+)'")


def explain_call_error(error: BaseException) -> str | None:
    """One line for an error raised while gin called a configurable; None for other errors.

    Gin appends "In call to configurable 'X'" for every configurable on the way out; the
    first one named is where the error happened.
    """
    text = str(error)
    match = _IN_CALL.search(text)
    if match is None:
        return None
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    if first_line.startswith("In call to configurable"):
        first_line = ""
    return (
        f"{match.group(1)} failed with {type(error).__name__}: {first_line or 'no message'}: "
        f"check the {match.group(1)}.* settings"
    )


def check_bindings_used(gin_bindings: list[str]) -> None:
    """Refuses a command-line binding whose configurable the run never built.

    Call after building: gin records each configurable it calls. A binding for a part the
    gin files do not use (`Adam.learning_rate` where `train.optimizer = @TorchAdam`) would
    otherwise be accepted and change nothing.
    """
    try:
        called = {key for key, _ in gin.config._OPERATIVE_CONFIG.items()}
    except AttributeError:  # gin internals moved: skip the check rather than guess
        return
    for binding in gin_bindings:
        target = binding.split("=", 1)[0].strip()
        *scopes, name = target.split("/")
        configurable = name.rsplit(".", 1)[0] if "." in name else name
        try:
            selector = gin.config._REGISTRY.get_match(configurable).selector
        except (AttributeError, KeyError, ValueError):
            continue
        if ("/".join(scopes), selector) not in called:
            raise UserError(
                f"--gin_bindings={binding!r} would change nothing: this run never builds a "
                f"{configurable}: bind the part its gin files use instead, or drop the binding"
            )


def run_settings() -> RunSettings:
    """The parsed config's loop, with its seed, budget and eval size (bound, else default)."""
    reference = query("run_experiment.loop")
    loop = getattr(getattr(reference, "configurable", None), "name", None) or "train"

    def value(parameter: str, default=None):
        found = validation.effective_value(f"{loop}.{parameter}")
        return default if found is None else found

    return RunSettings(
        loop=loop,
        seed=value("seed", 0),
        total_env_steps=value("total_env_steps"),
        eval_episodes=value("eval_episodes"),
    )


def query(name: str, default=None):
    """The bound value of `Configurable.param`, or `default` when nothing binds it."""
    try:
        return gin.query_parameter(name)
    except ValueError:
        return default
