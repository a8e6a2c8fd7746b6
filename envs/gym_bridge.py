"""Our gymnasium -> TF-Agents bridge.

TF-Agents 0.19 only speaks the old `gym` API, so this adapter maps the modern one:
`terminated` ends an episode with discount 0 (a true terminal state), `truncated` ends
it with the discount kept (the state still has a future, we just stopped looking),
and seeding goes through `reset(seed=...)`.
"""

from __future__ import annotations

import pickle
from typing import Any

import gymnasium as gym
import numpy as np
from tf_agents.environments import py_environment
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts

from pipeline.errors import UnsupportedSpaceError
from pipeline.run import plain_data

# Built once: ts.restart/transition/termination re-check types on every call, which costs
# more than a CartPole step itself. These are the same values those helpers produce.
_FIRST = np.asarray(ts.StepType.FIRST, dtype=np.int32)
_MID = np.asarray(ts.StepType.MID, dtype=np.int32)
_LAST = np.asarray(ts.StepType.LAST, dtype=np.int32)
_ZERO = np.asarray(0.0, dtype=np.float32)
_ONE = np.asarray(1.0, dtype=np.float32)


def space_to_spec(space: gym.Space, name: str) -> array_spec.ArraySpec:
    """Converts a Box or Discrete space into a dtype-faithful bounded array spec."""
    if isinstance(space, gym.spaces.Discrete):
        low = int(space.start)
        return array_spec.BoundedArraySpec(
            shape=(), dtype=space.dtype, minimum=low, maximum=low + int(space.n) - 1, name=name
        )
    if isinstance(space, gym.spaces.Box):
        return array_spec.BoundedArraySpec(
            shape=space.shape, dtype=space.dtype, minimum=space.low, maximum=space.high, name=name
        )
    raise UnsupportedSpaceError(
        f"gymnasium space {space!r} is not supported by the bridge (only Box and Discrete); "
        "wrap the environment so it exposes one of those"
    )


def describe(env: gym.Env) -> str:
    """`CartPole-v1 (observations Box(...), actions Discrete(2))`, for error messages."""
    name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    return f"{name} (observations {env.observation_space}, actions {env.action_space})"


def _unpickle(blob: bytes) -> Any:
    """Unpickles what `plain_data.loads` vouched for (a `Pickled`), never plain bytes."""
    if not isinstance(blob, plain_data.Pickled):
        raise ValueError("the env's state holds a pickle nobody signed: not loading it")
    return pickle.loads(blob)


class GymnasiumEnvironment(py_environment.PyEnvironment):
    """Presents one gymnasium env as a TF-Agents `PyEnvironment` (auto-resets after LAST)."""

    def __init__(self, env: gym.Env, seed: int | None = None, discount: float = 1.0):
        super().__init__(handle_auto_reset=True)
        self._env = env
        self._discount = np.asarray(discount, dtype=np.float32)
        try:
            self._observation_spec = space_to_spec(env.observation_space, "observation")
            self._action_spec = space_to_spec(env.action_space, "action")
        except UnsupportedSpaceError:
            raise UnsupportedSpaceError(
                f"{describe(env)} is not supported: the pipeline serves Box and Discrete "
                "observations and actions (not Tuple, Dict, Text, MultiDiscrete, MultiBinary): "
                "wrap the env so it exposes those, e.g. gymnasium's FlattenObservation"
            ) from None
        self._obs_dtype = self._observation_spec.dtype
        self._action_dtype = self._action_spec.dtype
        self._next_seed = seed
        self.last_info: dict[str, Any] = {}

    @property
    def description(self) -> str:
        return describe(self._env)

    @property
    def gym_env(self) -> gym.Env:
        return self._env

    def observation_spec(self) -> array_spec.ArraySpec:
        return self._observation_spec

    def action_spec(self) -> array_spec.ArraySpec:
        return self._action_spec

    def seed(self, seed: int | None) -> None:
        """Seeds the next reset; later resets continue the env's own RNG stream."""
        self._next_seed = seed

    def should_reset(self, current_time_step: ts.TimeStep) -> bool:
        """Whether `step` starts a new episode: the last step ended one.

        TF-Agents' version asks `current_time_step.is_last()`, whose tensor check (an
        isinstance against a typing Protocol) costs 47 us, three CartPole steps; our time
        steps hold numpy step types only, so one comparison says the same.
        """
        return bool(current_time_step.step_type == _LAST)

    def _observation(self, obs: Any) -> np.ndarray:
        return np.asarray(obs, dtype=self._obs_dtype)

    def _reset(self) -> ts.TimeStep:
        obs, self.last_info = self._env.reset(seed=self._next_seed)
        self._next_seed = None
        return ts.TimeStep(_FIRST, _ZERO, _ONE, self._observation(obs))

    def _step(self, action: Any) -> ts.TimeStep:
        action = np.asarray(action, dtype=self._action_dtype)
        if self._action_spec.shape == ():
            action = action.item()
        obs, reward, terminated, truncated, self.last_info = self._env.step(action)
        obs = self._observation(obs)
        reward = np.asarray(reward, dtype=np.float32)
        if terminated:  # a true terminal state: no future value
            return ts.TimeStep(_LAST, reward, _ZERO, obs)
        if truncated:  # cut off by a time limit: the state's future still counts
            return ts.TimeStep(_LAST, reward, self._discount, obs)
        return ts.TimeStep(_MID, reward, self._discount, obs)

    def get_state(self) -> bytes | None:
        """Everything needed to continue exactly here (wrappers, RNG, episode position), as
        bytes that hold plain data (`pipeline.run.plain_data.dumps`), not a pickle to trust.

        An env with `checkpoint_state()` (our Atari wrapper: the emulator cannot be
        pickled) gives its own plain data; any other is pickled whole, and that pickle is
        signed with the user's secret. None when neither works: the caller then starts a
        new episode instead.
        """
        saver = getattr(self._env, "checkpoint_state", None)
        if callable(saver):
            env = {"own": saver()}
        else:
            try:
                env = {"pickled": plain_data.Pickled(pickle.dumps(self._env))}
            except (TypeError, AttributeError, pickle.PicklingError):
                return None
        state = {"env": env, "next_seed": self._next_seed, "time_step": self._current_time_step}
        return plain_data.dumps(state)

    def set_state(self, state: bytes) -> None:
        """Restores `get_state()`'s result; the next `step` continues that episode.

        Unpickles only what `plain_data.loads` vouches for: a pickle signed with this user's
        secret. (A checkpoint written before pickles were signed comes here re-signed as
        "legacy" once the user passed --trust_run_dir.)
        """
        saved = plain_data.loads(state)
        if "legacy" in saved:  # the whole state was one pickle, which the user trusted
            saved = _unpickle(saved["legacy"])
            kind, env = saved["env"]
            if kind == "own":  # its emulator state was a pickle inside that pickle
                own = {
                    k: plain_data.Pickled(v) if isinstance(v, bytes) else v for k, v in env.items()
                }
                saved["env"] = {"own": own}
            else:
                saved["env"] = {"pickled": plain_data.Pickled(env)}
        env = saved["env"]
        if "own" in env:
            self._env.restore_checkpoint_state(env["own"])
        else:
            old, self._env = self._env, _unpickle(env["pickled"])
            old.close()
        self._next_seed = saved["next_seed"]
        self._current_time_step = saved["time_step"]

    def render(self, mode: str = "rgb_array") -> Any:
        # gymnasium fixes the render mode at construction; `mode` is kept for the TF-Agents API.
        return self._env.render()

    def close(self) -> None:
        self._env.close()
