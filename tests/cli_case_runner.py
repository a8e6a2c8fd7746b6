"""Runs many invocations of one CLI in this process, one TensorFlow start-up for all.

    python -m tests.cli_case_runner pipeline.train cases.json results.json   (from the repository)

`cases.json`: a list of {"args": [...], "cwd": "..."}. Each case runs the CLI's `main` as
its `run()` does (flag parsing included) with file descriptors 1 and 2 redirected, so
everything a user would see is captured: absl logs, gin, TensorFlow's C++ lines. A Python
exception that escapes the CLI is recorded with its traceback, as a user would see it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path


@contextlib.contextmanager
def _captured_fds():
    """Points fds 1 and 2 at temporary files; yields a function that reads them back."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    files = {fd: tempfile.TemporaryFile(mode="w+b") for fd in (1, 2)}
    for fd, file in files.items():
        os.dup2(file.fileno(), fd)
    texts: dict[int, str] = {}
    try:
        yield texts
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, file in files.items():
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
            file.seek(0)
            texts[fd] = file.read().decode("utf-8", "replace")
            file.close()


PACKAGE_MAINS = {  # `python -m` runs these
    "pipeline.sweep": "pipeline.sweep.__main__",
    "pipeline.atari100k": "pipeline.atari100k.__main__",
}


def _reset() -> None:
    import gin
    from absl import flags

    gin.clear_config()
    flags.FLAGS.unparse_flags()


def run_case(module, args: list[str], cwd: str) -> dict:
    _reset()
    os.chdir(cwd)
    sys.argv = [module.__name__, *args]
    code: int | None = 0
    escaped = ""
    with _captured_fds() as texts:
        try:
            from pipeline import cli

            cli.run(module.main)
        except SystemExit as stop:
            code = _exit_code(stop)
        except BaseException:  # noqa: BLE001 - what a user would see as a traceback
            escaped = traceback.format_exc()
            code = None
    return {"code": code, "stdout": texts[1], "stderr": texts[2] + escaped}


def _exit_code(stop: SystemExit) -> int:
    return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)


def import_cli(module_name: str):
    """(module, None), or (None, the result of every case) where the import itself exits: a
    mode this stack cannot run (the distributed mode without Reverb) refuses on import."""
    with _captured_fds() as texts:
        try:
            return importlib.import_module(PACKAGE_MAINS.get(module_name, module_name)), None
        except SystemExit as stop:
            code = _exit_code(stop)
    return None, {"code": code, "stdout": texts[1], "stderr": texts[2]}


def main() -> None:
    module_name, cases_file, results_file = sys.argv[1:4]
    cases = json.loads(Path(cases_file).read_text())
    module, refused = import_cli(module_name)
    if module is None:
        Path(results_file).write_text(json.dumps([refused] * len(cases)))
        return
    if module_name in PACKAGE_MAINS:
        module.define_flags()  # package CLIs define their flags only when run
    results = [run_case(module, case["args"], case["cwd"]) for case in cases]
    Path(results_file).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
