"""Builds registered gymnasium ids as TF-Agents environments, with clear errors for bad ids."""

from __future__ import annotations

import difflib

import gin
import gymnasium as gym

from envs.gym_bridge import GymnasiumEnvironment
from pipeline.errors import UnknownEnvError, UserError


def check_env_id(env_id: str) -> None:
    """Fails with one line naming close matches when `env_id` is not registered."""
    if env_id in gym.registry:
        return
    matches = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(matches)}?" if matches else "see gymnasium.pprint_registry()"
    raise UnknownEnvError(f"unknown environment id {env_id!r}: {hint}")


@gin.configurable(denylist=["seed", "training"])
def load_gymnasium(
    env_id: str = "CartPole-v1",
    seed: int | None = None,
    training: bool = True,
    max_episode_steps: int | None = None,
    render_mode: str | None = None,
    discount: float = 1.0,
) -> GymnasiumEnvironment:
    """Makes `env_id` through gymnasium and bridges it.

    `training` says whether this env feeds learning or evaluation; plain gymnasium ids use
    the same env for both, wrappers that only belong in training (Atari) look at it.
    """
    del training
    check_env_id(env_id)
    kwargs = {"render_mode": render_mode}
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.DependencyNotInstalled as error:
        raise UserError(f"{env_id} needs a package that is not installed: {error}") from None
    return GymnasiumEnvironment(env, seed=seed, discount=discount)
