"""Will a buffer fit? The memory this process may use, read from /proc and cgroup limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from pipeline.errors import UserError

CAPACITY_SETTING = "train.replay_capacity"  # the binding named in the out-of-memory message
MEMORY_HEADROOM = 0.9  # use at most this share of the memory available at construction


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def cgroup_memory_headroom(
    cgroup_root: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")
) -> int | None:
    """Bytes this process may still use under its cgroup memory limit; None if unlimited.

    Containers and Slurm jobs cap memory with cgroups, and `MemAvailable` does not show that
    cap. Checks cgroup v2 (`memory.max - memory.current`, on the process's cgroup and each
    ancestor) and v1 (`memory.limit_in_bytes - memory.usage_in_bytes`); the tightest wins.
    """
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    candidates: list[tuple[Path, str, str]] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        rel = rel.strip().lstrip("/")
        if controllers == "":  # cgroup v2 unified hierarchy: walk up to the root
            node = cgroup_root / rel if rel else cgroup_root
            while True:
                candidates.append((node, "memory.max", "memory.current"))
                if node == cgroup_root or cgroup_root not in node.parents:
                    break
                node = node.parent
        elif "memory" in controllers.split(","):
            base = cgroup_root / "memory"
            for node in (base / rel if rel else base, base):
                candidates.append((node, "memory.limit_in_bytes", "memory.usage_in_bytes"))
    # No /proc/self/cgroup entry (or a namespaced path that does not exist): try the roots.
    candidates.append((cgroup_root, "memory.max", "memory.current"))
    candidates.append((cgroup_root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"))

    headroom: int | None = None
    for node, limit_name, usage_name in candidates:
        limit = _read_int(node / limit_name)
        if limit is None or limit >= 2**60:  # "max", or v1's "no limit" (~2**63)
            continue
        usage = _read_int(node / usage_name) or 0
        room = max(limit - usage, 0)
        headroom = room if headroom is None else min(headroom, room)
    return headroom


def system_memory_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """`MemAvailable` in bytes (memory the kernel can give without swapping); None if unknown."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # non-Linux
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - no probe available: the check is skipped
        return None


def available_memory_bytes() -> int | None:
    """Memory this process can still allocate: the smaller of MemAvailable and cgroup room."""
    known = [x for x in (system_memory_available(), cgroup_memory_headroom()) if x is not None]
    return min(known) if known else None


def check_memory(capacity: int, needed_bytes: int, available: int | None = None) -> None:
    """Raises a one-line UserError when `needed_bytes` will not fit; before any allocation."""
    if available is None:
        available = available_memory_bytes()
    if available is None or needed_bytes <= MEMORY_HEADROOM * available:
        return
    raise UserError(
        f"replay buffer of {capacity:,} transitions needs {needed_bytes / 1e9:.1f} GB but only "
        f"{available / 1e9:.1f} GB of memory is available: lower {CAPACITY_SETTING} or free "
        "memory"
    )


def spec_bytes(spec: Any) -> int:
    return sum(int(np.prod(s.shape, dtype=np.int64)) * s.dtype.size for s in tf.nest.flatten(spec))
