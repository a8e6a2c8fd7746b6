"""The run directory's lock says what is true: "in use" only when another process holds it; a
filesystem that cannot lock is named as such; `--no_lock` runs there, with one warning.

The filesystem without locks is real: `tests/nolock_fs.py`, a FUSE filesystem mounted for the
test, whose kernel `flock` fails with ENOLCK as on NFS without a lock daemon (root and
/dev/fuse needed; skipped elsewhere, but a failure in CI). Errnos other filesystems give
(Lustre's ENOSYS, ...) are checked on RunLock itself.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import UserError
from pipeline.run import rundir
from tests.conftest import REPO, TINY_RUN, bindings, read_metrics, skip_unless_ci, train_cli


def fuse_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "mounting a FUSE filesystem needs root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    return None


@pytest.fixture
def nolock_mount(tmp_path: Path):
    """A mounted filesystem whose flock fails with ENOLCK; unmounted afterwards."""
    reason = fuse_unavailable()
    if reason:
        skip_unless_ci(reason)
    from tests import nolock_fs

    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.nolock_fs", str(mountpoint)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        if server.stdout.readline().strip() != "mounted":
            server.wait(timeout=30)
            skip_unless_ci(f"no FUSE mount here: {server.stderr.read().strip()[-300:]}")
        yield mountpoint
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        nolock_fs.unmount(str(mountpoint))


def test_a_filesystem_without_locks_is_named_and_no_lock_runs_on_it(nolock_mount: Path):
    probe = nolock_mount / "probe"
    with open(probe, "w") as f, pytest.raises(OSError) as raised:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert raised.value.errno == errno.ENOLCK  # the kernel's answer on this mount
    probe.unlink()

    run_dir = nolock_mount / "run"
    refused = train_cli(*bindings(*TINY_RUN), f"--root_dir={run_dir}", cwd=REPO)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith(f"error: cannot lock --root_dir {run_dir}: flock on "), lines
    assert "(No locks available, ENOLCK)" in lines[0] and "--no_lock" in lines[0], lines
    assert "in use" not in refused.stderr

    ran = train_cli(*bindings(*TINY_RUN), f"--root_dir={run_dir}", "--no_lock", cwd=REPO)
    assert ran.returncode == 0, ran.stderr[-3000:]
    warnings = [line for line in ran.stderr.splitlines() if line.startswith("warning: --no_lock")]
    assert len(warnings) == 1 and "two processes" in warnings[0], ran.stderr[-3000:]
    assert read_metrics(run_dir)[-1]["env_steps"] == 1_500
    assert (run_dir / "checkpoints").is_dir() and (run_dir / "policy").is_symlink()


def test_a_lock_held_by_another_process_is_still_in_use(tmp_path: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from pipeline.run import rundir; "
         f"lock = rundir.RunLock({str(run_dir)!r}).acquire(); print('held', flush=True); "
         "time.sleep(120)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = train_cli(*bindings(*TINY_RUN), f"--root_dir={run_dir}", cwd=REPO)
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith(f"error: --root_dir {run_dir} is in use by pid {holder.pid} on ")
    assert lines[0].endswith("wait for it to finish (or stop it), or choose another --root_dir")


FILESYSTEM_ERRNOS = [errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.EIO]


@pytest.mark.parametrize(
    "code", FILESYSTEM_ERRNOS, ids=[errno.errorcode[c] for c in FILESYSTEM_ERRNOS]
)
def test_every_flock_failure_but_ewouldblock_names_the_filesystem(tmp_path, monkeypatch, code):
    """Lustre `noflock` (ENOSYS), NFS without lockd (ENOLCK), others (EOPNOTSUPP, EINVAL)."""

    def flock(fd: int, operation: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", flock)
    with pytest.raises(UserError) as raised:
        rundir.RunLock(tmp_path).acquire()
    message = str(raised.value)
    assert f"({os.strerror(code)}, {errno.errorcode[code]})" in message
    assert "cannot lock" in message and "--no_lock" in message and "in use" not in message

    def busy(fd: int, operation: int) -> None:
        raise BlockingIOError(errno.EWOULDBLOCK, os.strerror(errno.EWOULDBLOCK))

    monkeypatch.setattr(fcntl, "flock", busy)
    with pytest.raises(UserError, match="is in use by another process"):
        rundir.RunLock(tmp_path).acquire()
    rundir.RunLock(tmp_path, enabled=False).acquire().release()  # --no_lock: no flock at all
