"""The run directory contract (docs/run-directory.md) and same-seed reproducibility."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tensorboard.backend.event_processing import event_accumulator

from pipeline.run.rundir import _git_revision
from tests.conftest import REPO, TINY_RUN, bindings, read_metrics, train_cli


def tags(directory: Path) -> set[str]:
    accumulator = event_accumulator.EventAccumulator(str(directory))
    accumulator.Reload()
    return set(accumulator.Tags()["tensors"])


def test_run_directory_holds_every_promised_file(tiny_run: Path):
    config_text = (tiny_run / "config.gin").read_text()
    assert "train.total_env_steps = 1500" in config_text
    assert "DqnAgent.gamma = 0.99" in config_text
    operative = (tiny_run / "operative_config.gin").read_text()
    assert "TorchInitQNetwork.fc_layer_params = (32,)" in operative

    info = json.loads((tiny_run / "run.json").read_text())
    assert info["seed"] == 0
    assert info["gin_bindings"][0] == "train.total_env_steps=1_500"
    assert info["versions"]["tf-agents"] == "0.19.0"
    assert {"command", "host", "git", "slurm", "gin_files"} <= set(info)

    assert {"return_mean", "return_std", "episode_length_mean"} <= tags(tiny_run / "eval")
    assert {"loss", "epsilon", "steps_per_sec", "operative_config"} <= tags(tiny_run / "train")


def test_metrics_rows_follow_the_eval_schedule(tiny_run: Path):
    rows = read_metrics(tiny_run)
    assert [r["env_steps"] for r in rows] == [0, 500, 1_000, 1_500]
    # 50 updates per 100 env steps after 200 initial random steps.
    assert [r["train_steps"] for r in rows] == [0, 150, 400, 650]
    assert all(r["eval_episodes"] == 3 for r in rows)
    assert rows[0]["train_loss"] is None and rows[-1]["train_loss"] > 0


def test_same_seed_gives_identical_metrics(tiny_run: Path, tmp_path: Path):
    again = tmp_path / "again"
    other = tmp_path / "other"
    assert train_cli(*bindings(*TINY_RUN), f"--root_dir={again}", cwd=REPO).returncode == 0
    assert (
        train_cli(*bindings(*TINY_RUN, "train.seed=1"), f"--root_dir={other}", cwd=REPO).returncode
        == 0
    )
    reference = (tiny_run / "metrics.jsonl").read_bytes()
    assert (again / "metrics.jsonl").read_bytes() == reference
    assert (other / "metrics.jsonl").read_bytes() != reference


def test_git_dirty_means_changed_code_not_untracked_outputs(tmp_path: Path):
    """A bench that archives finished seeds' records into the checkout must not mark its
    later seeds as run from uncommitted code; untracked code or a changed file must."""

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "train.py").write_text("x = 1\n")
    git("add", "train.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    assert _git_revision(tmp_path)["dirty"] is False

    records = tmp_path / "data" / "results" / "s3"
    records.mkdir(parents=True)
    (records / "metrics.jsonl").write_text("{}\n")
    (records / "config.gin").write_text("train.seed = 3\n")
    info = _git_revision(tmp_path)
    assert info["dirty"] is False and len(info["revision"]) == 40

    (tmp_path / "extra.gin").write_text("train.seed = 1\n")
    assert _git_revision(tmp_path)["dirty"] is True
    (tmp_path / "extra.gin").unlink()
    (tmp_path / "train.py").write_text("x = 2\n")
    assert _git_revision(tmp_path)["dirty"] is True
