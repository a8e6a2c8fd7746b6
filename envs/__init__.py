"""Environments for the pipeline: the gymnasium -> TF-Agents bridge and its loaders.

This package knows nothing of agents; it turns gymnasium ids and Atari games into TF-Agents
`PyEnvironment`s with faithful specs and episode-end semantics.
"""

import pipeline  # noqa: F401  (first: prepares the TensorFlow stack and a quiet start)
from envs.atari import AtariBatchedEnvironment, AtariDqnPreprocessing, load_atari, resolve_game
from envs.frame_stack import FrameStacker
from envs.gym_bridge import GymnasiumEnvironment
from envs.loader import check_env_id, load_gymnasium
from envs.toy_mdp import ToyMDPEnv  # importing it registers ToyMDP-v0
from pipeline.errors import UnknownEnvError, UserError

__all__ = [
    "AtariBatchedEnvironment",
    "AtariDqnPreprocessing",
    "FrameStacker",
    "GymnasiumEnvironment",
    "ToyMDPEnv",
    "UnknownEnvError",
    "UserError",
    "check_env_id",
    "load_atari",
    "load_gymnasium",
    "resolve_game",
]
