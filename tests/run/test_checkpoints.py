"""The pieces of resume on their own: checkpoint store, log truncation, saved RNG and state."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.environments import tf_py_environment
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import policy_step, trajectory
from tf_agents.trajectories import time_step as ts

import envs
from pipeline.agents.policies import EpsilonGreedyPolicy, UniformRandomPolicy
from pipeline.errors import UserError
from pipeline.replay.frame_stack import FrameStackReplay
from pipeline.replay.uniform import UniformReplay
from pipeline.run import files, metrics, rundir
from pipeline.run.checkpoints import (
    ENV_VERSIONS,
    MANIFEST,
    CheckpointError,
    CheckpointStore,
    read_loop_state,
    save_replay,
    verify,
    write_loop_state,
)

# --- the checkpoint store --------------------------------------------------------------


def writer(payload: str):
    def write(directory: Path) -> None:
        (directory / "sub").mkdir()
        (directory / "sub" / "data.txt").write_text(payload)

    return write


def reader(directory: Path, replay_intact: bool = True) -> str:
    return (directory / "sub" / "data.txt").read_text()


def test_store_keeps_the_newest_k_and_ignores_torn_writes(tmp_path: Path):
    store = CheckpointStore(tmp_path, keep=2)
    for step in (100, 200, 300):
        store.save(step, writer(f"at {step}"))
    assert [s for s, _ in store.complete()] == [300, 200]
    (tmp_path / "ckpt-000000000400").mkdir()  # renamed but unsealed cannot happen; still
    (tmp_path / ".ckpt-000000000500.partial").mkdir()  # a killed write
    assert store.load_latest(reader) == (300, "at 300")
    store.save(600, writer("at 600"))
    assert not list(tmp_path.glob(".ckpt-*.partial")), "torn writes are cleaned up"


def test_corrupt_latest_falls_back_with_a_warning_and_all_corrupt_is_an_error(tmp_path, caplog):
    store = CheckpointStore(tmp_path, keep=3)
    store.save(100, writer("at 100"))
    latest = store.save(200, writer("at 200"))
    (latest / "sub" / "data.txt").write_text("at 2O0")  # same size, other bytes
    assert store.load_latest(reader) == (100, "at 100")
    assert "does not match its checksum" in caplog.text and "falling back" in caplog.text
    # moved aside, named in the log, and no longer one of the `keep` slots
    assert (tmp_path / f"corrupt-{latest.name}").is_dir() and not latest.exists()
    assert f"corrupt-{latest.name}" in caplog.text
    assert [s for s, _ in store.complete()] == [100]

    store.save(300, writer("at 300"))
    (store.complete()[0][1] / "sub" / "data.txt").write_text("cut")
    (store.complete()[1][1] / "sub" / "data.txt").write_text("cut")
    with pytest.raises(UserError, match="no usable checkpoint"):
        store.load_latest(reader)
    assert [s for s, _ in store.complete()] == [300, 100], "nothing moves when none loads"


def test_a_failed_write_leaves_no_partial_and_keeps_the_previous(tmp_path: Path):
    store = CheckpointStore(tmp_path, keep=3)
    store.save(100, writer("at 100"))

    def disk_full(directory: Path) -> None:
        (directory / "half").write_text("x")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoints"):
        store.save(200, disk_full)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000000000100"]
    assert store.load_latest(reader) == (100, "at 100")


def test_manifest_lists_every_file_with_size_and_checksum(tmp_path: Path):
    def write(directory: Path) -> None:
        writer("payload")(directory)
        (directory / "empty").write_bytes(b"")

    path = CheckpointStore(tmp_path).save(7, write)
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["env_steps"] == 7
    on_disk = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    assert on_disk == [MANIFEST, "empty", "sub/data.txt"]
    assert manifest["files"] == {  # SHA-256 of the bytes, recomputed here
        "empty": {"size": 0, "sha256": hashlib.sha256(b"").hexdigest()},
        "sub/data.txt": {"size": 7, "sha256": hashlib.sha256(b"payload").hexdigest()},
    }
    assert verify(path) is None
    # One byte changed, the size kept: only the checksum can tell.
    (path / "sub" / "data.txt").write_bytes(b"paylOad")
    assert verify(path) == "sub/data.txt does not match its checksum"


# --- metrics.jsonl and TensorBoard after a resume --------------------------------------


def event_steps(folder: Path) -> list[tuple[str, int]]:
    found = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            found += [(value.tag, event.step) for value in event.summary.value]
    return found


def test_resume_drops_what_was_logged_after_the_checkpoint(tmp_path: Path):
    log = metrics.MetricsLog(tmp_path)
    for step in range(0, 1000, 100):
        log.scalars("train", {"loss": float(step)}, step)
        log.record({"env_steps": step, "value": step / 7})
    log.close()
    (tmp_path / "metrics.jsonl").open("a").write('{"env_steps": 1000, "val')  # a torn line

    log = metrics.MetricsLog(tmp_path, keep_until=500)
    for step in range(600, 800, 100):
        log.scalars("train", {"loss": -float(step)}, step)
        log.record({"env_steps": step, "value": step / 7})
    log.close()
    rows = metrics.read_rows(tmp_path)
    assert [row["env_steps"] for row in rows] == [0, 100, 200, 300, 400, 500, 600, 700]
    assert rows[3]["value"] == 300 / 7  # floats survive the rewrite exactly
    steps = event_steps(tmp_path / "train")
    assert steps == [("loss", s) for s in range(0, 800, 100)], steps


# --- state that must come back exactly ------------------------------------------------


def transition_spec(obs_shape=(3,), obs_dtype=tf.float32):
    obs = tensor_spec.TensorSpec(obs_shape, obs_dtype)
    step_spec = ts.time_step_spec(obs)
    action = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 1)
    return trajectory.from_transition(step_spec, policy_step.PolicyStep(action, (), ()), step_spec)


def fill(replay, spec, lanes: int, steps: int) -> None:
    rng = np.random.default_rng(0)
    for t in range(steps):
        step_type = np.full([lanes], 0 if t % 9 == 0 else 1, np.int32)
        next_step_type = np.full([lanes], 0 if (t + 1) % 9 == 0 else 1, np.int32)
        obs_spec = spec.observation
        obs = rng.integers(0, 255, [lanes, *obs_spec.shape]).astype(obs_spec.dtype.as_numpy_dtype)
        replay.add_batch(
            trajectory.Trajectory(
                step_type=tf.constant(step_type),
                observation=tf.constant(obs),
                action=tf.constant(rng.integers(0, 2, [lanes])),
                policy_info=(),
                next_step_type=tf.constant(next_step_type),
                reward=tf.constant(rng.normal(size=lanes).astype(np.float32)),
                discount=tf.ones([lanes]),
            )
        )


@pytest.mark.parametrize(
    "make, spec",
    [
        (UniformReplay, transition_spec()),
        (FrameStackReplay, transition_spec((6, 5, 4), tf.uint8)),
    ],
    ids=["uniform", "frame-stack"],
)
@pytest.mark.parametrize("contents", [True, False])
def test_replay_save_restore_continues_the_same_samples(tmp_path: Path, make, spec, contents):
    original = make(spec, 2, 60, seed=3)
    fill(original, spec, 2, 45)
    original.sample(8)  # move the RNG off its start
    original.save(tmp_path, contents=contents)
    restored = make(spec, 2, 60, seed=99)
    assert restored.restore(tmp_path) is contents
    if not contents:
        fill(restored, spec, 2, 45)
    for _ in range(3):
        a, b = original.sample(8), restored.sample(8)
        for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_policies_draw_only_from_their_generator(tmp_path: Path):
    env = envs.load_gymnasium(seed=0)
    tf_env = tf_py_environment.TFPyEnvironment(env)
    rng = tf.random.Generator.from_seed(1)
    random = UniformRandomPolicy(tf_env.time_step_spec(), tf_env.action_spec(), rng)
    time_step = tf_env.reset()
    actions = [int(random.action(time_step).action[0]) for _ in range(200)]
    assert set(actions) == {0, 1}

    class Always1(UniformRandomPolicy):
        def _action(self, time_step, policy_state, seed):
            return policy_step.PolicyStep(tf.ones([1], tf.int64), policy_state, ())

    greedy = Always1(tf_env.time_step_spec(), tf_env.action_spec(), rng)
    assert all(
        int(EpsilonGreedyPolicy(greedy, 0.0, rng).action(time_step).action[0]) == 1
        for _ in range(20)
    )
    explore = EpsilonGreedyPolicy(greedy, 1.0, rng)
    checkpoint = tf.train.Checkpoint(rng=rng)
    saved = checkpoint.write(str(tmp_path / "rng"))
    first = [int(explore.action(time_step).action[0]) for _ in range(50)]
    assert set(first) == {0, 1}
    checkpoint.read(saved)
    assert [int(explore.action(time_step).action[0]) for _ in range(50)] == first


def test_cartpole_state_round_trip_continues_the_episode():
    env = envs.load_gymnasium(seed=5)
    env.reset()
    for _ in range(7):
        env.step(np.int64(1))
    state = env.get_state()
    ahead = [env.step(np.int64(a)) for a in (0, 1, 0, 0, 1) * 20]
    other = envs.load_gymnasium(seed=123)
    other.reset()
    other.set_state(state)
    again = [other.step(np.int64(a)) for a in (0, 1, 0, 0, 1) * 20]
    for x, y in zip(ahead, again, strict=True):
        np.testing.assert_array_equal(x.observation, y.observation)
        assert x.step_type == y.step_type and x.discount == y.discount


def test_env_states_come_back_only_under_the_stack_that_pickled_them(tmp_path: Path, caplog):
    """A gymnasium upgrade between sessions must not restore 1.3's wrappers into 1.4."""
    env = envs.load_gymnasium(seed=5)
    env.reset()
    variables, windows = tf.train.Checkpoint(v=tf.Variable(3)), tf.train.Checkpoint()
    directory = tmp_path / "run" / "checkpoints" / "ckpt-000000000100"
    (directory / "tf").mkdir(parents=True)
    time_step = env.current_time_step()  # the envs are saved with the step they are at
    write_loop_state(directory, variables, windows, [env.get_state()], time_step, {"steps": 100})
    assert read_loop_state(directory, variables, windows)[2] == [env.get_state()]

    recorded = json.loads((directory / ENV_VERSIONS).read_text())
    (directory / ENV_VERSIONS).write_text(json.dumps({**recorded, "gymnasium": "0.1.0"}))
    loop, _, env_states = read_loop_state(directory, variables, windows)
    assert env_states is None and loop == {"steps": 100}
    assert "gymnasium 0.1.0 -> " in caplog.text and "new episodes start" in caplog.text

    # Checkpoints written before the versions were recorded fall back on run.json's.
    (directory / ENV_VERSIONS).unlink()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"versions": recorded}))
    assert read_loop_state(directory, variables, windows)[2] == [env.get_state()]
    (tmp_path / "run" / "run.json").write_text(json.dumps({"versions": {}}))
    assert read_loop_state(directory, variables, windows)[2] is None


# --- one process per run directory -----------------------------------------------------


def test_lock_refuses_a_second_holder_and_frees_when_its_process_dies(tmp_path: Path):
    lock = rundir.RunLock(tmp_path).acquire()
    with pytest.raises(UserError, match="in use by pid"):
        rundir.RunLock(tmp_path).acquire()
    lock.release()
    rundir.RunLock(tmp_path).acquire().release()

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pipeline.run import rundir; "
            f"lock = rundir.RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=f"pid {holder.pid}"):
        rundir.RunLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    rundir.RunLock(tmp_path).acquire().release()  # a killed holder leaves nothing stuck


def test_settings_are_compared_binding_by_binding():
    text = "# Parameters for train:\ntrain.a = 1\ntrain.b = [1,\n    2]\nQNetwork.x = (32,)\n"
    assert files.parse_config_str(text) == {
        "train.a": "1",
        "train.b": "[1,\n2]",
        "QNetwork.x": "(32,)",
    }


def test_frame_stack_checkpoints_link_the_chunks_they_did_not_change(tmp_path: Path):
    """Chunks unchanged since the newest checkpoint are hard links to its files, with its
    checksums; only changed chunks are written; the ring wraps; a restore is exact."""
    spec = transition_spec((6, 5, 4), tf.uint8)
    replay = FrameStackReplay(spec, batch_size=2, capacity=2 * 50, seed=3)
    replay.chunk_items = 8
    store = CheckpointStore(tmp_path / "checkpoints", keep=2)

    def save(steps: int) -> Path:
        return store.save(steps, lambda directory: save_replay(store, replay, directory, True))

    fill(replay, spec, 2, 30)  # chunks 0..3 (the last one partly filled)
    first = save(30)
    fill(replay, spec, 2, 3)  # items 30..32: chunk 3, then chunk 4 starts
    second = save(33)
    linked = {
        p.name for p in (second / "replay").glob("*.npy")
        if (first / "replay" / p.name).exists()
        and os.stat(p).st_ino == os.stat(first / "replay" / p.name).st_ino
    }  # fmt: skip
    assert {n.split(".")[1] for n in linked} == {"00000", "00001", "00002"}, sorted(linked)
    assert verify(second) is None, "the checksums handed over must be the files' own"

    fill(replay, spec, 2, 40)  # wraps the 50-item ring: chunks 0..6 all rewritten
    third = save(73)
    assert verify(third) is None
    restored = FrameStackReplay(spec, batch_size=2, capacity=2 * 50, seed=99)
    restored.chunk_items = 8
    assert restored.restore(third / "replay", sums=store.checksums(third, "replay/"))
    for _ in range(3):
        a, b = replay.sample_numpy(16), restored.sample_numpy(16)
        for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b), strict=True):
            np.testing.assert_array_equal(x, y)
    # The restored buffer knows its chunks are saved: its next checkpoint links them all.
    replay = restored
    fourth = save(74)
    chunks = sorted(p.name for p in (fourth / "replay").glob("*.npy"))
    assert chunks == sorted(p.name for p in (third / "replay").glob("*.npy")), chunks
    assert {n.split(".")[1] for n in chunks} == {f"{i:05d}" for i in range(7)}, chunks  # 50 / 8
    assert all(
        os.stat(fourth / "replay" / n).st_ino == os.stat(third / "replay" / n).st_ino
        for n in chunks
    )
