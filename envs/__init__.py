"""Environments for the pipeline: the gymnasium -> TF-Agents bridge and its loaders.

This package knows nothing of agents; it turns gymnasium ids into TF-Agents
`PyEnvironment`s with faithful specs and episode-end semantics.
"""

from envs.errors import UnknownEnvError, UserError
from envs.gym_bridge import GymnasiumEnvironment
from envs.loader import check_env_id, load_gymnasium

__all__ = ["GymnasiumEnvironment", "UnknownEnvError", "UserError", "check_env_id", "load_gymnasium"]
