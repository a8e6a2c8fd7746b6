"""`pipeline.run.trust` in process: plain data instead of pickles, signed pickles, the
secret, checkpoints and the on-policy carry, a run's config.gin.

`tests/run/test_untrusted_run_dir.py` runs the same attacks through the real CLIs.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

import envs
from pipeline.errors import UserError
from pipeline.loops.on_policy import OnPolicyExperiment
from pipeline.run import plain_data, trust
from pipeline.run.checkpoints import read_loop_state, write_loop_state
from tests.conftest import REPO
from tests.run.test_untrusted_run_dir import TouchOnLoad


@pytest.fixture
def untrusted():
    """Whatever the flags say, this process does not trust run directories (and after)."""
    trust.set_trusted(False)
    yield
    trust.set_trusted(None)


# --- plain data ----------------------------------------------------------------------


def test_plain_data_round_trips_exactly_and_npz_files_open_without_pickle(tmp_path: Path):
    step = ts.TimeStep(
        np.array([1], np.int32),
        np.array([0.5], np.float32),
        np.float32(1.0),
        {"pixels": np.arange(24, dtype=np.uint8).reshape(1, 2, 3, 4), "pair": (np.ones(2), [])},
    )
    rng = np.random.default_rng(3).bit_generator.state  # 128-bit ints
    tree = {"step": step, "rng": rng, "ale": b"\x00\xff", "flags": [True, None, "x", 2.5]}
    data = plain_data.dumps(tree)
    assert data == plain_data.dumps(tree)  # the same state, the same bytes
    plain_data.save(tmp_path / "tree.npz", tree)
    with np.load(tmp_path / "tree.npz", allow_pickle=False) as saved:
        assert len(saved.files) == 1 + 6  # the structure and six buffers
    for back in (plain_data.loads(data), plain_data.load(tmp_path / "tree.npz")):
        assert type(back["step"]) is ts.TimeStep and back["rng"] == rng
        assert back["ale"] == b"\x00\xff" and back["flags"] == [True, None, "x", 2.5]
        assert back["step"].discount.dtype == np.float32 and back["step"].discount.shape == ()
        np.testing.assert_array_equal(
            back["step"].observation["pixels"], step.observation["pixels"]
        )
        assert type(back["step"].observation["pair"]) is tuple


@pytest.mark.parametrize(
    "value",
    [np.array([object()]), SimpleNamespace(a=1), {1: "key"}, SimpleNamespace],
    ids=["object array", "object", "int key", "class"],
)
def test_what_is_not_plain_data_is_refused_when_saved(value):
    with pytest.raises(TypeError, match="plain data"):
        plain_data.dumps({"x": value})


def test_pickles_are_signed_and_altered_or_foreign_ones_refused(tmp_path: Path, monkeypatch):
    data = plain_data.dumps({"env": plain_data.Pickled(b"a pickle")})
    assert type(plain_data.loads(data)["env"]) is plain_data.Pickled
    altered = data.replace(b"a pickle", b"A pickle")
    with pytest.raises(plain_data.UntrustedPickle, match="altered"):
        plain_data.loads(altered)
    assert plain_data.loads(altered, trusted=True)["env"] == b"A pickle"
    monkeypatch.setenv(trust.SECRET_ENV, str(tmp_path / "another users secret"))
    (tmp_path / "another users secret").write_text("x" * 64)
    with pytest.raises(plain_data.UntrustedPickle, match="another user"):
        plain_data.loads(data)


def test_the_bridge_unpickles_only_signed_pickles(tmp_path: Path):
    """A state whose env slot holds plain bytes (nobody vouched for them) is not unpickled."""
    env = envs.load_gymnasium(seed=5)
    env.reset()
    state = plain_data.loads(env.get_state())
    state["env"] = {"pickled": pickle.dumps(TouchOnLoad(tmp_path / "marker"))}  # bytes
    with pytest.raises(ValueError, match="nobody signed"):
        env.set_state(plain_data.dumps(state))
    assert not (tmp_path / "marker").exists()


def test_atari_state_is_plain_data_and_continues_the_game():
    env = envs.load_atari("Breakout", seed=1)
    env.reset()
    for i in range(30):
        env.step(np.int64(i % 4))
    state = env.get_state()
    assert b'"pickle"' not in state  # no pickle left: the emulator's state is its own bytes
    ahead = [env.step(np.int64(i % 4)).observation for i in range(20)]
    other = envs.load_atari("Breakout", seed=2)
    other.reset()
    other.set_state(state)
    for i, observation in enumerate(ahead):
        np.testing.assert_array_equal(other.step(np.int64(i % 4)).observation, observation)


def _make_secret(path: str, queue) -> None:
    os.environ[trust.SECRET_ENV] = path
    queue.put(trust.sign(b"data"))


def test_the_secret_is_made_once_private_even_by_racing_processes(tmp_path: Path, monkeypatch):
    path = tmp_path / "config" / "secret"
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    racers = [context.Process(target=_make_secret, args=(str(path), queue)) for _ in range(4)]
    for racer in racers:
        racer.start()
    signatures = {queue.get(timeout=60) for _ in racers}
    for racer in racers:
        racer.join()
    assert len(signatures) == 1 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret"]  # no temporary left

    monkeypatch.delenv(trust.SECRET_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert trust.secret_file() == tmp_path / "xdg" / "tfa-pipeline" / "secret"


# --- checkpoints, in process ---------------------------------------------------------------


def _write_cartpole_state(directory: Path) -> tuple[tf.train.Checkpoint, tf.train.Checkpoint]:
    env = envs.load_gymnasium(seed=5)
    step = env.reset()
    variables, windows = tf.train.Checkpoint(v=tf.Variable(3)), tf.train.Checkpoint()
    (directory / "tf").mkdir(parents=True)
    write_loop_state(directory, variables, windows, [env.get_state()], step, {"steps": 100})
    return variables, windows


def test_an_altered_env_state_starts_new_episodes_unless_trusted(tmp_path: Path, caplog, untrusted):
    directory = tmp_path / "run" / "checkpoints" / "ckpt-000000000100"
    variables, windows = _write_cartpole_state(directory)
    assert {p.name for p in directory.iterdir()} >= {"env.npz", "time_step.npz"}
    assert not list(directory.glob("*.pkl"))
    assert read_loop_state(directory, variables, windows)[2] is not None

    (state,) = plain_data.load(directory / "env.npz")
    altered = state.replace(b"CartPoleEnv", b"CartPoleEnw", 1)  # in the pickled env
    assert altered != state
    plain_data.save(directory / "env.npz", [altered])

    loop, time_step, env_states = read_loop_state(directory, variables, windows)
    assert env_states is None and loop == {"steps": 100} and time_step is not None
    warnings = [r.getMessage() for r in caplog.records if "not loading" in r.getMessage()]
    assert len(warnings) == 1 and "env.npz" in warnings[0] and "altered" in warnings[0]

    trust.set_trusted(True)
    (loaded,) = read_loop_state(directory, variables, windows)[2]
    assert plain_data.loads(loaded)  # signed again: `set_state` takes it


def test_on_policy_carry_is_plain_data_and_an_old_pickle_needs_trust(tmp_path: Path, untrusted):
    spec = {"a": tf.TensorSpec([1, 1], tf.float32), "b": (tf.TensorSpec([1, 1, 2], tf.int32),)}
    carry = {"a": np.ones((1, 1), np.float32), "b": (np.arange(2, dtype=np.int32)[None, None],)}
    loop = SimpleNamespace(_carry=carry, agent=SimpleNamespace(collect_data_spec=spec))
    OnPolicyExperiment._save_extra(loop, tmp_path)
    loop._carry = None
    OnPolicyExperiment._restore_extra(loop, tmp_path)
    np.testing.assert_array_equal(loop._carry["b"][0], carry["b"][0])

    (tmp_path / "carry.npz").unlink()
    (tmp_path / "carry.pkl").write_bytes(pickle.dumps(TouchOnLoad(tmp_path / "marker")))
    OnPolicyExperiment._restore_extra(loop, tmp_path)
    assert loop._carry is None and not (tmp_path / "marker").exists()
    trust.set_trusted(True)
    OnPolicyExperiment._restore_extra(loop, tmp_path)
    assert (tmp_path / "marker").exists()  # the crafted pickle was real


# --- config.gin ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "import trust_marker",
        "from __gin__ import dynamic_registration",
        "include '/tmp/other.gin'",
        "from os import path",
    ],
)
def test_a_config_gin_that_would_run_code_is_refused(tmp_path: Path, line: str):
    config = tmp_path / "config.gin"
    config.write_text(f"load_gymnasium.env_id = 'CartPole-v1'\n{line}\n")
    with pytest.raises(UserError, match="line 2.*--trust_run_dir"):
        trust.check_run_config(config)


def test_the_config_gin_the_pipeline_writes_passes():
    trust.check_run_config(REPO / "tests" / "data" / "run_before_layout" / "config.gin")
