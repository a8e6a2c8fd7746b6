"""Seeded learning checks: every agent family must beat random play on CartPole by a margin.

A loss with its sign flipped still gives a finite loss (all that test_agents.py checks); here
each family's gin file, as users run it and shortened by bindings only, must reach a greedy
eval mean that neither random play nor the untrained network gets near. The families run in
this process (tests/agents/learning_checks.py), which saves a TF start-up each; the DQN check
below runs the CLI, as a user would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agents.learning_checks import SEED, Check, best_eval, curve, run_check
from tests.conftest import REPO, bindings, read_metrics, train_cli

# Uniform-random CartPole-v1: mean 22.1 over 2,000 episodes (gymnasium 1.3, reset seeds
# 0-1999), median 18, longest 86; no episode reached 100, let alone a 10-episode mean.
RANDOM_POLICY_RETURN = 22.0
# The untrained network's greedy eval (the step-0 row) is what a family whose loss does not
# train would show: 9-11 for seed 0 in every family; over seeds 0-3 it was 9-42, except that
# seed 2's initial actor network balances for 106 steps (PPO, A2C, both REINFORCEs). The test
# seed's step-0 row is checked against this bound, so a threshold above it cannot be reached
# by the untrained network.
UNTRAINED_BOUND = 2 * RANDOM_POLICY_RETURN

# Measured best eval means (10 episodes) for seeds 0 / 1 / 2, TF 2.15 (Python 3.11) and TF
# 2.21 (Python 3.12), 2026-12-08 (`python -m tests.agents.learning_checks --seeds 0 1 2`); the
# same on both stacks unless two rows are given. Seed 0 is what the test runs. With the sign of
# each family's loss flipped (policy-gradient term, A2C's advantages, categorical or TD loss),
# every check failed on both stacks with a best of 9.3 (A2C: 14.8).
OFF_POLICY = (  # 1,000 random steps, then evals at 2k, 3k, 4k and 5k env steps
    "train.total_env_steps=5_000",
    "train.eval_interval=1_000",
    "train.eval_episodes=10",
)


def on_policy(total_env_steps: str) -> tuple[str, ...]:
    """An on-policy gin file's run cut to `total_env_steps`, evaluated every 2,500 steps."""
    return (
        f"train_on_policy.total_env_steps={total_env_steps}",
        "train_on_policy.eval_interval=2_500",
        "train_on_policy.eval_episodes=10",
    )


R = RANDOM_POLICY_RETURN
CHECKS = [
    # 289.0 / 271.9 / 162.9; seeds 3-5: 148.9, 402.1, 154.3. The costliest check (20 epochs)
    Check("ppo", "ppo_cartpole.gin", on_policy("10_000"), 100, R),
    # 259.4 / 195.4 / 168.6; seeds 3-7: 154.3, >= 129.4, 179.0, 169.3, 169.4. A2C is slow and
    # noisy at this budget (its gin file solves within 500k): seed 1 stays at 9 for its first
    # 22k steps, seed 5's best in the first 40k was 91.5. Hence 50k steps and a lower bar:
    # 75 is 3.4x random play and 5x the sign-flipped A2C's best (14.8).
    Check("a2c", "a2c_cartpole.gin", on_policy("50_000"), 75, R),
    # 374.6 / 194.2 / 338.3 (seed 3: 272.9)
    Check("reinforce", "reinforce_cartpole.gin", on_policy("10_000"), 100, R),
    # 229.6 / 164.2 / 226.3 (seed 3: 298.6)
    Check("reinforce_baseline", "reinforce_baseline_cartpole.gin", on_policy("10_000"), 100, R),
    # TF 2.15: 231.2 / 198.9 / 154.3; TF 2.21: 149.4 / 169.9 / 242.1
    Check("c51", "c51_cartpole.gin", OFF_POLICY, 100, R),
    # TF 2.15: 500.0 / 225.5 / 499.3; TF 2.21: 500.0 / 244.6 / 496.9
    Check("rainbow", "rainbow_cartpole.gin", OFF_POLICY, 150, R),
    # 481.4 / 500.0 / 265.5
    Check("ddqn", "ddqn_cartpole.gin", OFF_POLICY, 150, R),
    # 295.9 / 337.3 / 406.9
    Check("dueling_dqn", "dueling_dqn_cartpole.gin", OFF_POLICY, 150, R),
]


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


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.family)
def test_each_agent_family_learns_cartpole(check: Check, tmp_path: Path):
    """A sign error in a policy-gradient, categorical or TD loss fails here (measured)."""
    assert check.threshold >= 3 * check.random_return > UNTRAINED_BOUND
    rows = run_check(check, tmp_path / "run", SEED)
    print(f"{check.family}: best {best_eval(rows):.1f} | {curve(rows)}")  # shown with -rP
    assert rows[0]["env_steps"] == 0 and rows[0]["eval_return_mean"] < UNTRAINED_BOUND, curve(rows)
    assert best_eval(rows) >= check.threshold, curve(rows)
