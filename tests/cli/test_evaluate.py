"""Exported policies and `pipeline.evaluate`: loadable without our code, same returns, videos."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, TINY_RUN, bindings, read_metrics, train_cli

OBSERVATIONS = [[0.0, 0.0, 0.0, 0.0], [0.1, -0.5, 0.05, 0.8], [-0.2, 0.3, -0.1, -0.9]]
LOAD_WITHOUT_PIPELINE = """
import json, sys, types
sys.modules.setdefault("gym", types.ModuleType("gym"))  # the current stack has no gym
import numpy as np, tensorflow as tf
from tf_agents.trajectories import time_step as ts
policy = tf.saved_model.load(sys.argv[1])
obs = tf.constant(json.loads(sys.argv[2]), tf.float32)
step = ts.restart(obs, batch_size=obs.shape[0])
actions = policy.action(step).action.numpy().tolist()
assert not any(name == "pipeline" or name.startswith("pipeline.") for name in sys.modules)
print(json.dumps(actions))
"""


def evaluate_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SDL_AUDIODRIVER": "dummy"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.evaluate", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy, symlinks=True)
    return copy


def test_export_loads_in_a_fresh_process_without_our_code(run_copy: Path, tmp_path: Path):
    assert (run_copy / "policy").is_symlink() and (run_copy / "policy" / "saved_model.pb").exists()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_WITHOUT_PIPELINE,
            str(run_copy / "policy"),
            json.dumps(OBSERVATIONS),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    exported = json.loads(result.stdout.strip().splitlines()[-1])

    # In process: the same run's final weights, from its last checkpoint.
    import tensorflow as tf
    from tf_agents.trajectories import time_step as ts

    from pipeline import config
    from pipeline.loops import off_policy

    config.parse([str(run_copy / "config.gin")], [])
    run = off_policy.Experiment(run_copy)
    assert run.restore() == read_metrics(run_copy)[-1]["env_steps"]
    obs = tf.constant(OBSERVATIONS, tf.float32)
    greedy = run.agent.policy.action(ts.restart(obs, batch_size=len(OBSERVATIONS)))
    assert greedy.action.numpy().tolist() == exported


def test_evaluate_matches_the_runs_last_evaluation_and_films(run_copy: Path):
    import imageio.v2 as imageio

    result = evaluate_cli(f"--root_dir={run_copy}", "--video", "--video_episodes=2")
    assert result.returncode == 0, result.stderr[-2000:]
    last = read_metrics(run_copy)[-1]
    line = result.stdout.strip().splitlines()[0]
    assert line.startswith(
        f"exported policy: return {last['eval_return_mean']:.1f} +- {last['eval_return_std']:.1f}"
    ), (line, last)
    assert f"over {last['eval_episodes']} episodes" in line
    videos = sorted((run_copy / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["exported-episode0.mp4", "exported-episode1.mp4"]
    # One frame after the reset and one per step: a 1-episode run gives its exact length.
    single = evaluate_cli(f"--root_dir={run_copy}", "--video", "--episodes=1")
    length = float(single.stdout.split("mean episode length ")[1].split()[0])
    frames = imageio.mimread(videos[0], memtest=False)
    assert len(frames) == int(length) + 1, (len(frames), length)
    assert np.asarray(frames[0]).shape == (400, 600, 3)


def test_random_baseline_and_clear_errors(run_copy: Path, tmp_path: Path):
    result = evaluate_cli(f"--root_dir={run_copy}", "--policy=random", "--episodes=5")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("random policy: return ") and "over 5 episodes" in result.stdout
    result = evaluate_cli(f"--root_dir={run_copy}", "--policy=cartpole_heuristic", "--episodes=3")
    assert result.stdout.startswith("cartpole_heuristic policy: return 500.0 +- 0.0"), result

    (run_copy / "policy").unlink()
    result = evaluate_cli(f"--root_dir={run_copy}")
    assert result.returncode == 2 and "no exported policy yet" in result.stderr
    result = evaluate_cli(f"--root_dir={tmp_path / 'nothing'}")
    assert result.returncode == 2 and "holds no run" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_evaluate_from_a_checkpoint_replays_the_runs_evaluation_at_that_step(tmp_path: Path):
    """In a fresh process, from the checkpoint alone: the numbers the run logged there."""
    run_copy = tmp_path / "run"
    trained = train_cli(
        *bindings(*TINY_RUN, "train.checkpoint_interval=500"), f"--root_dir={run_copy}", cwd=REPO
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    rows = {row["env_steps"]: row for row in read_metrics(run_copy)}
    printed = {}
    for checkpoint in ("500", "1_000", "latest"):
        result = evaluate_cli(f"--root_dir={run_copy}", f"--checkpoint={checkpoint}")
        assert result.returncode == 0, result.stderr[-2000:]
        printed[checkpoint] = result.stdout.strip().splitlines()[0]
    for checkpoint, steps in (("500", 500), ("1_000", 1_000), ("latest", 1_500)):
        row = rows[steps]
        assert printed[checkpoint].startswith(
            f"checkpoint {steps:,} policy: return {row['eval_return_mean']:.1f} +- "
            f"{row['eval_return_std']:.1f}"
        ), (printed[checkpoint], row)
        assert f"mean episode length {row['eval_length_mean']:.1f}" in printed[checkpoint]
    assert len(set(printed.values())) > 1, "the checkpoints must play differently"

    missing = evaluate_cli(f"--root_dir={run_copy}", "--checkpoint=700")
    assert missing.returncode == 2 and "no checkpoint at 700 env steps" in missing.stderr
    assert "have 500, 1,000, 1,500" in missing.stderr
