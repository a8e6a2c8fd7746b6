"""Replay buffers behind one small interface, so the loop can take either from gin.

    train.replay = @UniformReplay      # TF-Agents' TFUniformReplayBuffer, any observation
    train.replay = @FrameStackReplay   # Atari frame stacks, each frame stored once

Both take `(data_spec, batch_size, capacity, seed, num_steps, gamma)`, add a `[batch_size, ...]`
trajectory per driver step with `add_batch` (a driver observer inside
`tf.function(autograph=False)`) and return `sample(n)` as a `Trajectory` of `[n, num_steps, ...]`
tensors, the layout of `TFUniformReplayBuffer.get_next(n, num_steps)[0]` that `DqnAgent.train`
expects: `num_steps = n_step_update + 1` (2 for one-step DQN).

n-step windows and episode ends. TF-Agents turns a window into an n-step target with
`trajectory.to_n_step_transition` (DqnAgent) or the same sums inside CategoricalDqnAgent:
return = sum_j gamma^j (prod_{i<j} d_i) r_j over positions 0..n-1, bootstrap discount
gamma^n prod_{i<n} d_i on the observation at position n. A terminal step inside the window is
right as it is (its discount 0 zeroes everything after it), but a truncation (LAST with
discount 1) is not: the sums would run on into the next episode. So both buffers end every
window at its first LAST after position 0 (`end_windows_at_episode_ends`): the positions after
it repeat that LAST step, and from it on the rewards are 0 and the discounts 1/gamma (so
gamma * d = 1). The formula then gives exactly the truncated target,
sum_{j<k} gamma^j r_j + gamma^k (prod d) Q(s_{t+k}), for terminals and truncations alike.

`FrameStackReplay` exists because a stacked `(84, 84, 4)` observation repeats each frame four
times: TF-Agents' buffer needs 28.2 KB per transition, so 1M transitions (the Nature DQN
setting) take 28 GB. Keeping only the newest frame of each stack and rebuilding stacks at
sample time brings that to ~7.07 KB (the layout Dopamine uses).

Both constructors check, before allocating, that the buffer fits in the memory this process
can use, and raise a one-line `UserError` otherwise.

The package, one job a module: `windows` (sizes, n-step windows cut at episode ends, the
n-step transition), `memory` (the pre-flight against /proc and cgroup limits), `uniform`,
`frame_stack` (+ `frame_stack_files`, its chunked checkpoint files), `sum_tree` and
`prioritized`. Buffers are imported from their modules, e.g.
`from pipeline.replay.uniform import UniformReplay`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import tensorflow as tf
from tf_agents.trajectories.trajectory import Trajectory, Transition

# Set by the loop from the agent and env, not by gin.
BUILDER_ARGS = ["data_spec", "batch_size", "capacity", "seed", "num_steps", "gamma"]


@runtime_checkable
class Replay(Protocol):
    """What the training loop needs from a replay buffer."""

    def add_batch(self, trajectory: Trajectory) -> tf.Tensor:
        """Adds one `[batch_size, ...]` step; returns a tensor to hang control deps on."""
        ...

    def sample(self, sample_batch_size: int) -> Trajectory:
        """Returns `[n, num_steps, ...]` windows t..t+n, each ended at its episode's end."""
        ...

    def sample_transition(self, sample_batch_size: int) -> Transition:
        """`to_n_step_transition(sample(n), gamma)`, built without the unused observations."""
        ...

    def num_transitions(self) -> int:
        """Items currently held, over all lanes."""
        ...

    def save(
        self, directory: Path, contents: bool, previous: Path | None = None,
        previous_sums: dict[str, str] | None = None,
    ) -> dict[str, dict] | None:  # fmt: skip
        """Writes the sampling RNG and, if `contents`, every stored item into `directory`.

        `previous` is the newest checkpoint's replay folder (`previous_sums`: its files'
        checksums), for buffers that share unchanged parts with it; the result lists files
        the checkpoint store need not hash again.
        """
        ...

    def restore(self, directory: Path, sums: dict[str, str] | None = None) -> bool:
        """Reads what `save` wrote; returns whether the contents came back."""
        ...


def write_replay_info(directory: Path, info: dict[str, Any]) -> None:
    (directory / "replay.json").write_text(json.dumps(info) + "\n")


def read_replay_info(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "replay.json").read_text())
