"""A batched TF-Agents environment over ale-py's C++ `AtariVectorEnv`.

The C++ side does the DQN preprocessing in threads (no-op starts, FIRE reset, frame skip
with max-pool, grayscale, INTER_AREA resize, life-loss signal) and hands back one frame per
sub-env (`stack_num=1`); stacking is done here by the `FrameStacker` the single path uses,
because the C++ stack is not restarted after a life loss. How its semantics were mapped to
TF-Agents' (and why `life_loss_info` rather than `episodic_life`): see `envs.atari`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ale_py.vector_env import AtariVectorEnv
from gymnasium.vector import AutoresetMode
from tf_agents.environments import py_environment
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts

from envs.atari.games import noop_action, pseudo_reset_action, resolve_game
from envs.atari.options import Preprocessing
from envs.frame_stack import FrameStacker

_FIRST, _MID, _LAST = (int(t) for t in (ts.StepType.FIRST, ts.StepType.MID, ts.StepType.LAST))
_SEED_LIMIT = 2**31 - 1  # the C++ env takes int32 seeds


class AtariBatchedEnvironment(py_environment.PyEnvironment):
    """`num_envs` Atari games stepped together as one batched `PyEnvironment`.

    Each lane follows TF-Agents' rules on its own: the step after a lane's LAST ignores its
    action and returns FIRST (reward 0, discount 1). After a game over or the frame cap that
    FIRST is the C++ env's NEXT_STEP autoreset; after a training life loss it is a FIRE
    pseudo-reset that continues the game. `last_info` holds the C++ info (`lives`, frame
    numbers) plus `raw_reward`, the rewards before clipping.
    """

    def __init__(
        self,
        game: str,
        num_envs: int,
        seed: int | None = None,
        options: Preprocessing = Preprocessing(),
        *,
        sticky_action_prob: float = 0.0,
        full_action_space: bool = False,
        num_threads: int = 0,
    ):
        super().__init__(handle_auto_reset=False)
        _, rom_id = resolve_game(game)
        self._vec = AtariVectorEnv(
            rom_id,
            num_envs,
            num_threads=num_threads,
            max_num_frames_per_episode=options.max_episode_frames,
            repeat_action_probability=sticky_action_prob,
            full_action_space=full_action_space,
            autoreset_mode=AutoresetMode.NEXT_STEP,
            img_height=options.screen_size,
            img_width=options.screen_size,
            grayscale=True,
            stack_num=1,
            frameskip=options.frame_skip,
            maxpool=True,
            noop_max=options.noop_max,
            episodic_life=False,  # True would restart the whole game on a life loss
            life_loss_info=options.terminal_on_life_loss,
            reward_clipping=False,  # clipped here, so `raw_reward` can be reported
            use_fire_reset=options.fire_on_reset,
        )
        self._num_envs = num_envs
        self._clip_rewards = options.clip_rewards
        action_set = list(self._vec.ale.get_action_set())
        # After a life loss: FIRE, or NOOP when the agent serves itself (see envs.atari).
        self._pseudo_reset_index = (
            pseudo_reset_action(action_set) if options.fire_on_reset else noop_action(action_set)
        )
        size = (options.screen_size, options.screen_size)
        self._stacker = FrameStacker(num_envs, size, options.frame_stack)
        self._ended = np.zeros(num_envs, dtype=bool)  # lanes whose last step was LAST
        self._next_seed = seed
        self._observation_spec = array_spec.BoundedArraySpec(
            self._stacker.observation_shape, np.uint8, 0, 255, name="observation"
        )
        self._action_spec = array_spec.BoundedArraySpec(
            (), np.int64, 0, self._vec.single_action_space.n - 1, name="action"
        )
        self.last_info: dict[str, Any] = {}

    @property
    def batched(self) -> bool:
        return True

    @property
    def batch_size(self) -> int:
        return self._num_envs

    def observation_spec(self) -> array_spec.BoundedArraySpec:
        return self._observation_spec

    def action_spec(self) -> array_spec.BoundedArraySpec:
        return self._action_spec

    def seed(self, seed: int | None) -> None:
        """Seeds the next reset: sub-env i gets seed + i; later resets continue their RNGs."""
        self._next_seed = seed

    def _reset(self) -> ts.TimeStep:
        seed = self._next_seed
        if seed is not None:
            seed = int(seed) % (_SEED_LIMIT - self._num_envs)
        frames, self.last_info = self._vec.reset(seed=seed)
        self._next_seed = None
        self._ended[:] = False
        self.last_info["raw_reward"] = np.zeros(self._num_envs, dtype=np.float32)
        n = self._num_envs
        return ts.TimeStep(
            np.full(n, _FIRST, dtype=np.int32),
            np.zeros(n, dtype=np.float32),
            np.ones(n, dtype=np.float32),
            self._stacker.push(frames[:, 0]),
        )

    def _step(self, action: Any) -> ts.TimeStep:
        actions = np.array(action, dtype=np.int64).reshape(self._num_envs)
        first = self._ended
        any_first = bool(first.any())
        if any_first:
            # Lanes the C++ env autoresets ignore this action; after a life loss it is the
            # pseudo-reset's FIRE (NOOP in games without FIRE).
            actions[first] = self._pseudo_reset_index
        frames, reward, terminated, truncated, info = self._vec.step(actions)
        if any_first:
            # A pseudo-reset step that ended the game itself (cap, game over): reset for real.
            redo = first & (terminated | truncated)
            if redo.any():
                reset_frames, reset_info = self._vec.reset(options={"reset_mask": redo})
                frames[redo] = reset_frames[redo]
                for key, value in reset_info.items():
                    info[key][redo] = value[redo]
            terminated = terminated & ~first
            truncated = truncated & ~first
            reward = np.where(first, 0, reward)
        raw_reward = reward.astype(np.float32)
        info["raw_reward"] = raw_reward
        self.last_info = info
        last = terminated | truncated
        step_type = np.where(last, _LAST, _MID).astype(np.int32)
        if any_first:
            step_type[first] = _FIRST
        self._ended = last
        return ts.TimeStep(
            step_type,
            np.sign(raw_reward) if self._clip_rewards else raw_reward,
            np.where(terminated, 0.0, 1.0).astype(np.float32),
            self._stacker.push(frames[:, 0], first),
        )

    def get_state(self) -> None:
        """ale-py's C++ vector env (0.12) has no way to clone or restore its emulators: a
        resumed batched run starts new episodes (the loop warns), never a traceback."""
        return None

    def close(self) -> None:
        self._vec.close()
