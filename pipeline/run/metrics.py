"""Where numbers go: metrics.jsonl (machine-readable), TensorBoard, and the progress line.

metrics.jsonl holds only what the run computed (no wall-clock figures), so two runs with
the same seed on the same machine write identical files.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import tensorflow as tf

from pipeline.run import files, rundir
from pipeline.run.checkpoints import guarded_write

GROUPS = ("train", "eval")


read_rows = files.read_metrics_rows  # metrics.jsonl's rows, a torn last line skipped


def _truncate_jsonl(root_dir: Path, keep_until: int) -> None:
    rows = [row for row in read_rows(root_dir) if row["env_steps"] <= keep_until]
    text = "".join(json.dumps(row) + "\n" for row in rows)
    rundir.atomic_write_text(root_dir / "metrics.jsonl", text)


def _events(path: Path):
    try:
        yield from tf.compat.v1.train.summary_iterator(str(path))
    except tf.errors.DataLossError:  # the torn tail of a killed writer
        return


def _truncate_events(directory: Path, keep_until: int) -> None:
    """Rewrites a TensorBoard folder as one file of the events at steps <= `keep_until`.

    The merged file keeps the first file's timestamp in its name, so TensorBoard (which
    reads files in name order) sees it before anything the resumed run writes: curves
    continue with no repeated steps.
    """
    old = sorted(directory.glob("events.out.tfevents.*"))
    if not old:
        return
    seen, kept = set(), []
    for path in old:
        for event in _events(path):
            if event.HasField("file_version"):
                key = ("file_version",)
            elif event.HasField("summary") and event.step <= keep_until:
                key = (event.step, tuple(v.tag for v in event.summary.value))
            else:
                continue
            if key not in seen:
                seen.add(key)
                kept.append(event)
    stamp = old[0].name.split(".")[3]
    merged = directory / f"events.out.tfevents.{stamp}.merged"
    tmp = directory / ".merged.tmp"
    with tf.io.TFRecordWriter(str(tmp)) as writer:
        for event in kept:
            writer.write(event.SerializeToString())
    files.fsync_path(tmp)  # the data, before the rename makes it the only copy
    files.replace_durably(tmp, merged)
    for path in old:
        if path != merged:
            path.unlink()
    files.fsync_path(directory)  # the unlinks: old files back after a crash would repeat steps


class MetricsLog:
    """Appends rows to metrics.jsonl and scalars to TensorBoard.

    With `keep_until` (a resume), everything logged after that env step by an earlier
    process (work the checkpoint does not hold) is dropped first, so both stay continuous.
    """

    def __init__(self, root_dir: Path, keep_until: int | None = None):
        self._root_dir = root_dir
        with self._guard():
            if keep_until is not None:
                _truncate_jsonl(root_dir, keep_until)
                for group in GROUPS:
                    _truncate_events(root_dir / group, keep_until)
            self._jsonl = open(root_dir / "metrics.jsonl", "a", encoding="utf-8")
            self._writers = {
                "train": tf.summary.create_file_writer(str(root_dir / "train")),
                "eval": tf.summary.create_file_writer(str(root_dir / "eval")),
            }

    def _guard(self):
        """A full disk here ends the run with one line; the last checkpoint still resumes."""
        return guarded_write(f"the metrics (metrics.jsonl, TensorBoard) in {self._root_dir}")

    def record(self, row: dict[str, Any]) -> None:
        with self._guard():
            self._jsonl.write(json.dumps(row, sort_keys=False) + "\n")
            self._jsonl.flush()

    def scalars(self, group: str, values: dict[str, float], env_steps: int) -> None:
        with self._guard(), self._writers[group].as_default(step=env_steps):
            for name, value in values.items():
                tf.summary.scalar(name, value)

    def text(self, group: str, name: str, value: str, env_steps: int) -> None:
        with self._guard(), self._writers[group].as_default(step=env_steps):
            tf.summary.text(name, value)

    def flush(self) -> None:
        with self._guard():
            self._jsonl.flush()
            os.fsync(self._jsonl.fileno())
            for writer in self._writers.values():
                writer.flush()

    def close(self) -> None:
        with self._guard():
            self._jsonl.close()
            for writer in self._writers.values():
                writer.close()


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Steps, steps/s over the recent window, ETA and the last evaluation, as one line."""

    def __init__(self, total_env_steps: int, start_env_steps: int = 0):
        self.total = total_env_steps
        self._mark_time = self._start_time = time.monotonic()
        self._mark_steps = self._start_steps = start_env_steps
        self.rate = 0.0

    def update(self, env_steps: int) -> float:
        now = time.monotonic()
        if now > self._mark_time and env_steps > self._mark_steps:
            self.rate = (env_steps - self._mark_steps) / (now - self._mark_time)
        self._mark_time, self._mark_steps = now, env_steps
        return self.rate

    def elapsed(self) -> float:
        return time.monotonic() - self._start_time

    def line(
        self, env_steps: int, last_eval: float | None, extra: str = "", overall: bool = False
    ) -> str:
        """The progress line; steps/s and ETA from the recent window unless `overall`.

        The recent window matters: a run's random initial collection is 10x faster than
        its learning phase, and an average over both would promise far too early an end.
        """
        done = env_steps - self._start_steps
        rate = done / self.elapsed() if self.elapsed() > 0 else 0.0
        if not overall and self.rate > 0:
            rate = self.rate
        eta = (self.total - env_steps) / rate if rate > 0 else float("nan")
        eval_text = "n/a" if last_eval is None else f"{last_eval:.1f}"
        eta_text = format_duration(eta) if eta == eta else "?"
        parts = [
            f"env steps {env_steps:,}/{self.total:,} ({100 * env_steps / self.total:.0f}%)",
            f"{rate:,.0f} steps/s",
            f"ETA {eta_text}",
            f"last eval return {eval_text}",
        ]
        if extra:
            parts.append(extra)
        return " | ".join(parts)


def metric_windows(**metrics) -> tf.train.Checkpoint:
    """The last-10-episodes windows of TF-Agents' average metrics, by name.

    TF-Agents keeps them in a `TFDeque`, a plain object a checkpoint of the metric does not
    reach; without them a resumed run averages fewer episodes until ten have ended.
    """
    windows = {}
    for name, metric in metrics.items():
        deque = metric._buffer
        windows[name] = tf.train.Checkpoint(table=deque._buffer, head=deque._head)
    return tf.train.Checkpoint(**windows)
