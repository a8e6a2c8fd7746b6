"""The run directory contract: where a run lives, what identifies it, and safe file writes."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gin

from pipeline.errors import UserError
from pipeline.run.files import (
    atomic_write_text,  # noqa: F401 (callers use rundir.atomic_write_text)
    holds_own_run,
    parse_config_str,
)
from pipeline.run.versions import package_versions
from pipeline.run_settings import RESUMABLE_CHANGES

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_root_dir(gin_files: Sequence[str], gin_bindings: Sequence[str], seed: int) -> Path:
    """runs/<gin stems>[-<hash of bindings>]-s<seed>: stable, never a timestamp."""
    stems = "+".join(Path(f).name.removesuffix(".gin") for f in gin_files) or "default"
    name = stems
    if gin_bindings:
        digest = hashlib.sha1("\n".join(gin_bindings).encode()).hexdigest()[:8]
        name += f"-{digest}"
    return Path("runs") / f"{name}-s{seed}"


def prepare(root_dir: Path) -> Path:
    """Creates the run directory (or reuses it, to resume) and checks it is writable."""
    root_dir = Path(root_dir)
    if root_dir.exists() and not root_dir.is_dir():
        raise UserError(f"--root_dir {root_dir} is a file, not a directory: choose another path")
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


# What a start leaves before it writes config.gin and run.json (killed in between).
START_LEFTOVERS = {".lock", ".write_probe"}
# Folders the pipeline prunes (old checkpoints, exports, cut-back event files, Reverb's).
PRUNED_FOLDERS = ("checkpoints", "policies", "train", "eval", "reverb")


def check_writable_run(root_dir: Path) -> None:
    """Refuses a --root_dir that is not the pipeline's to write into, before anything is written.

    A fresh run takes a new or empty directory only: an existing one that holds files but no
    run of ours (a TensorBoard folder, another tool's `train_eval` output with the same
    `train/`, `eval/`, `policies/` names) is someone's data. And the folders the pipeline
    prunes must stay inside the run: a link out of it would make the pruning delete there.
    """
    root_dir = Path(root_dir)
    if not root_dir.is_dir():
        return
    if not holds_own_run(root_dir):
        others = sorted(p.name for p in root_dir.iterdir() if p.name not in START_LEFTOVERS)
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise UserError(
                f"--root_dir {root_dir} is not empty and holds no run (no config.gin or "
                f"run.json; it has {shown}): choose a new or empty directory"
            )
    inside = root_dir.resolve()
    for name in PRUNED_FOLDERS:
        path = root_dir / name
        if path.is_symlink() and not path.resolve().is_relative_to(inside):
            raise UserError(
                f"--root_dir {root_dir}: {name} is a link to {path.resolve()}, outside the run "
                "directory, and the pipeline deletes old files in it: replace the link by a "
                "folder, or use the target's run directory"
            )


def check_same_settings(root_dir: Path, config_text: str) -> None:
    """Refuses to resume a run whose config.gin differs from this command's settings."""
    path = Path(root_dir) / "config.gin"
    if not path.exists():
        return
    before, now = parse_config_str(path.read_text()), parse_config_str(config_text)
    diffs = [
        f"{name} = {before.get(name, '(unset)')} in the run, {now.get(name, '(unset)')} now"
        for name in sorted(set(before) | set(now))
        if before.get(name) != now.get(name) and name not in RESUMABLE_CHANGES
    ]
    if diffs:
        raise UserError(
            f"--root_dir {root_dir} holds a run with other settings ({'; '.join(diffs)}): "
            "resume it with its own settings, or choose a new --root_dir"
        )


# flock's answers when another process holds the lock; anything else is the filesystem's.
HELD_ELSEWHERE = {errno.EWOULDBLOCK, errno.EAGAIN}
SHARED_FS_HELP = "docs/run-directory.md, 'Run directories on shared filesystems'"


class RunLock:
    """One process per run directory, through `flock` on `<root_dir>/.lock`.

    The kernel drops the lock when its process dies, however it dies, so a killed run never
    leaves the directory stuck. The file holds the owner's pid and host for the message.
    Only EWOULDBLOCK means another holder: a filesystem that cannot lock (Lustre `noflock`:
    ENOSYS; NFS without a lock daemon: ENOLCK) is named as such, and `--no_lock`
    (`enabled=False`) runs without the lock, with a warning, for users who know they are alone.
    """

    def __init__(self, root_dir: Path, enabled: bool = True):
        self.path = Path(root_dir) / ".lock"
        self.enabled = enabled
        self._file = None

    def acquire(self) -> RunLock:
        """Takes the lock, or raises a one-line UserError saying why it cannot."""
        if not self.enabled:
            print(
                f"warning: --no_lock: {self.path.parent} is not locked; two processes started "
                "on it would both write it (and corrupt it): start one at a time",
                file=sys.stderr,
                flush=True,
            )
            return self
        try:
            f = open(self.path, "a+", encoding="utf-8")
        except OSError as error:
            raise UserError(
                f"cannot open the lock file {self.path} ({error.strerror}): fix its permissions, "
                "or choose another --root_dir"
            ) from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in HELD_ELSEWHERE:
                f.seek(0)
                owner = f.read().strip() or "another process"
                f.close()
                raise UserError(
                    f"--root_dir {self.path.parent} is in use by {owner}: wait for it to finish "
                    "(or stop it), or choose another --root_dir"
                ) from None
            f.close()
            name = errno.errorcode.get(error.errno, str(error.errno))
            raise UserError(
                f"cannot lock --root_dir {self.path.parent}: flock on {self.path} failed "
                f"({error.strerror}, {name}), so this filesystem cannot keep two processes out "
                f"of one run (NFS needs its lock daemon; see {SHARED_FS_HELP}): choose a "
                "--root_dir on a filesystem with locks, or pass --no_lock and start one process "
                "at a time"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


RESULTS_DIR = "data/"  # results and records, never code: untracked files there are outputs


def _git_revision(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The checkout's commit, and whether the code differs from it: changed tracked files, or
    untracked files outside data/. The bench archives finished seeds' records under data/;
    counting those would mark its own later seeds as run from uncommitted code."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        changes = git("status", "--porcelain").splitlines()  # "XY path"; untracked: "?? path"
        return {
            "revision": git("rev-parse", "HEAD") or None,
            "dirty": any(not line.startswith(f"?? {RESULTS_DIR}") for line in changes),
        }
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}


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
        "versions": package_versions(),
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def write_operative_config(root_dir: Path) -> None:
    """operative_config.gin: every setting the run used, once all configurables are called."""
    atomic_write_text(root_dir / "operative_config.gin", gin.operative_config_str())


def write_run_files(root_dir: Path, info: dict) -> None:
    """config.gin (as parsed) and run.json, both before training starts."""
    atomic_write_text(root_dir / "config.gin", gin.config_str())
    write_json(root_dir / "run.json", info)


def record_resume(root_dir: Path, info: dict) -> None:
    """Appends this session (time, host, Slurm ids) to run.json's `resumes` list."""
    path = root_dir / "run.json"
    run = json.loads(path.read_text()) if path.exists() else info
    session = {k: info[k] for k in ("started", "host", "slurm", "command")}
    run.setdefault("resumes", []).append(session)
    write_json(path, run)
