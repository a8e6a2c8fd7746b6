"""A run directory written before pipeline/ moved into packages still resumes.

`tests/data/run_before_layout` is a CartPole run that the flat layout (commit eb8fde3,
2026-12-04) trained to 600 env steps, kept with its newest checkpoint only. Resuming it here
compares its config.gin with this layout's `gin.config_str()` (a changed gin name would
refuse the resume), restores every checkpointed value into this layout's objects (a renamed
object path would fail `assert_consumed`), and trains on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import REPO, bindings, read_metrics, train_cli
from tests.loops.test_resume import resumed_from

BEFORE = REPO / "tests" / "data" / "run_before_layout"
SETTINGS = [  # as the run was started; only total_env_steps may change on a resume
    "train.initial_collect_steps=200",
    "train.collect_steps_per_iteration=100",
    "train.train_steps_per_iteration=50",
    "train.eval_interval=300",
    "train.eval_episodes=2",
    "TorchInitQNetwork.fc_layer_params=(16,)",
    "train.replay_capacity=1000",
    "train.checkpoint_interval=300",
]


def test_a_run_directory_of_the_flat_layout_resumes_and_trains_on(tmp_path: Path):
    root_dir = tmp_path / "run"
    shutil.copytree(BEFORE, root_dir)
    old_rows = (BEFORE / "metrics.jsonl").read_text()
    result = train_cli(
        "--gin_file=dqn_cartpole.gin",
        *bindings(*SETTINGS, "train.total_env_steps=900"),
        f"--root_dir={root_dir}",
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert resumed_from(result) == 600
    assert (root_dir / "metrics.jsonl").read_text().startswith(old_rows)
    rows = read_metrics(root_dir)
    assert [row["env_steps"] for row in rows] == [0, 300, 600, 900]
    assert rows[-1]["train_steps"] == (900 // 100 - 200 // 100) * 50
    assert (root_dir / "config.gin").read_text() == (BEFORE / "config.gin").read_text()
