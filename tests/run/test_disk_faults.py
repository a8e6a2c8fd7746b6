"""Real faults on a real filesystem: a full disk during a checkpoint or a policy export,
and a SIGKILL at the instant a checkpoint of the same step is replaced.

The full-disk tests mount a small tmpfs (they need root, as CI has; without it they skip, and
fail in CI) and fill it so that the next big write fails with ENOSPC: TensorFlow raises
`tf.errors.OpError`, not OSError.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.run.checkpoints import CheckpointStore, verify
from tests.conftest import REPO, TINY_RUN, bindings, read_metrics, skip_unless_ci, train_cli
from tests.exports import CARTPOLE_OBSERVATIONS, export_acts_as_checkpoint

KEEP_ONE = [*TINY_RUN, "train.checkpoints_to_keep=1"]
FAULTY_TRAIN = ["-m", "tests.faulty_train"]  # a module: tests/ itself must not be on sys.path


def run_on(root: Path, *extra: str) -> subprocess.CompletedProcess:
    return train_cli(*bindings(*KEEP_ONE, *extra), f"--root_dir={root}", cwd=root.parent)


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    """A 64 MB tmpfs: small enough to fill in a moment, big enough for a tiny run."""
    if os.geteuid() != 0:
        skip_unless_ci("mounting a small filesystem needs root (CI runs as root)")
    mount = tmp_path_factory.mktemp("small_disk")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        skip_unless_ci(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture(scope="module")
def base_run(small_disk: Path) -> Path:
    """A finished 1,000-step run on the small disk, checkpointed at 1,000."""
    root = small_disk / "base"
    result = run_on(root, "train.total_env_steps=1_000")
    assert result.returncode == 0, result.stderr
    return root


def fresh_experiment(root: Path, tmp_path: Path):
    """The run's experiment, built in this process from its config.gin in `tmp_path`."""
    from pipeline import config
    from pipeline.loops import off_policy

    config.parse([str(root / "config.gin")], [])  # cleared after the test (conftest)
    return off_policy.Experiment(tmp_path / "fresh")


def fill(disk: Path, leave_bytes: int) -> Path:
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - leave_bytes, 0))
    return filler


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "what, leave_bytes, extra",
    [
        # the next write is a checkpoint (every 250 steps; the replay alone is ~4.7 MB)
        ("the checkpoint at", 1 << 20, ["train.total_env_steps=2_000",
                                        "train.checkpoint_interval=250"]),
        # the next write is the final evaluation's policy export (~90 KB)
        ("the policy export", 40 << 10, ["train.total_env_steps=1_500",
                                         "train.checkpoint_interval=10_000"]),
    ],
    ids=["tf-checkpoint", "policy-export"],
)  # fmt: skip
def test_a_full_disk_stops_with_one_line_and_the_run_resumes(
    small_disk: Path, base_run: Path, what: str, leave_bytes: int, extra: list[str], tmp_path
):
    root = small_disk / "run"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(base_run, root, symlinks=True)
    rows_before = read_metrics(root)
    filler = fill(small_disk, leave_bytes)
    try:
        result = run_on(root, *extra)
    finally:
        filler.unlink()
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert what in line and "No space left on device" in line, line
    assert "run the same command to resume" in line

    checkpoints = CheckpointStore(root / "checkpoints").complete()
    assert [steps for steps, _ in checkpoints] == [1_000]
    assert verify(checkpoints[0][1]) is None, "the earlier checkpoint must stay usable"
    # policy must point at a whole model: the 1,000-step export, loaded and acting as the
    # agent of the checkpoint at 1,000 (restored into a fresh one, off the full disk)
    export_acts_as_checkpoint(root, fresh_experiment(root, tmp_path), 1_000, CARTPOLE_OBSERVATIONS)
    assert not list(root.rglob("*.partial")), "a failed write must give its space back"

    resumed = run_on(root, *extra)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from checkpoint at 1,000 env steps" in resumed.stderr
    assert read_metrics(root)[: len(rows_before)] == rows_before


def test_a_kill_while_a_checkpoint_is_replaced_keeps_one(tmp_path: Path):
    """keep=1: SIGTERM right after a resume makes the loop checkpoint the same step again;
    a SIGKILL the moment the old checkpoint loses its name must still leave one to resume."""
    root = tmp_path / "run"
    first = run_on(root, "train.total_env_steps=1_000")
    assert first.returncode == 0, first.stderr
    rows = read_metrics(root)

    killed = subprocess.run(
        [sys.executable, *FAULTY_TRAIN, "kill-at-replacement",
         *bindings(*KEEP_ONE, "train.total_env_steps=1_500"), f"--root_dir={root}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr  # died by SIGKILL at the replacement

    resumed = run_on(root, "train.total_env_steps=1_500")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from checkpoint at 1,000 env steps" in resumed.stderr
    assert read_metrics(root)[: len(rows)] == rows
    assert [s for s, _ in CheckpointStore(root / "checkpoints").complete()] == [1_500]


def test_an_interrupted_replacement_is_put_back(tmp_path: Path):
    """The store itself: a checkpoint moved aside and never replaced comes back."""
    store = CheckpointStore(tmp_path, keep=1)
    path = store.save(100, lambda d: (d / "data.txt").write_text("first"))
    os.replace(path, tmp_path / f".{path.name}.replaced")  # where a kill would leave it
    assert store.load_latest(lambda d, _: (d / "data.txt").read_text()) == (100, "first")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
