"""Finding gin files by bare name, from any working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from envs.errors import UserError
from pipeline import config
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
