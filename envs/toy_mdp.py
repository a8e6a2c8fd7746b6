"""The three-state MDP used to teach Q-value iteration, as a gymnasium env (`ToyMDP-v0`).

Why it is here: its optimal Q-values are known exactly
(`pipeline.baselines.tabular.q_value_iteration` computes them from `TRANSITIONS`, `REWARDS` and
`ALLOWED` below, the very tables `step` samples from), so an agent's learned values and greedy
actions can be checked against ground truth.

Dynamics (states s0-s2, actions a0-a2, `T[s][a]` over next states (s0, s1, s2)):

    s0: a0 [0.7, 0.3, 0.0]   a1 [1.0, 0.0, 0.0]   a2 [0.8, 0.2, 0.0]
    s1: a0 [0.0, 1.0, 0.0]   a1 not allowed       a2 [0.0, 0.0, 1.0]
    s2: a0 not allowed       a1 [0.8, 0.1, 0.1]   a2 not allowed

Rewards: s0 -a0-> s0 is +10, s1 -a2-> s2 is -50, s2 -a1-> s0 is +40, every other step 0.

Episodes start in s0 (`reset(options={"state": k})` starts in sk, for exploring starts and
tests). The task is continuing: `ToyMDPEnv` itself never terminates or truncates. The registered
ids add gymnasium's `TimeLimit` at `DEFAULT_MAX_EPISODE_STEPS` (200) steps, changed with
`gym.make(id, max_episode_steps=N)` or `envs.load_gymnasium(id, max_episode_steps=N)`; that is a
truncation, which the bridge turns into a LAST step that keeps the discount, as it should for a
state that still has a future.

Observation: `Box(0, 1, (6,), float32)` = one-hot state (3) followed by the allowed-action mask
(3) as 0.0/1.0. A single Box because the bridge handles only Box and Discrete (no Dict); one
vector holds what a Q-network needs (the state) and what a policy needs (the mask).
`observation_and_mask` splits it, on TF tensors, NumPy arrays and specs, so it can be passed as
TF-Agents' `observation_and_action_constraint_splitter` (DqnAgent, QPolicy, RandomTFPolicy,
`validate_py_environment`). The mask is a function of the state, so give the network only the
state part. `info["action_mask"]` (int8, what `Discrete.sample(mask=...)` takes),
`info["state"]` (int) and `env.unwrapped.action_masks()` give the same facts without decoding.

Disallowed actions: masking is the contract; agents must not choose them. By default
(`invalid_action="raise"`) a disallowed action raises ValueError. Why raise: doing anything
quietly would let an agent whose masking is broken train on transitions this MDP does not have,
and the mismatch would show up much later as Q-values that disagree with the oracle.
`invalid_action="stay"` (registered as `ToyMDPStay-v0`, for agents that cannot mask, such as an
unmasked uniform random policy) keeps the state with reward 0 and sets
`info["invalid_action"] = True`. Staying is never better than acting here (every optimal value
is >= 0), so the Q-values of the allowed actions are the same in both variants.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import tensorflow as tf
from gymnasium import spaces
from tf_agents.specs import array_spec, tensor_spec

ENV_ID = "ToyMDP-v0"
STAY_ENV_ID = "ToyMDPStay-v0"
DEFAULT_MAX_EPISODE_STEPS = 200
N_STATES = 3
N_ACTIONS = 3
OBSERVATION_SIZE = N_STATES + N_ACTIONS
INVALID_ACTION_MODES = ("raise", "stay")

# The textbook tables, written as they are usually given; None = action not allowed.
_T: list[list[list[float] | None]] = [
    [[0.7, 0.3, 0.0], [1.0, 0.0, 0.0], [0.8, 0.2, 0.0]],
    [[0.0, 1.0, 0.0], None, [0.0, 0.0, 1.0]],
    [None, [0.8, 0.1, 0.1], None],
]
_R: list[list[list[float]]] = [
    [[+10.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, -50.0]],
    [[0.0, 0.0, 0.0], [+40.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
]


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


ALLOWED: np.ndarray = _read_only(np.array([[row is not None for row in s] for s in _T]))
"""`ALLOWED[s, a]`: whether action a may be taken in state s (bool, shape (3, 3))."""
TRANSITIONS: np.ndarray = _read_only(
    np.array([[row if row is not None else [0.0] * N_STATES for row in s] for s in _T])
)
"""`TRANSITIONS[s, a, s']`: P(s' | s, a), all zeros where the action is not allowed."""
REWARDS: np.ndarray = _read_only(np.array(_R))
"""`REWARDS[s, a, s']`: the reward of that transition."""

_MASKS_INT8 = _read_only(ALLOWED.astype(np.int8))
_OBSERVATIONS = _read_only(np.concatenate([np.eye(N_STATES), ALLOWED], axis=1).astype(np.float32))


class ToyMDPEnv(gym.Env[np.ndarray, int]):
    """The three-state teaching MDP; see the module docstring for the layout and contract."""

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, invalid_action: str = "raise", render_mode: str | None = None):
        if invalid_action not in INVALID_ACTION_MODES:
            raise ValueError(
                f"invalid_action must be one of {INVALID_ACTION_MODES}, not {invalid_action!r}"
            )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'ansi', not {render_mode!r}")
        self.invalid_action = invalid_action
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0.0, 1.0, (OBSERVATION_SIZE,), np.float32)
        self.action_space = spaces.Discrete(N_ACTIONS)
        self.n_states = N_STATES
        self.n_actions = N_ACTIONS
        self._state = 0
        # Per (s, a): the possible outcomes as (next state, cumulative probability, reward) in
        # plain Python numbers, the last cumulative pinned to 1.0 so rounding can never pick an
        # outcome of probability 0. Plain numbers keep a step a few microseconds.
        self._outcomes: dict[tuple[int, int], list[tuple[int, float, float]]] = {}
        for s, a in zip(*np.nonzero(ALLOWED), strict=True):
            next_states = np.flatnonzero(TRANSITIONS[s, a])
            cumulative = np.cumsum(TRANSITIONS[s, a, next_states])
            cumulative[-1] = 1.0
            self._outcomes[int(s), int(a)] = [
                (int(n), float(c), float(REWARDS[s, a, n]))
                for n, c in zip(next_states, cumulative, strict=True)
            ]

    @property
    def state(self) -> int:
        """The current state's index (0, 1 or 2)."""
        return self._state

    def action_masks(self) -> np.ndarray:
        """The allowed actions in the current state as int8 0/1 (ready for `sample(mask=)`)."""
        return _MASKS_INT8[self._state].copy()

    def _observation(self) -> np.ndarray:
        return _OBSERVATIONS[self._state].copy()

    def _info(self) -> dict[str, Any]:
        return {"state": self._state, "action_mask": _MASKS_INT8[self._state].copy()}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Starts in s0, or in `options["state"]` when given."""
        super().reset(seed=seed)
        state = (options or {}).get("state", 0)
        if state not in range(N_STATES):
            raise ValueError(f"options['state'] must be 0, 1 or 2, not {state!r}")
        self._state = int(state)
        return self._observation(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Samples the next state from `TRANSITIONS`; never terminates (continuing task)."""
        a = int(action)
        if a != action or not 0 <= a < N_ACTIONS:
            raise ValueError(f"action must be 0, 1 or 2, not {action!r}")
        s = self._state
        outcomes = self._outcomes.get((s, a))
        if outcomes is None:
            if self.invalid_action == "raise":
                allowed = [int(i) for i in np.flatnonzero(ALLOWED[s])]
                raise ValueError(
                    f"action a{a} is not allowed in state s{s} (allowed: {allowed}); mask actions "
                    "with info['action_mask'] or envs.toy_mdp.observation_and_mask, or make the "
                    f"env with invalid_action='stay' ({STAY_ENV_ID})"
                )
            info = self._info()
            info["invalid_action"] = True
            return self._observation(), 0.0, False, False, info
        u = self.np_random.random()
        next_state, _, reward = outcomes[-1]
        for candidate in outcomes:
            if u < candidate[1]:
                next_state, _, reward = candidate
                break
        self._state = next_state
        return self._observation(), reward, False, False, self._info()

    def render(self) -> str | None:
        """'ansi': the current state and its allowed actions as one line of text."""
        if self.render_mode != "ansi":
            return None
        allowed = ", ".join(f"a{int(i)}" for i in np.flatnonzero(ALLOWED[self._state]))
        return f"s{self._state} (allowed: {allowed})"


def _check_last_dim(size: int | None) -> None:
    if size is not None and size != OBSERVATION_SIZE:
        raise ValueError(
            f"ToyMDP observations have {OBSERVATION_SIZE} values in their last dimension, not "
            f"{size}"
        )


def observation_and_mask(observation: Any) -> tuple[Any, Any]:
    """Splits ToyMDP observations `[..., 6]` into (state one-hot `[..., 3]`, mask `[..., 3]`).

    Usable as TF-Agents' `observation_and_action_constraint_splitter`: TF-Agents calls it on
    batched TF tensors (policies, DqnAgent's loss), on NumPy arrays (RandomPyPolicy) and on the
    observation spec (DqnAgent and QPolicy build the network from the first part), so it takes
    all of these and returns the same kind. The mask is int32 0/1: TF-Agents casts it to bool,
    and RandomTFPolicy's optional stationary mask multiplies it, which bool cannot do.
    """
    if isinstance(observation, tf.TensorSpec | array_spec.ArraySpec):
        shape = tuple(observation.shape)
        _check_last_dim(shape[-1] if shape else 0)
        outer = shape[:-1]
        if isinstance(observation, tf.TensorSpec):
            return (
                tensor_spec.BoundedTensorSpec(outer + (N_STATES,), observation.dtype, 0, 1),
                tensor_spec.BoundedTensorSpec(outer + (N_ACTIONS,), tf.int32, 0, 1),
            )
        return (
            array_spec.BoundedArraySpec(outer + (N_STATES,), observation.dtype, 0, 1),
            array_spec.BoundedArraySpec(outer + (N_ACTIONS,), np.int32, 0, 1),
        )
    if tf.is_tensor(observation):
        _check_last_dim(observation.shape[-1] if observation.shape.rank else 0)
        return observation[..., :N_STATES], tf.cast(observation[..., N_STATES:], tf.int32)
    observation = np.asarray(observation)
    _check_last_dim(observation.shape[-1] if observation.ndim else 0)
    return observation[..., :N_STATES], observation[..., N_STATES:].astype(np.int32)


def register() -> None:
    """Registers `ToyMDP-v0` and `ToyMDPStay-v0` with gymnasium; calling it again is harmless."""
    variants = {ENV_ID: "raise", STAY_ENV_ID: "stay"}
    for env_id, invalid_action in variants.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="envs.toy_mdp:ToyMDPEnv",
                max_episode_steps=DEFAULT_MAX_EPISODE_STEPS,
                kwargs={"invalid_action": invalid_action},
            )


register()
