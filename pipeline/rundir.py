"""The run directory contract: where a run lives, what identifies it, and safe file writes."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from envs.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_MARKERS = ("run.json", "config.gin", "metrics.jsonl")
VERSIONED_PACKAGES = ("tensorflow", "tf-agents", "gymnasium", "ale-py", "gin-config", "numpy")


def default_root_dir(gin_files: Sequence[str], gin_bindings: Sequence[str], seed: int) -> Path:
    """runs/<gin stems>[-<hash of bindings>]-s<seed>: stable, never a timestamp."""
    stems = "+".join(Path(f).name.removesuffix(".gin") for f in gin_files) or "default"
    name = stems
    if gin_bindings:
        digest = hashlib.sha1("\n".join(gin_bindings).encode()).hexdigest()[:8]
        name += f"-{digest}"
    return Path("runs") / f"{name}-s{seed}"


def atomic_write_text(path: Path, text: str) -> None:
    """Writes to a temporary sibling then renames, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def prepare(root_dir: Path) -> Path:
    """Creates the run directory, refusing one that already holds a run."""
    root_dir = Path(root_dir)
    if root_dir.exists() and not root_dir.is_dir():
        raise UserError(f"--root_dir {root_dir} is a file, not a directory: choose another path")
    existing = [m for m in RUN_MARKERS if (root_dir / m).exists()]
    if existing:
        raise UserError(
            f"--root_dir {root_dir} already holds a run ({', '.join(existing)}); resuming is not "
            "supported yet: choose a new --root_dir or remove the old one"
        )
    try:
        root_dir.mkdir(parents=True, exist_ok=True)
        probe = root_dir / ".write_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserError(
            f"cannot write --root_dir {root_dir} ({error.strerror}): choose a writable path"
        ) from None
    return root_dir


def _git_revision() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        return {
            "revision": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain")),
        }
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def run_info(seed: int, gin_files: Sequence[Path], gin_bindings: Sequence[str]) -> dict[str, Any]:
    slurm = {
        k: v
        for k, v in os.environ.items()
        if k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME")
    }
    return {
        "command": [sys.executable, *sys.argv],
        "cwd": os.getcwd(),
        "seed": seed,
        "gin_files": [str(p) for p in gin_files],
        "gin_bindings": list(gin_bindings),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "slurm": slurm,
        "git": _git_revision(),
        "versions": _versions(),
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
