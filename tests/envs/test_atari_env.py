"""Atari environments: DQN preprocessing semantics, single and batched paths alike."""

from __future__ import annotations

import ale_py
import numpy as np
import pytest
from tf_agents.environments import utils as env_utils
from tf_agents.trajectories.time_step import StepType

import envs
from envs.atari.options import Preprocessing

NOOP, FIRE = 0, 1  # Breakout's minimal action set: NOOP, FIRE, RIGHT, LEFT
FIRST, MID, LAST = int(StepType.FIRST), int(StepType.MID), int(StepType.LAST)


class Lane:
    """Drives lane 0 of a batched env like a single env, so one test checks both paths."""

    def __init__(self, env):
        self.env = env

    def reset(self):
        return _lane0(self.env.reset())

    def step(self, action):
        return _lane0(self.env.step(np.full(self.env.batch_size, action, dtype=np.int64)))

    @property
    def lives(self):
        return int(self.env.last_info["lives"][0])

    @property
    def raw_reward(self):
        return float(self.env.last_info["raw_reward"][0])


class Single:
    def __init__(self, env):
        self.env = env

    def reset(self):
        return self.env.reset()

    def step(self, action):
        return self.env.step(np.int64(action))

    @property
    def lives(self):
        return self.env.last_info["lives"]

    @property
    def raw_reward(self):
        return self.env.last_info["raw_reward"]


def _lane0(time_step):
    return type(time_step)(*(np.asarray(x)[0] for x in time_step))


def make(path: str, game: str = "Breakout", **kwargs):
    """One game through the single path or lane 0 of a 2-env batched path."""
    if path == "single":
        return Single(envs.load_atari(game, **kwargs))
    training = kwargs.pop("training", True)
    if not training:  # the loader keeps evaluation single; build the batched env directly
        kwargs.update(terminal_on_life_loss=False, clip_rewards=False)
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in Preprocessing.names()}
    return Lane(
        envs.AtariBatchedEnvironment(
            game, 2, options=Preprocessing(**options), num_threads=1, **kwargs
        )
    )


def play(env, actions):
    """Resets, then plays `actions`; returns the time steps, lives and raw rewards."""
    steps, lives, raw = [env.reset()], [env.lives], [env.raw_reward]
    for action in actions:
        steps.append(env.step(action))
        lives.append(env.lives)
        raw.append(env.raw_reward)
    return steps, lives, raw


PATHS = ["single", "batched"]


def test_specs_and_observations():
    single = envs.load_atari(seed=0)
    batched = envs.load_atari(seed=0, num_envs=3, num_threads=1)
    for env in (single, batched):
        obs_spec, action_spec = env.observation_spec(), env.action_spec()
        assert obs_spec.shape == (84, 84, 4) and obs_spec.dtype == np.uint8
        assert np.all(obs_spec.minimum == 0) and np.all(obs_spec.maximum == 255)
        assert action_spec.shape == () and action_spec.dtype == np.int64
        assert (action_spec.minimum, action_spec.maximum) == (0, 3)
    assert single.observation_spec() == batched.observation_spec()
    assert single.action_spec() == batched.action_spec()
    assert not single.batched and single.reset().observation.shape == (84, 84, 4)
    assert batched.batched and batched.batch_size == 3
    first = batched.reset()
    assert first.observation.shape == (3, 84, 84, 4) and first.observation.dtype == np.uint8
    assert first.step_type.dtype == np.int32 and first.reward.dtype == np.float32
    assert first.discount.dtype == np.float32
    # Evaluation envs are always single, whatever num_envs says.
    assert not envs.load_atari(seed=0, training=False, num_envs=3).batched


@pytest.mark.parametrize("training", [True, False])
def test_passes_tf_agents_validation(training):
    env_utils.validate_py_environment(envs.load_atari(seed=0, training=training), episodes=2)


def test_batched_passes_tf_agents_validation():
    env = envs.load_atari(seed=0, num_envs=2, num_threads=1)
    env_utils.validate_py_environment(env, episodes=3)


@pytest.mark.parametrize("path", PATHS)
def test_life_loss_ends_the_training_episode_and_the_game_goes_on(path):
    # NOOP only: the ball is in play solely because of the FIRE at reset and at each
    # life-loss pseudo-reset, so every life is lost and the game ends after five LASTs.
    steps, lives, _ = play(make(path, seed=0, noop_max=0), [NOOP] * 400)
    types = [int(s.step_type) for s in steps]
    lasts = [t for t, k in enumerate(types) if k == LAST]
    assert len(lasts) >= 6
    assert [lives[t] for t in lasts[:6]] == [4, 3, 2, 1, 0, 4]
    for t in lasts:
        assert float(steps[t].discount) == 0.0
        assert types[t + 1] == FIRST and float(steps[t + 1].reward) == 0.0
        assert float(steps[t + 1].discount) == 1.0
    # The pseudo-reset keeps the lives left (no new game); the game over brings a new one.
    assert [lives[t + 1] for t in lasts[:5]] == [4, 3, 2, 1, 5]
    assert all(
        k == MID for t, k in enumerate(types[1:], 1) if t not in lasts and t - 1 not in lasts
    )


@pytest.mark.parametrize("path", PATHS)
def test_evaluation_plays_all_lives_in_one_episode(path):
    # FIRE only: the agent relaunches the ball itself, as an evaluated agent must.
    steps, lives, _ = play(make(path, seed=0, noop_max=0, training=False), [FIRE] * 400)
    types = [int(s.step_type) for s in steps]
    end = types.index(LAST)
    assert set(types[1:end]) == {MID} and lives[end - 1] == 1 and lives[end] == 0
    assert float(steps[end].discount) == 0.0
    assert sorted(set(lives[: end + 1]), reverse=True) == [5, 4, 3, 2, 1, 0]
    assert types[end + 1] == FIRST and lives[end + 1] == 5


@pytest.mark.parametrize("path", PATHS)
def test_evaluation_does_not_press_fire_after_a_life_loss(path):
    steps, lives, _ = play(make(path, seed=0, noop_max=0, training=False), [NOOP] * 200)
    assert {int(s.step_type) for s in steps[1:]} == {MID} and lives[-1] == 4


def test_without_fire_on_reset_the_agent_launches_the_ball_itself():
    # Dopamine's Atari-100k protocol: no FIRE at reset nor after a training life loss.
    env = make("single", seed=0, noop_max=0, fire_on_reset=False)
    steps, lives, _ = play(env, [NOOP] * 300)
    assert lives[-1] == 5 and LAST not in {int(s.step_type) for s in steps}  # ball never served
    steps, lives, _ = play(env, [FIRE] + [NOOP] * 300)
    lost = [i for i, s in enumerate(steps) if int(s.step_type) == LAST]
    assert lost and lives[lost[0]] == 4  # served once, then missed
    assert lives[-1] == 4  # the pseudo-reset pressed NOOP: the next ball is never served


def test_reset_mid_episode_starts_a_new_game():
    # Only the reset that directly follows a life-loss LAST continues the game.
    env = make("single", seed=0, noop_max=0)
    steps, lives, _ = play(env, [NOOP] * 30)
    assert int(steps[24].step_type) == LAST and lives[24] == 4 and lives[-1] == 4
    env.reset()
    assert env.lives == 5


def test_breakout_without_fire_never_launches_the_ball():
    # The premise of the FIRE checks above: with NOOPs alone and no FIRE, no life is lost.
    env = envs.load_atari(seed=0)
    env.reset()
    ale = env.gym_env.ale
    ale.reset_game()
    for _ in range(800):
        ale.act(ale_py.Action.NOOP)
    assert ale.lives() == 5 and not ale.game_over()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("training", [True, False])
def test_rewards_are_clipped_in_training_only(path, training):
    # Space Invaders pays 5-30 points per alien, so random play soon scores above 1.
    actions = np.random.default_rng(0).integers(6, size=300)
    steps, _, raw = play(make(path, "SpaceInvaders", seed=0, training=training), actions)
    rewards = np.array([float(s.reward) for s in steps])
    raw = np.array(raw)
    assert raw.max() > 1
    np.testing.assert_array_equal(rewards, np.sign(raw) if training else raw)


@pytest.mark.parametrize("path", PATHS)
def test_frame_stack_zero_padded_at_every_first_and_continuous_within(path):
    actions = np.random.default_rng(1).integers(4, size=300)
    steps, _, _ = play(make(path, seed=3), actions)
    firsts = 0
    for prev, step in zip([None, *steps], steps, strict=False):
        obs = step.observation
        if int(step.step_type) == FIRST:
            firsts += 1
            assert not obs[..., :3].any() and obs[..., 3].any()
        else:
            np.testing.assert_array_equal(obs[..., :3], prev.observation[..., 1:])
    assert firsts >= 4  # the reset and several life-loss pseudo-resets


@pytest.mark.parametrize("path", PATHS)
def test_frame_cap_is_a_truncation_with_discount_kept(path):
    # 200 frames = 50 agent steps, less than a life lasts with the ball in play.
    steps, lives, _ = play(make(path, seed=0, training=False, max_episode_frames=200), [2] * 60)
    types = [int(s.step_type) for s in steps]
    assert types.index(LAST) == 50 and float(steps[50].discount) == 1.0
    assert types[51] == FIRST and lives[51] == 5


def _trajectory(env, actions):
    steps, _, _ = play(env, actions)
    return np.stack([s.observation for s in steps]), [int(s.step_type) for s in steps]


def test_same_seed_same_trajectory_other_seed_differs():
    kwargs = dict(sticky_action_prob=0.25, noop_max=30)
    actions = np.random.default_rng(2).integers(4, size=60)
    first = _trajectory(make("single", seed=7, **kwargs), actions)
    again = _trajectory(make("single", seed=7, **kwargs), actions)
    other = _trajectory(make("single", seed=8, **kwargs), actions)
    np.testing.assert_array_equal(first[0], again[0])
    assert first[1] == again[1] and not np.array_equal(first[0], other[0])
    batched = [_trajectory(make("batched", seed=7, **kwargs), actions) for _ in range(2)]
    np.testing.assert_array_equal(batched[0][0], batched[1][0])


def test_seed_method_makes_the_next_reset_a_seeded_real_reset():
    kwargs = dict(sticky_action_prob=0.25, noop_max=30)
    env = envs.load_atari(seed=1, training=False, **kwargs)
    env.reset()
    for _ in range(30):
        env.step(np.int64(FIRE))
    env.seed(7)
    after_seed = [env.reset().observation] + [env.step(np.int64(2)).observation for _ in range(40)]
    fresh = envs.load_atari(seed=7, training=False, **kwargs)
    expected = [fresh.reset().observation] + [
        fresh.step(np.int64(2)).observation for _ in range(40)
    ]
    np.testing.assert_array_equal(np.stack(after_seed), np.stack(expected))


def run_both_paths(actions: np.ndarray, **kwargs) -> list[tuple[int, int]]:
    """Plays `actions` (steps, lanes) on a batched env and on one single env per lane,
    asserts both give the same time steps; returns the (step type, lives) pairs seen."""
    batched = envs.load_atari(seed=0, num_envs=actions.shape[1], num_threads=1, **kwargs)
    singles = [envs.load_atari(seed=0, **kwargs) for _ in range(actions.shape[1])]
    batch_step = batched.reset()
    single_steps = [env.reset() for env in singles]
    seen = []
    for t in range(len(actions) + 1):
        for lane, single_step in enumerate(single_steps):
            for field in ("step_type", "reward", "discount", "observation"):
                np.testing.assert_array_equal(
                    getattr(batch_step, field)[lane],
                    getattr(single_step, field),
                    err_msg=f"{field} differs at step {t} in lane {lane}",
                )
            assert batched.last_info["lives"][lane] == singles[lane].last_info["lives"]
            seen.append((int(single_step.step_type), singles[lane].last_info["lives"]))
        if t < len(actions):
            batch_step = batched.step(actions[t])
            single_steps = [
                env.step(np.int64(a)) for env, a in zip(singles, actions[t], strict=True)
            ]
    return seen


def test_batched_path_matches_the_single_path_step_for_step():
    # Without no-ops or sticky actions the ALE is deterministic, and both paths run the same
    # frame-level algorithm (same OpenCV INTER_AREA resize), so they agree exactly, with no
    # tolerance: observations, rewards, step types and discounts, across life losses, a game
    # over and the resets that follow.
    actions = np.random.default_rng(4).integers(4, size=(350, 2))
    seen = run_both_paths(actions, noop_max=0)
    assert (LAST, 4) in seen and (LAST, 0) in seen and (FIRST, 5) in seen


def test_both_paths_agree_without_fire_on_reset():
    # The Atari-100k protocol: nothing presses FIRE; the agent serves (action 1) itself.
    actions = np.random.default_rng(5).integers(4, size=(350, 2))
    seen = run_both_paths(actions, noop_max=0, fire_on_reset=False)
    assert (LAST, 4) in seen and (FIRST, 4) in seen


def test_pseudo_reset_that_reaches_the_frame_cap_becomes_a_real_reset():
    # NOOP loses the first life on frame 96 (step 24); the FIRE pseudo-reset step then
    # reaches the 98-frame cap, so both paths restart the game instead.
    actions = np.zeros((40, 2), dtype=np.int64)
    seen = run_both_paths(actions, noop_max=0, max_episode_frames=98)
    assert seen[2 * 23 :: 2][:4] == [(MID, 5), (LAST, 4), (FIRST, 5), (MID, 5)]  # lane 0


def test_game_names_resolve_and_unknown_names_fail_in_one_line():
    assert envs.resolve_game("ms_pacman") == ("MsPacman", "ms_pacman")
    assert envs.resolve_game("breakout") == ("Breakout", "breakout")
    with pytest.raises(envs.UnknownEnvError, match="did you mean Breakout") as info:
        envs.resolve_game("Breakou")
    assert "\n" not in str(info.value)  # gin appends its context after a newline
    with pytest.raises(envs.UnknownEnvError, match="^unknown Atari game 'Breakou'"):
        envs.load_atari("Breakou")
    with pytest.raises(envs.UnknownEnvError):
        envs.load_atari("NoSuchGameAtAll", num_envs=4)


@pytest.mark.parametrize("stack_size", [4, 3])
def test_frame_stacker_matches_a_plain_reference(stack_size):
    # stack_size 4 takes the packed uint32 path, 3 the generic one.
    rng = np.random.default_rng(0)
    stacker = envs.FrameStacker(3, (5, 6), stack_size)
    reference = np.zeros((3, 5, 6, stack_size), dtype=np.uint8)
    returned, expected = [], []
    for t in range(12):
        frames = rng.integers(0, 256, size=(3, 5, 6), dtype=np.uint8)
        first = np.ones(3, bool) if t == 0 else rng.random(3) < 0.3
        reference = np.concatenate([reference[..., 1:], frames[..., None]], axis=-1)
        reference[first, ..., :-1] = 0
        returned.append(stacker.push(frames, None if t == 0 else first))
        expected.append(reference)
    # Checked at the end: later pushes must not have changed what was returned earlier.
    np.testing.assert_array_equal(np.stack(returned), np.stack(expected))
