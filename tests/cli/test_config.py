"""Finding gin files by bare name, from any working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import config
from pipeline.errors import UserError
from tests.conftest import REPO, TINY_RUN, bindings, read_metrics, train_cli


def test_bare_name_resolves_to_repo_gin_folder_from_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = REPO / "gin" / "dqn_cartpole.gin"
    assert config.resolve_gin_file("dqn_cartpole.gin") == expected
    assert config.resolve_gin_file("dqn_cartpole") == expected


def test_a_path_wins_over_the_gin_folder(tmp_path, monkeypatch):
    own = tmp_path / "dqn_cartpole.gin"
    own.write_text("train.seed = 3\n")
    monkeypatch.chdir(tmp_path)
    assert config.resolve_gin_file("dqn_cartpole.gin") == own
    assert config.resolve_gin_file(str(own)) == own


def test_unknown_gin_file_lists_what_exists():
    with pytest.raises(UserError, match="did you mean dqn_cartpole.gin"):
        config.resolve_gin_file("dqn_cartpol.gin")


def test_cli_from_another_directory_uses_bare_name_and_default_root_dir(tmp_path: Path):
    result = train_cli(
        "--gin_file=dqn_cartpole.gin", *bindings(*TINY_RUN, "train.seed=5"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    runs = list((tmp_path / "runs").iterdir())
    assert (
        len(runs) == 1 and runs[0].name.startswith("dqn_cartpole-") and runs[0].name.endswith("-s5")
    )
    assert read_metrics(runs[0])[-1]["env_steps"] == 1_500


@pytest.mark.parametrize("gin_file", sorted(p.name for p in (REPO / "gin").glob("*.gin")))
def test_every_shipped_gin_file_passes_the_setting_checks(gin_file):
    """The checks of pipeline.validation must refuse bad input, never a shipped config."""
    config.parse([gin_file], [])


def test_a_schedule_learning_rate_and_none_values_pass():
    config.parse(
        ["dqn_cartpole.gin"],
        [
            "TorchAdam.learning_rate=@PolynomialDecay()",
            "PolynomialDecay.initial_learning_rate=1e-3",
            "PolynomialDecay.decay_steps=1000",
            "train.checkpoint_interval=None",
            "train.final_eval_episodes=None",
            "TorchAdam.global_clipnorm=None",
        ],
    )


def test_checks_name_the_scope_of_a_scoped_binding():
    with pytest.raises(UserError, match=r"^eval/load_gymnasium.discount=2.0 must be"):
        config.parse(["dqn_cartpole.gin"], ["eval/load_gymnasium.discount=2.0"])
