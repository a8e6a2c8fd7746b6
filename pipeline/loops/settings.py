"""The settings every loop shares, handed to `TrainingLoop` in one piece."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class LoopSettings:
    """The settings every loop takes, each under its loop's gin name (`train.seed`,
    `train_on_policy.seed`, ...). A loop's constructor declares them, so gin knows them, and
    hands them over in one piece with `LoopSettings.of(locals())`."""

    seed: int
    env_loader: Callable
    total_env_steps: int
    eval_interval: int
    eval_episodes: int
    eval_at_start: bool
    progress_interval_s: float
    checkpoint_interval: int | None  # env steps; default: eval_interval
    checkpoint_interval_s: float
    checkpoints_to_keep: int
    deterministic: bool
    final_eval_episodes: int | None = None  # games at total_env_steps; default: eval_episodes
    num_envs: int = 1
    eval_processes: int = 1  # 2: half the evaluation games in a second process (Atari)

    @classmethod
    def of(cls, arguments: dict[str, Any]) -> LoopSettings:
        """The loop settings among a constructor's arguments (its `locals()`)."""
        return cls(**{f.name: arguments[f.name] for f in fields(cls) if f.name in arguments})
