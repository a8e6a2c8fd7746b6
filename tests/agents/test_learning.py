"""A real, seeded learning check: DQN on CartPole must beat random play by a wide margin."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO, bindings, read_metrics, train_cli

RANDOM_POLICY_RETURN = 22.0  # uniform-random CartPole-v1 episodes last about 22 steps


def test_dqn_cartpole_learns_within_10k_steps(tmp_path: Path):
    run_dir = tmp_path / "learn"
    result = train_cli(
        "--gin_file=dqn_cartpole.gin",
        *bindings("train.total_env_steps=10_000", "train.eval_episodes=10"),
        f"--root_dir={run_dir}",
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    rows = read_metrics(run_dir)
    assert rows[0]["env_steps"] == 0 and rows[0]["eval_return_mean"] < 2 * RANDOM_POLICY_RETURN
    best = max(r["eval_return_mean"] for r in rows[1:])
    # Seed 0's best evaluation in the first 10k steps over 20 episodes: 231.7 (2026-12-02);
    # with the Zoo's settings seeds 0-4 gave 135-297.
    assert best >= 100, [r["eval_return_mean"] for r in rows]
    final_line = result.stdout.strip().splitlines()[-1]
    assert final_line.startswith("final eval return") and f"best {best:.1f} at" in final_line
