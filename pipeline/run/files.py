"""File helpers with no TensorFlow import, shared by the trainer and the sweep tools.

`pipeline.sweep` and `pipeline.analysis.aggregate` stay free of TensorFlow (they run on login nodes
and in small Slurm jobs), so the pieces they share with the trainer live here.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any


def fsync_path(path: Path) -> None:
    """fsync of a file (its data) or of a directory (its entries: names created, renamed or
    removed in it). A directory whose filesystem cannot sync one (EINVAL) is passed over."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno != errno.EINVAL or not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync of every file and folder under `root`, and of `root`: a folder someone else wrote
    (a SavedModel) made durable before it is renamed into place."""
    for folder, _, names in os.walk(root):
        for name in names:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))


def replace_durably(tmp: Path, path: Path) -> None:
    """`os.replace(tmp, path)`, then fsync of the directory that holds `path` (and of `tmp`'s
    if another), so that the rename itself survives a power loss or a kernel crash.

    `tmp`'s contents must already be durable (fsynced, see `fsync_path` and `fsync_tree`):
    a rename made durable over unsynced data can leave an empty file after a crash.
    """
    os.replace(tmp, path)
    fsync_path(Path(path).parent)
    if os.path.abspath(Path(tmp).parent) != os.path.abspath(Path(path).parent):
        fsync_path(Path(tmp).parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Writes a temporary sibling, fsyncs it, renames it and fsyncs the directory, so readers
    never see half a file and a crash leaves the old file or the new one, never neither.

    The temporary name carries the pid, so two writers of one file never share it.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    replace_durably(tmp, path)


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


TRAINER_MARKERS = ("run.json", "config.gin")  # written by the trainer before it trains
RUN_MARKERS = (*TRAINER_MARKERS, "metrics.jsonl")  # any one makes a run directory


def holds_run(root_dir: Path) -> bool:
    """Whether `root_dir` holds a run the report can read (maybe only its metrics)."""
    return any((Path(root_dir) / marker).is_file() for marker in RUN_MARKERS)


def holds_own_run(root_dir: Path) -> bool:
    """Whether `root_dir` holds a run the trainer wrote (its config.gin or run.json): the only
    directories it resumes, and so the only non-empty ones it writes into."""
    return any((Path(root_dir) / marker).is_file() for marker in TRAINER_MARKERS)


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
