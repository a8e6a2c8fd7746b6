"""A run directory is input: a fresh run never writes into a folder that is not a run, and a
run deletes only what it created, never through a link that leaves it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pipeline.errors import UserError
from pipeline.run import rundir
from tests.conftest import REPO, TINY_RUN, bindings, train_cli


def snapshot(*roots: Path) -> dict[str, object]:
    """Every entry under `roots`: a file's bytes, a link's target, a folder's existence."""
    found: dict[str, object] = {}
    for root in roots:
        for folder, dirs, names in os.walk(root):
            for name in dirs + names:
                path = Path(folder) / name
                if path.is_symlink():
                    found[str(path)] = ("link", os.readlink(path))
                elif path.is_file():
                    found[str(path)] = path.read_bytes()
                else:
                    found[str(path)] = "dir"
    return found


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_fresh_run_refuses_a_folder_that_holds_no_run(tmp_path: Path):
    """What a mistyped --root_dir could hit: TensorBoard logs and a TF-Agents `train_eval`
    output (the same train/, eval/, policy/, policies/ names), `policies` a link out."""
    outside = tmp_path / "elsewhere"
    (outside / "step-1").mkdir(parents=True)
    (outside / "step-1" / "saved_model.pb").write_bytes(b"someone's model")
    foreign = tmp_path / "logs"
    for group in ("train", "eval"):
        (foreign / group).mkdir(parents=True)
        (foreign / group / "events.out.tfevents.1700000000.host.1.v2").write_bytes(b"events")
    (foreign / "policy").mkdir()
    (foreign / "policy" / "saved_model.pb").write_bytes(b"a real policy folder")
    os.symlink(outside, foreign / "policies")
    (foreign / "notes.txt").write_text("keep me")
    before = snapshot(foreign, outside)

    result = train_cli(*bindings(*TINY_RUN), f"--root_dir={foreign}", cwd=REPO)

    assert "is not empty and holds no run" in one_error_line(result)
    assert snapshot(foreign, outside) == before  # nothing written, changed or deleted
    assert not (foreign / ".lock").exists()


def test_an_empty_folder_or_a_killed_start_is_fine(tmp_path: Path):
    rundir.check_writable_run(tmp_path / "new")  # does not exist yet
    rundir.check_writable_run(tmp_path)  # exists, empty
    (tmp_path / ".lock").write_text("")  # what a start killed before config.gin leaves
    rundir.check_writable_run(tmp_path)
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(UserError, match="holds no run"):
        rundir.check_writable_run(tmp_path)


def test_a_run_whose_pruned_folder_links_out_is_refused(tiny_run: Path, tmp_path: Path):
    """The run would delete old exports in `policies/`: through a link, that is outside."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    outside = tmp_path / "elsewhere"
    (outside / "step-000000000001").mkdir(parents=True)
    (outside / "step-000000000001" / "saved_model.pb").write_bytes(b"not the run's")
    shutil.rmtree(run / "policies")
    os.symlink(outside, run / "policies")
    before = snapshot(run, outside)

    result = train_cli(*bindings(*TINY_RUN), f"--root_dir={run}", cwd=REPO)

    assert "policies is a link to" in one_error_line(result)
    assert snapshot(run, outside) == before


def test_a_copied_policy_folder_and_foreign_exports_are_left_alone(tiny_run: Path, tmp_path: Path):
    """A run copied with `cp -rL` has a real `policy/` folder: a resume that exports again
    leaves it (and anything in policies/ it did not write) and warns once."""
    run = tmp_path / "copied"
    shutil.copytree(tiny_run, run, symlinks=False)  # what `cp -rL` makes of the link
    assert (run / "policy").is_dir() and not (run / "policy").is_symlink()
    (run / "policies" / "mine").mkdir()
    (run / "policies" / "mine" / "notes.txt").write_text("a user's folder")
    kept = snapshot(run / "policy", run / "policies" / "mine")

    result = train_cli(
        *bindings(*TINY_RUN, "train.total_env_steps=2_000"), f"--root_dir={run}", cwd=REPO
    )

    assert result.returncode == 0, result.stderr
    assert snapshot(run / "policy", run / "policies" / "mine") == kept
    assert result.stderr.count("is not the pipeline's link") == 1, result.stderr
    exports = sorted(p.name for p in (run / "policies").iterdir() if p.name != "mine")
    assert exports == ["step-000000002000"], exports  # its own older exports were pruned
