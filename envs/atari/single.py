"""The single-env Atari path: DQN preprocessing over ALE's interface (see `envs.atari`)."""

from __future__ import annotations

import pickle
from typing import Any

import ale_py
import cv2
import gymnasium as gym
import numpy as np

from envs.atari.games import RAW_SHAPE, noop_action, pseudo_reset_action
from envs.atari.options import Preprocessing
from envs.frame_stack import FrameStacker
from pipeline.run.plain_data import Pickled

_FIRST_ONLY = np.ones(1, dtype=bool)
_NOT_FIRST = np.zeros(1, dtype=bool)


class AtariDqnPreprocessing(gym.Wrapper):
    """DQN preprocessing over an ale-py gymnasium env made with `frameskip=1`.

    Steps the ALE itself, frame by frame, exactly as ale-py's C++ vector env does (see the
    module docstring), and returns stacked `(size, size, stack)` uint8 observations.
    `terminated` is a game over, or a life loss when `terminal_on_life_loss`; after a life
    loss `reset()` (without a seed) continues the game with a FIRE pseudo-reset. `info`
    carries `lives`, `raw_reward` (before clipping) and `episode_frame_number`.
    """

    def __init__(self, env: gym.Env, options: Preprocessing = Preprocessing()):
        super().__init__(env)
        self._ale = env.unwrapped.ale
        self._action_set = list(env.unwrapped._action_set)
        fire_on_reset = options.fire_on_reset
        self._fire_on_reset = fire_on_reset and ale_py.Action.FIRE in self._action_set
        if fire_on_reset:
            self._pseudo_reset_index = pseudo_reset_action(self._action_set)
        else:  # the agent must press FIRE itself, in training as in evaluation
            self._pseudo_reset_index = noop_action(self._action_set)
        self._noop_max = options.noop_max
        self._frame_skip = options.frame_skip
        self._size = (options.screen_size, options.screen_size)
        self._terminal_on_life_loss = options.terminal_on_life_loss
        self._clip_rewards = options.clip_rewards
        self._max_frames = options.max_episode_frames
        self._raw = np.zeros((2, *RAW_SHAPE), dtype=np.uint8)  # the last two raw screens
        self._frame = np.zeros((1, *self._size), dtype=np.uint8)
        self._stacker = FrameStacker(1, self._size, options.frame_stack)
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

        Plain data only (ALE serializes its state to bytes, the RNG's state is a dict of
        ints), so a checkpoint holds no pickle for this env.
        """
        return {
            "ale": self._ale.cloneState(include_rng=True).serialize(),
            "raw": self._raw.copy(),
            "frame": self._frame.copy(),
            "stacker": self._stacker.get_state(),
            "rng": self._rng.bit_generator.state,
            "lives": self._lives,
            "elapsed_frames": self._elapsed_frames,
            "continue_game": self._continue_game,
        }

    def restore_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Restores `checkpoint_state()`'s result. Its "ale" is ALE's serialized state; in a
        checkpoint written before pickles were signed it was a pickle, which arrives here
        only as a `Pickled` the user trusted (see `GymnasiumEnvironment.set_state`)."""
        ale = state["ale"]
        if isinstance(ale, Pickled):
            ale_state = pickle.loads(ale)
        else:
            ale_state = ale_py.ALEState(bytes(ale))
        self._ale.restoreState(ale_state)
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
