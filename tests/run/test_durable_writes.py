"""Every rename is durable: the renamed data is fsynced before the rename, and the directory
that holds the new name is fsynced after it (a rename lives in the directory: without that
fsync a power loss can bring back the old file, or none).

Each writer that publishes a file by renaming runs for real with `os.replace`, `os.fsync` and
`os.unlink` wrapped to record what they did, in order; an fsync is told apart as a
directory's by `fstat` of its descriptor.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.run import files


def _real(path) -> str:
    return os.path.realpath(path)


@pytest.fixture
def events(monkeypatch) -> list[tuple]:
    """("replace", src, dst, files of src) / ("fsync", path, is_dir) / ("unlink", path)."""
    recorded: list[tuple] = []
    real_replace, real_fsync, real_unlink = os.replace, os.fsync, os.unlink

    def replace(src, dst, *args, **kwargs):
        source = Path(src)
        if source.is_symlink():
            data = []  # a link's target lives in the directory entry itself
        elif source.is_dir():
            data = sorted(_real(p) for p in source.rglob("*") if p.is_file())
        else:
            data = [_real(source)]
        names = _real(src), _real(dst)
        real_replace(src, dst, *args, **kwargs)
        recorded.append(("replace", *names, data))

    def fsync(fd):
        real_fsync(fd)
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        recorded.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), is_dir))

    def unlink(path, *args, **kwargs):
        name = _real(path)
        real_unlink(path, *args, **kwargs)
        recorded.append(("unlink", name))

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "unlink", unlink)
    return recorded


def assert_durable(events: list[tuple], path: Path) -> None:
    """The last rename onto `path`: its data fsynced before, its directory fsynced after."""
    target = _real(path)
    renames = [i for i, e in enumerate(events) if e[0] == "replace" and e[2] == target]
    assert renames, f"nothing was renamed onto {target}: {events}"
    at = renames[-1]
    synced = {e[1] for e in events[:at] if e[0] == "fsync" and not e[2]}
    unsynced = [name for name in events[at][3] if name not in synced]
    assert not unsynced, f"renamed onto {target} before an fsync of {unsynced}"
    directories = [e[1] for e in events[at + 1 :] if e[0] == "fsync" and e[2]]
    assert os.path.dirname(target) in directories, f"no fsync of the directory of {target}"


def write_text(root: Path) -> list[Path]:
    """config.gin, run.json, operative_config.gin, sweep and aggregate files, sbatch scripts."""
    files.atomic_write_text(root / "config.gin", "train.seed = 0\n")
    files.atomic_write_text(root / "config.gin", "train.seed = 1\n")  # over an existing file
    return [root / "config.gin"]


def shortened_metrics(root: Path) -> list[Path]:
    """metrics.jsonl cut back to the checkpoint's step on resume."""
    from pipeline.run import metrics

    (root / "metrics.jsonl").write_text('{"env_steps": 1}\n{"env_steps": 2}\n')
    metrics._truncate_jsonl(root, keep_until=1)
    assert (root / "metrics.jsonl").read_text() == '{"env_steps": 1}\n'
    return [root / "metrics.jsonl"]


def merged_events(root: Path) -> list[Path]:
    """A TensorBoard folder rewritten as one file on resume; the old files unlinked."""
    import tensorflow as tf

    from pipeline.run import metrics

    directory = root / "train"
    writer = tf.summary.create_file_writer(str(directory))
    with writer.as_default():
        for step in (1, 2, 3):
            tf.summary.scalar("loss", float(step), step=step)
    writer.close()
    old = list(directory.glob("events.out.tfevents.*"))
    metrics._truncate_events(directory, keep_until=2)
    (merged,) = directory.glob("events.out.tfevents.*")
    assert merged.name.endswith(".merged") and merged not in old
    return [merged]


def policy_export(root: Path) -> list[Path]:
    """policies/step-N (a SavedModel folder) and the `policy` link swapped onto it."""
    from pipeline.loops.export import PolicyExporter

    class Saver:  # writes a folder the way PolicySaver does: several files, no fsync
        def save(self, path: str) -> None:
            (Path(path) / "variables").mkdir(parents=True)
            (Path(path) / "saved_model.pb").write_bytes(b"graph")
            (Path(path) / "variables" / "variables.index").write_bytes(b"index")

    exporter = PolicyExporter(policy=None, train_step=None, root_dir=root)
    exporter._saver = Saver()
    target = exporter.export(1_000)
    return [target, root / "policy"]


def video(root: Path) -> list[Path]:
    """pipeline.evaluate --video's MP4."""
    from pipeline.evaluate import write_video

    write_video(root / "episode.mp4", [np.zeros((16, 16, 3), np.uint8)] * 3, fps=5)
    return [root / "episode.mp4"]


def report(root: Path) -> list[Path]:
    """pipeline.report's files."""
    from pipeline.analysis.report.build import write_files

    write_files(root / "report", {"results.csv": b"a\n1\n", "report.md": b"# report\n"})
    return [root / "report" / "results.csv", root / "report" / "report.md"]


WRITERS = [write_text, shortened_metrics, merged_events, policy_export, video, report]


@pytest.mark.parametrize("writer", WRITERS, ids=[w.__name__ for w in WRITERS])
def test_every_rename_is_fsynced_before_and_its_directory_after(
    writer: Callable[[Path], list[Path]], events: list[tuple], tmp_path: Path
):
    written = writer(tmp_path)
    for path in written:
        assert path.exists() or path.is_symlink(), path
        assert_durable(events, path)


def test_the_unlinked_event_files_stay_unlinked(events: list[tuple], tmp_path: Path):
    """After a resume's rewrite, old event files back after a crash would repeat steps."""
    merged_events(tmp_path)
    unlinks = [i for i, e in enumerate(events) if e[0] == "unlink" and "tfevents" in e[1]]
    assert unlinks
    after = [e[1] for e in events[unlinks[-1] + 1 :] if e[0] == "fsync" and e[2]]
    assert _real(tmp_path / "train") in after


def test_a_directory_fsync_the_filesystem_refuses_is_passed_over(monkeypatch, tmp_path):
    """EINVAL from fsync of a directory (filesystems that cannot sync one): not a failure;
    from a file's fsync it is."""
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    files.atomic_write_text(tmp_path / "run.json", "{}\n")
    assert (tmp_path / "run.json").read_text() == "{}\n"

    def refuse_all(fd):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "fsync", refuse_all)
    with pytest.raises(OSError):
        files.fsync_path(tmp_path / "run.json")
