"""Rainbow through the whole pipeline: a SIGKILLed CartPole run with prioritized replay resumes
bit-identical, the priorities it checkpoints come from its errors, and rainbow_breakout.gin
starts and trains."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, bindings, read_metrics, train_cli
from tests.envs.test_atari_pipeline import SMOKE_RUN
from tests.loops.test_resume import (
    SPLIT_RUN,
    assert_same_run,
    complete_checkpoints,
    resumed_from,
    wait_for,
)

# test_resume's split run, on Rainbow's network.
RAINBOW_RUN = [
    *(binding for binding in SPLIT_RUN if not binding.startswith("TorchInitQNetwork")),
    "DuelingCategoricalQNetwork.fc_layer_params=(32,)",
]


def command(root_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "pipeline.train", "--gin_file=rainbow_cartpole.gin",
        *bindings(*RAINBOW_RUN), f"--root_dir={root_dir}",
    ]  # fmt: skip


def finish(root_dir: Path) -> subprocess.CompletedProcess:
    result = train_cli(*command(root_dir)[3:], cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    root_dir = tmp_path_factory.mktemp("rainbow") / "run"
    finish(root_dir)
    return root_dir


def test_sigkilled_rainbow_run_with_prioritized_replay_resumes_bit_identical(
    reference: Path, tmp_path: Path
):
    root_dir = tmp_path / "run"
    process = subprocess.Popen(command(root_dir), cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    wait_for(lambda: 1_200 in complete_checkpoints(root_dir), process)
    time.sleep(0.3)  # past the checkpoint: the resume must redo what the kill lost
    process.kill()
    process.wait()
    result = finish(root_dir)
    assert resumed_from(result) is not None and resumed_from(result) >= 1_200
    assert_same_run(root_dir, reference)


def test_checkpointed_priorities_are_the_agents_errors(reference: Path):
    newest = max(complete_checkpoints(reference))
    replay = reference / "checkpoints" / f"ckpt-{newest:012d}" / "replay"
    with np.load(replay / "priorities.npz") as saved:
        leaves = saved["leaves"]
    info = json.loads((replay / "priorities.json").read_text())
    live = leaves[leaves > 0]
    assert live.size > 2_000
    # Trained-on items carry (loss + eps) ^ 0.5, not the initial 1 or the running maximum.
    assert np.unique(live).size > 1_000
    assert info["max_priority"] > 1.0 and live.max() <= info["max_priority"]
    rows = read_metrics(reference)
    assert rows[-1]["env_steps"] == 4_000


def test_rainbow_breakout_starts_and_trains(tmp_path: Path):
    run_dir = tmp_path / "run"
    result = train_cli(
        "--gin_file=rainbow_breakout.gin", *bindings(*SMOKE_RUN), f"--root_dir={run_dir}",
        cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_metrics(run_dir)
    assert rows[-1]["train_steps"] == (600 - 200) // 4
    assert np.isfinite(rows[-1]["train_loss"])
    operative = (run_dir / "operative_config.gin").read_text()
    assert "RainbowAgent.n_step_update = 3" in operative
    assert "PrioritizedFrameStackReplay.priority_exponent = 0.5" in operative
