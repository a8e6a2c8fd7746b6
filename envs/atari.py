"""Atari with the standard DQN preprocessing, as TF-Agents environments (single and batched).

Protocol (Mnih et al. 2015, Machado et al. 2018): no-op starts, FIRE at reset where the game
has FIRE, 4-frame skip with a max over the last two raw frames, 84x84 grayscale (cv2
INTER_AREA), a 108k-frame cap as a truncation, and 4 stacked frames (channels last). In
training a lost life ends the TF-Agents episode (discount 0) and rewards are clipped to
their sign; evaluation sees whole games and true scores.

Two paths give the same time steps:
- `load_atari(num_envs=1)` and every evaluation env: `AtariDqnPreprocessing`, a gymnasium
  wrapper that drives `ale-py`'s ALE interface directly (no per-frame gymnasium step, the
  screen read into preallocated buffers), bridged by `GymnasiumEnvironment`.
- `load_atari(num_envs>1, training=True)`: `AtariBatchedEnvironment` in `envs.atari_vector`,
  over ale-py's C++ `AtariVectorEnv` (preprocessing in C++ threads).
Both stack frames with the same `envs.frame_stack.FrameStacker`.

What ale-py 0.12.1's C++ vector env does (src/ale/vector/, checked empirically too), and
which of it the single path mirrors frame for frame:
- Reset: reload the ROM when a seed is given (seeds go to the ALE and to a Mersenne twister
  for no-ops), `reset_game()`, then press FIRE for ONE frame if the action set has FIRE,
  then `max(0, U{0..noop_max-1} - 1)` one-frame NOOPs when FIRE was pressed (U{0..noop_max-1}
  otherwise), resetting the game if a NOOP ends it. So a Breakout reset spends 1..noop_max-1
  frames, FIRE included, before the first observation. Mirrored (our RNG is NumPy's).
- First observation: the current screen (maxed with an all-zero frame), stack [0, 0, 0, f0].
- Step: repeat the action `frame_skip` times; grayscale screens are grabbed after the last
  two frames and max-pooled; resize 210x160 -> 84x84 with `cv::INTER_AREA`. The loop stops
  early at game over or at the frame cap, and the result is then built from the stale frame
  buffers of the previous step (the max is written in place into buffer 0). Mirrored.
- Frame cap: counts frames of agent steps since the last real reset (reset frames excluded),
  truncates at `max_num_frames_per_episode` unless the step terminated. Mirrored.
- Rewards: the integer sum over the skipped frames, clamped to [-1, 1] when clipping.
- Life loss: `lives` dropped and is still > 0 (losing the last life is a game over).
  * `episodic_life=True` ENDS AND FULLY RESETS THE GAME on every life loss (checked: lives
    go 5 -> 4 -> back to 5 with the episode frame counter at 1), exactly like gymnasium's
    `AtariPreprocessing(terminal_on_life_loss=True)`: an agent trained that way only ever
    plays its first life. It also stops the frame skip at the life-losing frame.
  * `life_loss_info=True` reports `terminated` on the life loss but does not reset: the
    next step just continues the game with the agent's action (no NOOP, no FIRE).
  We want the Nature-DQN / Dopamine / SB3 semantics instead (the episode ends for learning,
  the game goes on), so the batched path uses `life_loss_info=True` and the step after a
  life loss is a pseudo-reset: one agent step of FIRE (NOOP for games without FIRE) whose
  reward is dropped, returned as FIRST with a fresh stack [0, 0, 0, f]. Without that FIRE a
  Breakout agent would have to learn to relaunch the ball, the problem FIRE-reset solves.
  Should the pseudo-reset step itself end the game or hit the cap, a real reset follows at
  once. The single path does exactly the same.
- NEXT_STEP autoreset: the step after a game over or truncation ignores the action and
  returns the reset observation with reward 0, not terminated: TF-Agents' FIRST.
"""

from __future__ import annotations

import difflib
import functools
import pickle
from typing import Any

import ale_py
import cv2
import gin
import gymnasium as gym
import numpy as np
from ale_py import roms
from tf_agents.environments import py_environment

from envs.frame_stack import FrameStacker
from envs.gym_bridge import GymnasiumEnvironment
from pipeline.errors import UnknownEnvError

gym.register_envs(ale_py)
# A quiet start: without this every ALE instance prints its version banner to stderr.
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)

RAW_SHAPE = (210, 160)  # every ALE game's screen, height x width
_FIRST_ONLY = np.ones(1, dtype=bool)
_NOT_FIRST = np.zeros(1, dtype=bool)


def _normalize(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


@functools.cache
def _games() -> dict[str, tuple[str, str]]:
    """Normalized name -> (gymnasium name as in ALE/<name>-v5, ROM id for the C++ env)."""
    rom_ids = {_normalize(rom): rom for rom in roms.get_all_rom_ids()}
    games = {}
    for env_id in gym.registry:
        if env_id.startswith("ALE/") and env_id.endswith("-v5"):
            name = env_id[len("ALE/") : -len("-v5")]
            if _normalize(name) in rom_ids:
                games[_normalize(name)] = (name, rom_ids[_normalize(name)])
    return games


def resolve_game(game: str) -> tuple[str, str]:
    """Returns (gymnasium name, ROM id) for `game` in any case ("Breakout", "ms_pacman").

    Fails with one line naming close matches when ALE has no such game.
    """
    games = _games()
    if _normalize(game) in games:
        return games[_normalize(game)]
    names = sorted(name for name, _ in games.values())
    matches = difflib.get_close_matches(game, names, n=3, cutoff=0.6)
    if not matches:
        matches = [games[k][0] for k in difflib.get_close_matches(_normalize(game), games, n=3)]
    hint = f"did you mean {', '.join(matches)}?" if matches else "see ale_py.roms.get_all_rom_ids()"
    raise UnknownEnvError(f"unknown Atari game {game!r}: {hint}")


def pseudo_reset_action(action_set: list[ale_py.Action]) -> int:
    """Index of FIRE (the life-loss pseudo-reset presses it) or of NOOP without FIRE."""
    if ale_py.Action.FIRE in action_set:
        return action_set.index(ale_py.Action.FIRE)
    return action_set.index(ale_py.Action.NOOP)


def noop_action(action_set: list[ale_py.Action]) -> int:
    """Index of NOOP: the pseudo-reset action when nothing presses FIRE for the agent."""
    return action_set.index(ale_py.Action.NOOP)


class AtariDqnPreprocessing(gym.Wrapper):
    """DQN preprocessing over an ale-py gymnasium env made with `frameskip=1`.

    Steps the ALE itself, frame by frame, exactly as ale-py's C++ vector env does (see the
    module docstring), and returns stacked `(size, size, stack)` uint8 observations.
    `terminated` is a game over, or a life loss when `terminal_on_life_loss`; after a life
    loss `reset()` (without a seed) continues the game with a FIRE pseudo-reset. `info`
    carries `lives`, `raw_reward` (before clipping) and `episode_frame_number`.
    """

    def __init__(
        self,
        env: gym.Env,
        *,
        noop_max: int = 30,
        frame_skip: int = 4,
        frame_stack: int = 4,
        screen_size: int = 84,
        terminal_on_life_loss: bool = True,
        clip_rewards: bool = True,
        max_episode_frames: int = 108_000,
        fire_on_reset: bool = True,
    ):
        super().__init__(env)
        if frame_skip < 1 or noop_max < 0 or screen_size < 1:
            raise ValueError(
                f"need frame_skip >= 1, noop_max >= 0, screen_size >= 1; got {frame_skip}, "
                f"{noop_max}, {screen_size}"
            )
        self._ale = env.unwrapped.ale
        self._action_set = list(env.unwrapped._action_set)
        self._fire_on_reset = fire_on_reset and ale_py.Action.FIRE in self._action_set
        if fire_on_reset:
            self._pseudo_reset_index = pseudo_reset_action(self._action_set)
        else:  # the agent must press FIRE itself, in training as in evaluation
            self._pseudo_reset_index = noop_action(self._action_set)
        self._noop_max = noop_max
        self._frame_skip = frame_skip
        self._size = (screen_size, screen_size)
        self._terminal_on_life_loss = terminal_on_life_loss
        self._clip_rewards = clip_rewards
        self._max_frames = max_episode_frames
        self._raw = np.zeros((2, *RAW_SHAPE), dtype=np.uint8)  # the last two raw screens
        self._frame = np.zeros((1, *self._size), dtype=np.uint8)
        self._stacker = FrameStacker(1, self._size, frame_stack)
        self._rng = np.random.default_rng()
        self._lives = 0
        self._elapsed_frames = 0
        self._continue_game = False  # True right after a life loss ended a training episode
        self.observation_space = gym.spaces.Box(
            0, 255, self._stacker.observation_shape, dtype=np.uint8
        )
        self.action_space = gym.spaces.Discrete(len(self._action_set))

    @property
    def ale(self) -> ale_py.ALEInterface:
        return self._ale

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything that decides the next steps: the emulator (RAM, CPU, TIA, its RNG for
        sticky actions) and this wrapper's buffers, frame stack, RNG and counters.

        One limit: ALE does not restore the "previous action" that a sticky action repeats
        when the state was cloned right after `reset_game()` with no no-op in between, so a
        sticky-action game checkpointed exactly there may diverge at its first step.
        """
        return {
            "ale": pickle.dumps(self._ale.cloneState(include_rng=True)),
            "raw": self._raw.copy(),
            "frame": self._frame.copy(),
            "stacker": self._stacker.get_state(),
            "rng": self._rng.bit_generator.state,
            "lives": self._lives,
            "elapsed_frames": self._elapsed_frames,
            "continue_game": self._continue_game,
        }

    def restore_checkpoint_state(self, state: dict[str, Any]) -> None:
        self._ale.restoreState(pickle.loads(state["ale"]))
        self._raw[...] = state["raw"]
        self._frame[...] = state["frame"]
        self._stacker.set_state(state["stacker"])
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]
        self._lives = int(state["lives"])
        self._elapsed_frames = int(state["elapsed_frames"])
        self._continue_game = bool(state["continue_game"])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """A real reset, or after a training life loss (and no seed) a FIRE pseudo-reset."""
        if seed is None and self._continue_game:
            _, terminated, truncated = self._act(self._pseudo_reset_index)
            if not (terminated or truncated):
                return self._observe(_FIRST_ONLY), self._info(0.0)
            # The pseudo-reset step itself ended the game or hit the cap: reset for real.
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.env.reset(seed=seed, options=options)  # seeds and reloads the ALE, reset_game()
        ale = self._ale
        noops = int(self._rng.integers(self._noop_max)) if self._noop_max > 0 else 0
        if self._fire_on_reset:
            ale.act(ale_py.Action.FIRE)
            noops -= 1
        for _ in range(noops):
            ale.act(ale_py.Action.NOOP)
            if ale.game_over(with_truncation=False):
                ale.reset_game()
        ale.getScreenGrayscale(self._raw[0])
        self._raw[1] = 0
        self._lives = ale.lives()
        self._elapsed_frames = 0
        self._continue_game = False
        return self._observe(_FIRST_ONLY), self._info(0.0)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        raw_reward, terminated, truncated = self._act(action)
        reward = float(np.sign(raw_reward)) if self._clip_rewards else float(raw_reward)
        return self._observe(_NOT_FIRST), reward, terminated, truncated, self._info(raw_reward)

    def _act(self, action: int) -> tuple[float, bool, bool]:
        """One agent step: frame skip, the last two screens kept; returns (reward, ends)."""
        ale, raw = self._ale, self._raw
        ale_action = self._action_set[action]
        reward = 0
        game_over = False
        for skip in range(self._frame_skip, 0, -1):
            reward += ale.act(ale_action)
            game_over = ale.game_over(with_truncation=False)
            self._elapsed_frames += 1
            if game_over or self._elapsed_frames >= self._max_frames:
                break  # as in C++: the observation then comes from stale buffers
            if skip <= 2:
                ale.getScreenGrayscale(raw[skip - 1])
        lives = ale.lives()
        life_lost = 0 < lives < self._lives
        self._lives = lives
        terminated = game_over or (self._terminal_on_life_loss and life_lost)
        truncated = self._elapsed_frames >= self._max_frames and not terminated
        # Only a life loss that left the game running (not over, not capped) continues it.
        self._continue_game = (
            terminated and not game_over and self._elapsed_frames < self._max_frames
        )
        return float(reward), terminated, truncated

    def _observe(self, first: np.ndarray) -> np.ndarray:
        np.maximum(self._raw[0], self._raw[1], out=self._raw[0])
        cv2.resize(self._raw[0], self._size, dst=self._frame[0], interpolation=cv2.INTER_AREA)
        return self._stacker.push(self._frame, first)[0]

    def _info(self, raw_reward: float) -> dict[str, Any]:
        return {
            "lives": self._lives,
            "raw_reward": raw_reward,
            "episode_frame_number": self._ale.getEpisodeFrameNumber(),
        }


@gin.configurable(denylist=["seed", "training"])
def load_atari(
    game: str = "Breakout",
    seed: int | None = None,
    training: bool = True,
    *,
    num_envs: int = 1,
    sticky_action_prob: float = 0.0,
    noop_max: int = 30,
    frame_skip: int = 4,
    frame_stack: int = 4,
    screen_size: int = 84,
    terminal_on_life_loss: bool = True,
    clip_rewards: bool = True,
    max_episode_frames: int = 108_000,
    fire_on_reset: bool = True,
    full_action_space: bool = False,
    num_threads: int = 0,
    render_mode: str | None = None,
) -> py_environment.PyEnvironment:
    """Makes an Atari game with DQN preprocessing as a TF-Agents environment.

    `training=False` (evaluation) turns off life-loss termination and reward clipping, so
    evaluation returns are true game scores over all lives. `num_envs > 1` applies to the
    training env only and gives one batched env (`batch_size=num_envs`) over ale-py's C++
    vector env in `num_threads` threads (0: ale-py's default, one per core), sub-env i
    seeded `seed + i`; evaluation envs are always single, because the evaluator plays several
    of them side by side. `render_mode` goes to the single env's gymnasium env (videos).

    Observations are (screen_size, screen_size, frame_stack) uint8, channels last, zero
    padded at every FIRST step (see `envs.frame_stack`). The default protocol is that of
    `BreakoutNoFrameskip-v4` (no sticky actions, as Nature DQN, CleanRL and SB3); bind
    `load_atari.sticky_action_prob = 0.25` for Machado et al. 2018's protocol (ALE v5, as
    Dopamine). `max_episode_frames` counts emulator frames (108k = 30 minutes of play).
    `fire_on_reset=False` presses no FIRE at resets nor after a training life loss (a NOOP
    step then starts the next episode), as Dopamine's Atari-100k protocol: the agent learns to
    launch the ball itself, which evaluation (no life-loss episodes) needs at low epsilon.
    An unknown `game` fails with a one-line `UnknownEnvError` naming close matches.
    """
    name, _ = resolve_game(game)
    options = dict(
        noop_max=noop_max,
        frame_skip=frame_skip,
        frame_stack=frame_stack,
        screen_size=screen_size,
        terminal_on_life_loss=terminal_on_life_loss and training,
        clip_rewards=clip_rewards and training,
        max_episode_frames=max_episode_frames,
    )
    if training and num_envs > 1:
        from envs.atari_vector import AtariBatchedEnvironment

        return AtariBatchedEnvironment(
            game,
            num_envs,
            seed=seed,
            sticky_action_prob=sticky_action_prob,
            full_action_space=full_action_space,
            fire_on_reset=fire_on_reset,
            num_threads=num_threads,
            **options,
        )
    env = gym.make(
        f"ALE/{name}-v5",
        frameskip=1,
        repeat_action_probability=sticky_action_prob,
        full_action_space=full_action_space,
        max_num_frames_per_episode=None,  # the wrapper counts frames as the C++ env does
        render_mode=render_mode,
        disable_env_checker=True,
    )
    return GymnasiumEnvironment(
        AtariDqnPreprocessing(env, fire_on_reset=fire_on_reset, **options), seed=seed
    )
