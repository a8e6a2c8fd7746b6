"""Errors users can cause: one line on stderr, exit status 2, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_RUN, bindings, train_cli


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (bindings("DqnAgent.gama=0.9"), ["DqnAgent.gama", "did you mean gamma"]),
        (bindings("DqnAgnt.gamma=0.9"), ["DqnAgnt", "did you mean DqnAgent"]),
        (bindings("train.total_env_steps=="), ["gin:"]),
        (
            bindings("load_gymnasium.env_id='CartPol-v1'"),
            ["CartPol-v1", "did you mean CartPole-v1"],
        ),
        (["--gin_file=dqn_cartpol.gin"], ["dqn_cartpol.gin", "did you mean dqn_cartpole.gin"]),
        (["--gin_file=/no/such/file.gin"], ["/no/such/file.gin", "not found"]),
        (
            bindings("train.initial_collect_steps=60_000"),
            ["initial_collect_steps", "total_env_steps"],
        ),
        (bindings("train.batch_size=0"), ["train.batch_size must be positive"]),
        (
            bindings("DqnAgent.n_step_update=10", "train.initial_collect_steps=5"),
            ["train.initial_collect_steps=5", "11-step window", "at least 11"],
        ),
        (
            bindings("DqnAgent.n_step_update=3", "DqnAgent.gamma=0.0"),
            ["n-step returns (n=3)", "gamma in (0, 1]"],
        ),
        (
            bindings("train.network=@QNetwork", "QNetwork.dtype='mixed_bfloat16'"),
            ["QNetwork outputs bfloat16 Q-values", "DuelingQNetwork.dtype"],
        ),
    ],
    ids=[
        "parameter",
        "configurable",
        "syntax",
        "env-id",
        "gin-name",
        "gin-path",
        "sizes",
        "zero",
        "n-step-window",
        "n-step-gamma",
        "mixed-precision-output",
    ],
)
def test_bad_input_fails_cleanly_and_writes_nothing(tmp_path: Path, args, fragments):
    result = train_cli(*args, cwd=tmp_path)
    assert_one_line_error(result, *fragments)
    assert list(tmp_path.iterdir()) == [], "a failed start must not leave a run directory"


def test_a_finished_run_reports_and_is_left_untouched(tiny_run: Path, tmp_path: Path):
    before = (tiny_run / "metrics.jsonl").read_bytes()
    result = train_cli(*bindings(*TINY_RUN), f"--root_dir={tiny_run}", cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "resumed from checkpoint at 1,500 env steps" in result.stderr
    assert "final eval return" in result.stdout
    assert (tiny_run / "metrics.jsonl").read_bytes() == before


def test_unwritable_root_dir(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = train_cli(*bindings(*TINY_RUN), f"--root_dir={blocker}/run", cwd=tmp_path)
    assert_one_line_error(result, "cannot write --root_dir")
    assert blocker.read_text() == "not a directory"


def test_stray_positional_argument(tmp_path: Path):
    assert_one_line_error(train_cli("train.seed=1", cwd=tmp_path), "--gin_bindings")
