"""File helpers with no TensorFlow import, shared by the trainer and the sweep tools.

`pipeline.sweep` and `pipeline.analysis.aggregate` stay free of TensorFlow (they run on login nodes
and in small Slurm jobs), so the pieces they share with the trainer live here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    """Writes a temporary sibling then renames, so readers never see half a file.

    The temporary name carries the pid, so two writers of one file never share it.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_metrics_rows(run_dir: Path) -> list[dict[str, Any]]:
    """A run's metrics.jsonl rows; a torn last line (a killed writer) is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


RUN_MARKERS = ("run.json", "config.gin", "metrics.jsonl")  # any one makes a run directory


def holds_run(root_dir: Path) -> bool:
    """Whether `root_dir` holds a run (the trainer resumes it; the report reads it)."""
    return any((Path(root_dir) / marker).is_file() for marker in RUN_MARKERS)


def parse_config_str(text: str) -> dict[str, str]:
    """`name = value` bindings of a gin config string (as gin writes it) by name."""
    bindings: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and name is not None:  # a multi-line value continues
            bindings[name] += "\n" + line.strip()
        elif " = " in line:
            name, value = line.split(" = ", 1)
            bindings[name.strip()] = value.strip()
    return bindings
