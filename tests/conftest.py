"""Shared helpers: running the real CLI in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

import pipeline  # noqa: F401  (before any test imports TF-Agents: prepares either stack)
from pipeline import stack

pytest_plugins = ("pytester",)  # tests/test_conftest.py runs pytest on small test files

REPO = Path(__file__).resolve().parents[1]

# A run small enough for a test: a few thousand steps, few eval episodes.
TINY_RUN = [
    "train.total_env_steps=1_500",
    "train.initial_collect_steps=200",
    "train.collect_steps_per_iteration=100",
    "train.train_steps_per_iteration=50",
    "train.eval_interval=500",
    "train.eval_episodes=3",
    "TorchInitQNetwork.fc_layer_params=(32,)",
]


def train_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_TF_LOGS"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def bindings(*items: str) -> list[str]:
    return [f"--gin_bindings={item}" for item in items]


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def in_ci() -> bool:
    """CI (`bash .ci/run` with CI=true, as root) must run every real-fault test."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def skip_unless_ci(reason: str) -> NoReturn:
    """For a test of a real fault or service (root, a tmpfs or FUSE mount, Slurm) that cannot
    run here: skipped on a developer's machine, but a failure in CI, so that a CI machine
    unable to run it is noticed instead of passing without it."""
    if in_ci():
        pytest.fail(f"CI=true, but this real-fault test cannot run here: {reason}", pytrace=False)
    pytest.skip(reason)


requires_reverb = pytest.mark.skipif(
    not stack.reverb_installed(),
    reason="Reverb (dm-reverb 0.14) exists only on the pinned stack (Python 3.11, TF 2.15)",
)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One tiny CartPole run shared by the tests that only inspect its outputs."""
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    result = train_cli(*bindings(*TINY_RUN), f"--root_dir={run_dir}", cwd=REPO)
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture(autouse=True, scope="session")
def signing_secret(tmp_path_factory) -> Path:
    """The secret that signs checkpoints' pickles: the tests' own, never the user's
    ~/.config one; in os.environ, so the CLIs the tests start use it too."""
    path = tmp_path_factory.mktemp("secret") / "secret"
    before = os.environ.get("PIPELINE_SECRET_FILE")
    os.environ["PIPELINE_SECRET_FILE"] = str(path)
    yield path
    if before is None:
        os.environ.pop("PIPELINE_SECRET_FILE", None)
    else:
        os.environ["PIPELINE_SECRET_FILE"] = before


@pytest.fixture(autouse=True)
def fresh_gin_config():
    """Tests that parse gin files in-process must not leak bindings into later tests."""
    yield
    import gin

    gin.clear_config()
