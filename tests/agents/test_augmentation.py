"""DrQ augmentation: what it does to an image, that only training batches get it, and resume.

The Breakout test is the issue's end-to-end check: drq_breakout.gin's path (10-step windows,
augmentation, double Q, dueling head) trains on real ALE experience that holds life losses and
a game over, a checkpoint taken mid-way continues bit for bit, and the policies never see an
augmented frame.
"""

from __future__ import annotations

from pathlib import Path

import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from pipeline import config
from pipeline.agents.augmentation import (
    AUGMENTATION_SEED_OFFSET,
    RandomShiftIntensity,
    shift_images,
)
from pipeline.loops.off_policy import Experiment


def shifted(image: np.ndarray, dy: int, dx: int, pad: int) -> np.ndarray:
    """Reference: pad by edge replication, crop at offset (dy, dx) of the padded image."""
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    h, w = image.shape[:2]
    return padded[dy : dy + h, dx : dx + w]


def test_random_shift_is_an_edge_padded_crop_within_the_pad():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 12, 10, 3), dtype=np.uint8)
    aug = RandomShiftIntensity(seed=1, pad=4, intensity_scale=0.0)
    out = aug.images(tf.constant(images)).numpy()
    assert out.shape == images.shape and out.dtype == np.uint8
    offsets = set()
    for image, got in zip(images, out, strict=True):
        matches = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if np.array_equal(shifted(image, dy, dx, 4), got)
        ]
        assert matches, "every output is the input shifted by at most 4 pixels per axis"
        offsets.add(matches[0])
    assert len(offsets) > 20  # offsets are drawn per image


@pytest.mark.parametrize("shape", [(81, 12, 10, 3), (81, 7, 9, 1), (81, 6, 6, 4), (81, 5, 8, 2)])
def test_shift_is_the_padded_crop_at_the_given_offsets_for_any_pixel_size(shape):
    """The fast path packs a pixel's channels into one element (int32 for 4 uint8 channels,
    np.void for 3): every offset pair 0..8 x 0..8, corners included, is np.pad's crop."""
    images = np.random.default_rng(9).integers(0, 256, shape, dtype=np.uint8)
    offsets = np.array([(dy, dx) for dy in range(9) for dx in range(9)], np.int32)
    out = shift_images(tf.constant(images), tf.constant(offsets), pad=4).numpy()
    for image, (dy, dx), got in zip(images, offsets, out, strict=True):
        np.testing.assert_array_equal(got, shifted(image, dy, dx, 4))


def test_intensity_scales_each_image_by_one_factor_within_ten_percent():
    images = np.full((256, 6, 6, 4), 200, np.uint8)
    out = RandomShiftIntensity(seed=2, pad=0).images(tf.constant(images)).numpy()
    assert out.dtype == np.uint8
    per_image = out.reshape(256, -1)
    assert np.all(per_image == per_image[:, :1])  # one factor per image
    factors = per_image[:, 0] / 200.0
    assert factors.min() >= 0.9 - 1e-3 and factors.max() <= 1.1 + 1e-3
    assert factors.std() > 0.02  # 0.05 x a clipped standard normal
    # Bright pixels clip at 255 rather than wrap.
    bright = RandomShiftIntensity(seed=3, pad=0).images(tf.fill([64, 2, 2, 1], tf.uint8.max))
    assert bright.numpy().min() >= 229


def test_observation_and_bootstrap_observation_are_augmented_independently():
    images = np.random.default_rng(4).integers(0, 256, (32, 16, 16, 2), dtype=np.uint8)
    step = ts.TimeStep(
        step_type=tf.zeros([32], tf.int32),
        reward=tf.zeros([32]),
        discount=tf.ones([32]),
        observation=tf.constant(images),
    )
    transition = trajectory.Transition(step, (), step)
    out = RandomShiftIntensity(seed=5)(transition)
    first, last = out.time_step.observation.numpy(), out.next_time_step.observation.numpy()
    assert first.shape == images.shape
    assert sum(not np.array_equal(a, b) for a, b in zip(first, last, strict=True)) > 28
    # A [n, T, ...] window: positions 0 and T-1 change, the ones between do not.
    window = tf.constant(np.stack([images, images, images], axis=1))
    traj = trajectory.Trajectory((), window, (), (), (), (), ())
    got = RandomShiftIntensity(seed=5)(traj).observation.numpy()
    np.testing.assert_array_equal(got[:, 1], images)
    assert not np.array_equal(got[:, 0], images) and not np.array_equal(got[:, 2], images)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="pad must be >= 0"):
        RandomShiftIntensity(pad=-1)
    with pytest.raises(ValueError, match="intensity_scale must be >= 0"):
        RandomShiftIntensity(intensity_scale=-0.1)


BREAKOUT_BINDINGS = [
    "train.total_env_steps=100_000",
    "train.initial_collect_steps=1_200",  # random play: life losses and game overs
    "train.replay_capacity=5_000",
    "train.eval_episodes=1",
    "train.final_eval_episodes=1",
    "load_atari.max_episode_frames=4_000",
]


def build(root: Path) -> Experiment:
    gin.clear_config()
    config.parse(["drq_breakout.gin"], BREAKOUT_BINDINGS)
    return Experiment(root)


def variables(run: Experiment) -> list[np.ndarray]:
    return [v.numpy() for v in run.agent.trainable_variables]


def test_breakout_drq_updates_resume_bit_for_bit_and_policies_see_raw_frames(tmp_path: Path):
    run = build(tmp_path / "a")
    assert run.window_steps == 11 and run.augmentation is not None
    run.collect_random(1_200)
    step_types = run.replay._step_types[0, :1_200]
    discounts = run.replay._fields[[f for f, _, _ in run.replay._leaves].index("discount")]
    lasts = np.flatnonzero(step_types == int(ts.StepType.LAST))
    assert len(lasts) >= 5 and np.all(discounts[0, lasts - 1] == 0)  # life losses, game overs
    # Cut windows are what the update trains on: many end (discount 0) before 10 steps.
    sample = run.replay.sample_transition(256)
    assert np.mean(sample.next_time_step.discount.numpy() == 0) > 0.1

    # Collection and evaluation draw nothing from the augmentation stream; training does.
    before = run.augmentation.rng.state.numpy().copy()
    run._collect(run._collect_policy, 20)
    run.evaluator.run(run.eval_policy_at(0), episodes=1)
    np.testing.assert_array_equal(run.augmentation.rng.state.numpy(), before)
    # The collect policy acts on the env's frames: its greedy choice is argmax Q(raw stack).
    raw = run.replay.sample_numpy(8).observation[:, 0]
    q_values, _ = run.agent._q_network(tf.constant(raw))
    greedy = run.agent.policy.action(ts.restart(tf.constant(raw), batch_size=8)).action.numpy()
    np.testing.assert_array_equal(greedy, np.argmax(q_values.numpy(), axis=1))

    run.train_updates(tf.constant(3, tf.int64))
    assert not np.array_equal(run.augmentation.rng.state.numpy(), before)
    checkpoint = tmp_path / "ckpt"
    (checkpoint / "tf").mkdir(parents=True)
    run._write_checkpoint(checkpoint)
    expected_loss = float(run.train_updates(tf.constant(4, tf.int64)))
    expected = variables(run)
    run.evaluator.close()
    run.train_env.close()

    resumed = build(tmp_path / "b")
    resumed._read_checkpoint(checkpoint)
    assert float(resumed.train_updates(tf.constant(4, tf.int64))) == expected_loss
    for ours, theirs in zip(variables(resumed), expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    resumed.evaluator.close()
    resumed.train_env.close()


def test_draws_and_formula_are_pinned():
    """The generator is read as shifts `[n, 2]` in 0..2*pad, then factors `[n, 1, 1, 1]`: the
    runs reported on docs/results.md were augmented so, and their resumes must be too."""
    images = np.random.default_rng(6).integers(0, 256, (16, 84, 84, 4), dtype=np.uint8)
    aug = RandomShiftIntensity(seed=7)
    got = aug.images(tf.constant(images)).numpy()
    rng = tf.random.Generator.from_seed(7 + AUGMENTATION_SEED_OFFSET)
    shifts = rng.uniform([16, 2], 0, 9, dtype=tf.int32).numpy()
    noise = np.clip(rng.normal([16, 1, 1, 1]).numpy(), -2.0, 2.0)
    for image, (dy, dx), z, out in zip(images, shifts, noise, got, strict=True):
        scaled = shifted(image, dy, dx, 4).astype(np.float32) * np.float32(1.0 + 0.05 * z)
        np.testing.assert_array_equal(out, np.round(np.clip(scaled, 0, 255)).astype(np.uint8))
