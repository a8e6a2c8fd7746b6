"""The CartPole benches bind the seed of the loop each gin file runs: the CLI refuses a binding
of the other loop (it would change nothing), which once broke every bench run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts" / "bench"))
spec = importlib.util.spec_from_file_location(
    "cartpole_solve", REPO / "scripts/bench/cartpole_solve.py"
)
cartpole_solve = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cartpole_solve)


@pytest.mark.parametrize(
    ("gin_file", "expected"),
    [
        ("dqn_cartpole.gin", "train.seed"),
        ("rainbow_cartpole.gin", "train.seed"),
        ("ppo_cartpole.gin", "train_on_policy.seed"),
        ("reinforce_cartpole.gin", "train_on_policy.seed"),
    ],
)
def test_seed_setting_is_the_seed_of_the_loop_the_gin_file_runs(gin_file, expected):
    assert cartpole_solve.seed_setting(gin_file, []) == expected


def test_a_seeded_run_is_accepted_by_the_cli(tmp_path):
    tiny = [
        "train.total_env_steps=300",
        "train.initial_collect_steps=200",
        "train.eval_interval=300",
        "train.eval_episodes=1",
        "train.eval_at_start=False",
    ]
    result = cartpole_solve.run_seed("dqn_toy_mdp.gin", 3, tiny, tmp_path / "run")
    assert result["seed"] == 3 and result["rows"][-1]["env_steps"] == 300
    assert "train.seed = 3" in (tmp_path / "run" / "config.gin").read_text()


def test_eval_bench_plays_full_games_the_same_on_both_paths():
    """scripts/bench/eval_throughput.py: its balancing linear Q-network lasts all 500 steps,
    and it checks the in-graph and Python evaluations agree before it times them."""
    result = subprocess.run(
        [sys.executable, "scripts/bench/eval_throughput.py", "--episodes=2", "--rounds=1"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("2 CartPole games, mean return 500.0, 1,000 env steps")
    assert lines[-1].startswith("graph : python ")


def test_quickstart_wall_refuses_an_unknown_baseline_in_one_line():
    import subprocess

    result = subprocess.run(
        [sys.executable, str(REPO / "scripts/bench/quickstart_wall.py"), "--baseline=no-such-rev"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--baseline=no-such-rev is not a commit" in lines[0]
