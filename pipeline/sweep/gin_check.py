"""The sweep's gin settings, parsed strictly in a child process before anything is written.

The child imports TensorFlow and every gin name (`config.parse`), as `pipeline.train` does;
the sweep's own process need not."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from pipeline.sweep.grid import SweepError, child_env, setting_slug

_CHECK_MARK = "@@sweep-check@@ "


def check_gin(
    gin_files: Sequence[str], gin_bindings: Sequence[str], settings: Sequence[dict[str, str]]
) -> list[dict[str, Any]]:
    """Parses every setting strictly in a child process; returns each setting's seed binding
    name, total_env_steps and env loader's gin name. The child imports TensorFlow; this
    process need not."""
    request = {
        "gin_files": list(gin_files),
        "gin_bindings": list(gin_bindings),
        "settings": [[f"{k}={v}" for k, v in s.items()] for s in settings],
    }
    code = "from pipeline.sweep.gin_check import check_in_child; check_in_child()"
    try:
        child = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=600,
            env=child_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SweepError(
            f"could not check the gin settings ({error}): try pipeline.train"
        ) from None
    marked = [line for line in child.stdout.splitlines() if line.startswith(_CHECK_MARK)]
    if not marked:
        tail = (child.stderr.strip().splitlines() or ["no output"])[-1]
        raise SweepError(f"could not check the gin settings (exit {child.returncode}): {tail}")
    answer = json.loads(marked[-1][len(_CHECK_MARK) :])
    if "error" in answer:
        where = answer.get("setting")
        shown = setting_slug(settings[where]) if where is not None and settings[where] else ""
        suffix = f" (in the grid setting {shown})" if shown else ""
        raise SweepError(answer["error"] + suffix)
    return answer["settings"]


def check_in_child() -> None:
    """Runs in the child of `check_gin`: strict gin parsing with the trainer's registry."""
    import gin

    from pipeline import config
    from pipeline.errors import UserError

    request = json.loads(sys.stdin.read())

    def parse(bindings: list[str]) -> None:
        gin.clear_config()
        config.parse(request["gin_files"], bindings)

    def reply(answer: dict[str, Any]) -> None:
        print(_CHECK_MARK + json.dumps(answer), flush=True)

    try:
        parse(request["gin_bindings"])
    except UserError as error:
        return reply({"error": str(error).splitlines()[0]})
    answers = []
    for index, setting in enumerate(request["settings"]):
        try:
            parse([*request["gin_bindings"], *setting])
            run = config.run_settings()
            parse([*request["gin_bindings"], *setting, f"{run.binding('seed')}=0"])
        except UserError as error:
            message = str(error).splitlines()[0]
            for binding in setting:  # name the grid value at fault, if one alone fails
                try:
                    parse([*request["gin_bindings"], binding])
                except UserError:
                    return reply({"error": f"{message} (from --grid value {binding})"})
            return reply({"error": message, "setting": index})
        loader = getattr(config.query(run.binding("env_loader")), "configurable", None)
        answers.append(
            {
                "seed_binding": run.binding("seed"),
                "total_env_steps": run.total_env_steps,
                "env_loader": getattr(loader, "name", None),
            }
        )
    reply({"settings": answers})
