"""One bad byte in a replay chunk that every kept checkpoint shares (a hard link) costs the
replay, not the run: the resume takes the newest checkpoint's weights and step and refills."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.run.checkpoints import CheckpointStore, verify
from tests.conftest import REPO, bindings, train_cli
from tests.envs.test_atari_resume import SHORT_BREAKOUT

CHUNKED = [*SHORT_BREAKOUT, *bindings("FrameStackReplay.chunk_items=64")]


def test_a_corrupt_shared_replay_chunk_costs_the_replay_not_the_run(tmp_path: Path):
    root = tmp_path / "run"
    done = train_cli(*CHUNKED, f"--root_dir={root}", cwd=REPO)
    assert done.returncode == 0, done.stderr
    store = CheckpointStore(root / "checkpoints")
    (newest_steps, newest), (_, older) = store.complete()[:2]
    shared = [
        p for p in sorted((newest / "replay").glob("frames.*.npy"))
        if (older / "replay" / p.name).exists()
        and p.stat().st_ino == (older / "replay" / p.name).stat().st_ino
    ]  # fmt: skip
    assert shared, "the test needs a chunk both checkpoints share"
    chunk = shared[0]
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF  # a real flipped byte, in both checkpoints at once
    chunk.write_bytes(bytes(data))
    assert verify(newest) is not None and verify(older) is not None
    rows_before = (root / "metrics.jsonl").read_text().splitlines()

    more = bindings("train.total_env_steps=1_350")
    resumed = train_cli(*CHUNKED, *more, f"--root_dir={root}", cwd=REPO)

    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    warning = [line for line in resumed.stderr.splitlines() if "refilled replay" in line]
    assert len(warning) == 1 and f"replay/{chunk.name}" in warning[0], resumed.stderr
    assert f"resumed from checkpoint at {newest_steps:,} env steps" in resumed.stderr
    assert "refilling" in resumed.stderr
    rows = (root / "metrics.jsonl").read_text().splitlines()
    assert rows[: len(rows_before)] == rows_before  # nothing before the checkpoint redone
    assert json.loads(rows[-1])["env_steps"] == 1_350
    final = store.complete()[0]
    assert final[0] == 1_350 and verify(final[1]) is None  # the new checkpoint is whole
