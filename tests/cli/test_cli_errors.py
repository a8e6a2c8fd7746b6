"""Errors users can cause, through the real CLI in its own process (the table of bad
input is tests/cli/test_bad_input.py): one line on stderr, exit status 2, no traceback."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO, TINY_RUN, bindings, train_cli


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


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
