"""A run directory from someone else runs none of its code through the real CLIs.

The attacks are real: a checkpoint of a real run whose pickles create a marker file when
unpickled (MANIFEST.json recomputed, so the checksums pass), resumed with `pipeline.train`
and evaluated with `pipeline.evaluate`; and a config.gin that imports a module whose import
creates a marker. `--trust_run_dir` loads both, and the marker appears: the crafted files do
run code when trusted. (Only the standard library and the tests' helpers are imported here,
so these tests also run, and fail, against code from before `pipeline.run.trust`.)
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, bindings, train_cli
from tests.loops.test_resume import resumed_from

SMALL_RUN = [  # a checkpoint at 400 env steps, as fast as a real run gets
    "train.total_env_steps=400",
    "train.initial_collect_steps=200",
    "train.collect_steps_per_iteration=100",
    "train.train_steps_per_iteration=10",
    "train.eval_interval=400",
    "train.eval_episodes=2",
    "TorchInitQNetwork.fc_layer_params=(16,)",
]
CHECKPOINT = "checkpoints/ckpt-000000000400"


class TouchOnLoad:
    """Unpickling this creates `marker`: any code a crafted pickle could run instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trust") / "run"
    result = train_cli(*bindings(*SMALL_RUN), f"--root_dir={run_dir}", cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / CHECKPOINT).is_dir()
    return run_dir


def plant_pickles(run_copy: Path, marker: Path) -> None:
    """Replaces the checkpoint's env state and time step by pickles that create `marker`
    (named as checkpoints named them before they were signed) and reseals the manifest."""
    checkpoint = run_copy / CHECKPOINT
    for name in ("env", "time_step"):
        for old in checkpoint.glob(f"{name}.*"):
            old.unlink()
        (checkpoint / f"{name}.pkl").write_bytes(pickle.dumps(TouchOnLoad(marker)))
    reseal(checkpoint)


def reseal(checkpoint: Path) -> None:
    """Recomputes MANIFEST.json, as whoever altered the files can."""
    manifest = json.loads((checkpoint / "MANIFEST.json").read_text())
    manifest["files"] = {
        str(path.relative_to(checkpoint)): {
            "size": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
        for path in sorted(checkpoint.rglob("*"))
        if path.is_file() and path.name != "MANIFEST.json"
    }
    (checkpoint / "MANIFEST.json").write_text(json.dumps(manifest))


def cli(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SDL_AUDIODRIVER": "dummy", **(env or {})},
    )


def test_a_crafted_checkpoint_pickle_runs_nothing(small_run: Path, tmp_path: Path):
    run_copy, marker = tmp_path / "run", tmp_path / "marker"
    shutil.copytree(small_run, run_copy, symlinks=True)
    plant_pickles(run_copy, marker)

    evaluated = cli("pipeline.evaluate", f"--root_dir={run_copy}", "--checkpoint=400")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    resumed = train_cli(
        *bindings(*SMALL_RUN[1:], "train.total_env_steps=500"), f"--root_dir={run_copy}", cwd=REPO
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed_from(resumed) == 400
    assert not marker.exists()
    warnings = [line for line in resumed.stderr.splitlines() if "not loading" in line]
    assert len(warnings) == 1 and "env.pkl" in warnings[0] and "--trust_run_dir" in warnings[0]
    assert "Traceback" not in resumed.stderr + evaluated.stderr


def test_trust_run_dir_loads_the_crafted_pickle(small_run: Path, tmp_path: Path):
    run_copy, marker = tmp_path / "run", tmp_path / "marker"
    shutil.copytree(small_run, run_copy, symlinks=True)
    plant_pickles(run_copy, marker)
    train_cli(
        *bindings(*SMALL_RUN[1:], "train.total_env_steps=500"),
        f"--root_dir={run_copy}",
        "--trust_run_dir",
        cwd=REPO,
    )
    assert marker.exists()  # the pickle was a real attack, and the switch lets it through


def test_evaluate_refuses_a_config_gin_that_imports(small_run: Path, tmp_path: Path):
    run_copy, marker = tmp_path / "run", tmp_path / "marker"
    shutil.copytree(small_run, run_copy, symlinks=True)
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "trust_marker.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
    )
    config = run_copy / "config.gin"
    config.write_text("import trust_marker\n" + config.read_text())
    path = os.pathsep.join([str(modules), os.environ.get("PYTHONPATH", "")])

    refused = cli("pipeline.evaluate", f"--root_dir={run_copy}", env={"PYTHONPATH": path})
    assert refused.returncode == 2 and not marker.exists()
    lines = refused.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "import trust_marker" in errors[0], refused.stderr[-3000:]
    assert "--trust_run_dir" in errors[0] and "Traceback" not in refused.stderr

    trusted = cli(
        "pipeline.evaluate", f"--root_dir={run_copy}", "--trust_run_dir", env={"PYTHONPATH": path}
    )
    assert trusted.returncode == 0, trusted.stderr[-3000:]
    assert marker.exists()


def test_evaluate_plays_only_exports_this_user_signed(small_run: Path, tmp_path: Path):
    """Playing a SavedModel runs its graph: a colleague's export (another secret signed it) or
    an altered one is refused with one line; --trust_run_dir plays it."""
    run_copy = tmp_path / "run"
    shutil.copytree(small_run, run_copy, symlinks=True)
    colleague = tmp_path / "colleague-secret"
    colleague.write_text("ab" * 32 + "\n")
    colleague.chmod(0o600)
    theirs = {"PIPELINE_SECRET_FILE": str(colleague)}

    refused = cli("pipeline.evaluate", f"--root_dir={run_copy}", env=theirs)
    assert refused.returncode == 2, refused.stderr[-3000:]
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not an export of yours" in lines[0], refused.stderr[-3000:]
    assert "--checkpoint=latest" in lines[0] and "--trust_run_dir" in lines[0]
    trusted = cli("pipeline.evaluate", f"--root_dir={run_copy}", "--trust_run_dir", env=theirs)
    assert trusted.returncode == 0, trusted.stderr[-3000:]

    assert cli("pipeline.evaluate", f"--root_dir={run_copy}").returncode == 0  # the author's
    model = run_copy / "policy" / "saved_model.pb"
    model.write_bytes(model.read_bytes() + b"\0")  # altered after it was signed
    altered = cli("pipeline.evaluate", f"--root_dir={run_copy}")
    assert altered.returncode == 2 and "altered" in altered.stderr, altered.stderr[-3000:]


def test_a_malformed_time_step_starts_new_episodes(small_run: Path, tmp_path: Path):
    """time_step.npz that is not plain data (resealed, so the checksums pass): the envs cannot
    continue without it, so the resume starts new episodes with one warning, no traceback."""
    run_copy = tmp_path / "run"
    shutil.copytree(small_run, run_copy, symlinks=True)
    checkpoint = run_copy / CHECKPOINT
    (checkpoint / "time_step.npz").write_bytes(b"not an npz")
    reseal(checkpoint)
    resumed = train_cli(
        *bindings(*SMALL_RUN[1:], "train.total_env_steps=500"), f"--root_dir={run_copy}", cwd=REPO
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed_from(resumed) == 400 and "Traceback" not in resumed.stderr
    warnings = [line for line in resumed.stderr.splitlines() if "not loading" in line]
    assert len(warnings) == 1 and "time_step.npz" in warnings[0], resumed.stderr[-3000:]
