"""Updates come in whole rounds aligned to step 0, as SB3 and Dopamine schedule theirs."""

from __future__ import annotations

from pathlib import Path

import gin
import numpy as np

from pipeline import config
from pipeline.loops import off_policy
from tests.conftest import REPO, bindings, read_metrics, train_cli


def test_rounds_end_at_multiples_of_the_collection_length():
    """dqn_cartpole.gin: random until 1,000, then 32 updates at 1,024, 1,088, ... (rounds of
    64 steps counted from step 0, as SB3 counts its rounds of 256)."""
    try:
        config.parse(["dqn_cartpole.gin"], [])
        run = off_policy.Experiment("unused-root")
    finally:
        gin.clear_config()
    due = {steps: run._updates_due(steps) for steps in (999, 1_000, 1_023, 1_024, 1_087, 1_088)}
    assert due == {999: 0, 1_000: 0, 1_023: 0, 1_024: 32, 1_087: 32, 1_088: 64}
    assert run._updates_due(50_000) == (50_000 // 64 - 1_000 // 64) * 32 == 24_512


def test_an_evaluation_inside_a_round_does_not_split_its_updates(tmp_path: Path):
    """Rounds of 100 steps end at 200, 300, ...; evaluations at 250 and 500 cut one open."""
    run_dir = tmp_path / "run"
    result = train_cli(
        *bindings(
            "train.total_env_steps=500",
            "train.initial_collect_steps=150",
            "train.collect_steps_per_iteration=100",
            "train.train_steps_per_iteration=50",
            "train.eval_interval=250",
            "train.eval_episodes=2",
            "TorchInitQNetwork.fc_layer_params=(16,)",
        ),
        f"--root_dir={run_dir}",
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    rows = read_metrics(run_dir)
    assert [r["env_steps"] for r in rows] == [0, 250, 500]
    # At 250 one round (ended at 200) has trained; at 500 four (200, 300, 400, 500). A ratio
    # counted from the end of the random start would give 175 at 500.
    assert [r["train_steps"] for r in rows] == [0, 50, 200]


def test_whole_rounds_in_one_graph_call_train_as_one_call_per_round(tmp_path: Path):
    """Rounds of 2 steps and 1 update run 32 to a graph call (`train_rounds`); the random start
    (101 steps) and two evaluations (333, 999) end inside rounds, which the per-call path
    finishes. A twin run made one call per round ends with the same weights and the same
    metrics rows but for the loss (a block's mean there, one round's here)."""
    try:
        config.parse(
            ["dqn_cartpole.gin"],
            [
                "train.total_env_steps=1_000",
                "train.initial_collect_steps=101",
                "train.collect_steps_per_iteration=2",
                "train.train_steps_per_iteration=1",
                "train.eval_interval=333",
                "train.eval_episodes=2",
                "TorchInitQNetwork.fc_layer_params=(16,)",
            ],
        )
        (tmp_path / "blocks").mkdir()
        (tmp_path / "rounds").mkdir()
        blocks = off_policy.Experiment(tmp_path / "blocks")
        rounds = off_policy.Experiment(tmp_path / "rounds")
    finally:
        gin.clear_config()
    calls = []
    train_rounds = blocks.train_rounds
    blocks.train_rounds = lambda count: (calls.append(count), train_rounds(count))[1]
    rounds._whole_rounds = lambda env_steps: 0
    rows = {"blocks": blocks.run(), "rounds": rounds.run()}

    assert calls[:4] == [13, 32, 32, 32]  # 102 -> 128 (a block boundary) -> 192 -> ...
    # + the round the random start cut and the two the evaluations at 333 and 999 cut
    assert sum(calls) + 1 + 2 == 450
    for ours, theirs in zip(blocks.agent.variables, rounds.agent.variables, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    without_loss = {
        name: [{k: v for k, v in row.items() if k != "train_loss"} for row in run_rows]
        for name, run_rows in rows.items()
    }
    assert without_loss["blocks"] == without_loss["rounds"]
    assert [row["train_steps"] for row in rows["blocks"]] == [0, 116, 283, 449, 450]
