"""Atari with the standard DQN preprocessing, as TF-Agents environments (single and batched).

Modules: `games` (names, ROMs, the reset actions), `options` (the preprocessing settings),
`single` (the gymnasium wrapper), `vector` (ale-py's C++ vector env), and here `load_atari`,
which picks one.

Protocol (Mnih et al. 2015, Machado et al. 2018): no-op starts, FIRE at reset where the game
has FIRE, 4-frame skip with a max over the last two raw frames, 84x84 grayscale (cv2
INTER_AREA), a 108k-frame cap as a truncation, and 4 stacked frames (channels last). In
training a lost life ends the TF-Agents episode (discount 0) and rewards are clipped to
their sign; evaluation sees whole games and true scores.

Two paths give the same time steps:
- `load_atari(num_envs=1)` and every evaluation env: `AtariDqnPreprocessing`, a gymnasium
  wrapper that drives `ale-py`'s ALE interface directly (no per-frame gymnasium step, the
  screen read into preallocated buffers), bridged by `GymnasiumEnvironment`.
- `load_atari(num_envs>1, training=True)`: `AtariBatchedEnvironment` in `envs.atari.vector`,
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

import gin
import gymnasium as gym
from tf_agents.environments import py_environment

from envs.atari.games import resolve_game
from envs.atari.options import Preprocessing
from envs.atari.single import AtariDqnPreprocessing
from envs.atari.vector import AtariBatchedEnvironment
from envs.gym_bridge import GymnasiumEnvironment

__all__ = [
    "AtariBatchedEnvironment",
    "AtariDqnPreprocessing",
    "Preprocessing",
    "load_atari",
    "resolve_game",
]


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
    options = Preprocessing(
        noop_max=noop_max,
        frame_skip=frame_skip,
        frame_stack=frame_stack,
        screen_size=screen_size,
        terminal_on_life_loss=terminal_on_life_loss and training,
        clip_rewards=clip_rewards and training,
        max_episode_frames=max_episode_frames,
        fire_on_reset=fire_on_reset,
    )
    if training and num_envs > 1:
        return AtariBatchedEnvironment(
            game,
            num_envs,
            seed=seed,
            options=options,
            sticky_action_prob=sticky_action_prob,
            full_action_space=full_action_space,
            num_threads=num_threads,
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
    return GymnasiumEnvironment(AtariDqnPreprocessing(env, options), seed=seed)
