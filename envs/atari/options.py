"""The DQN preprocessing settings both Atari paths take, in one frozen value."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Preprocessing:
    """What `load_atari` binds and both paths apply (see `envs.atari` for the protocol)."""

    noop_max: int = 30  # up to this many no-op frames after a reset
    frame_skip: int = 4  # emulator frames per agent step, max over the last two
    frame_stack: int = 4  # agent steps stacked into one observation
    screen_size: int = 84  # square grayscale frames
    terminal_on_life_loss: bool = True  # a life loss ends the episode (training only)
    clip_rewards: bool = True  # rewards clipped to their sign (training only)
    max_episode_frames: int = 108_000  # emulator frames before a truncation
    fire_on_reset: bool = True  # FIRE at resets and after a life loss, where the game has it

    def __post_init__(self) -> None:
        if self.frame_skip < 1 or self.noop_max < 0 or self.screen_size < 1:
            raise ValueError(
                f"need frame_skip >= 1, noop_max >= 0, screen_size >= 1; got "
                f"{self.frame_skip}, {self.noop_max}, {self.screen_size}"
            )

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}
