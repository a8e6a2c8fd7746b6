"""What a run is, defined once for train, evaluate, sweep, report and the run directory:
which loop it uses, its seed and budget, and which settings a resume may change.

Kept free of TensorFlow and gin imports: the sweep and report processes read finished runs
without starting TensorFlow. `pipeline.config.run_settings()` fills `RunSettings` from gin.
"""

from __future__ import annotations

from dataclasses import dataclass

LOOP_NAMES = ("train", "train_on_policy")  # gin names of the loops; `train` is the default
SEED_BINDINGS = tuple(f"{loop}.seed" for loop in LOOP_NAMES)
TOTAL_STEPS_BINDINGS = tuple(f"{loop}.total_env_steps" for loop in LOOP_NAMES)
# Settings that say how to run, not what is computed: a resume may change them.
RUN_ONLY_SETTINGS = (
    "total_env_steps",
    "progress_interval_s",
    "checkpoint_interval",
    "checkpoint_interval_s",
    "checkpoints_to_keep",
    "eval_processes",
)
RESUMABLE_CHANGES = (
    *(f"{loop}.{name}" for loop in LOOP_NAMES for name in RUN_ONLY_SETTINGS),
    "distributed.server_checkpoint_interval_s",
    "distributed.connect_timeout_s",
)


@dataclass(frozen=True)
class RunSettings:
    loop: str  # one of LOOP_NAMES
    seed: int
    total_env_steps: int | None
    eval_episodes: int | None

    def binding(self, parameter: str) -> str:
        return f"{self.loop}.{parameter}"
