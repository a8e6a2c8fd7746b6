"""A collector: plays the gin file's environment and sends every transition to the server.

    python -m pipeline.distributed.collector --gin_file=dqn_cartpole.gin --server=HOST:PORT \
        --index=0 --gin_bindings=DqnAgent.n_step_update=1

It builds the same experiment as one process (env, agent, ε-greedy collect policy) with its
own seed, pulls the learner's weights and env-step count every
`distributed.weight_pull_interval` steps (the count drives the ε schedule and the random
start), and stops when the learner says the run is finished. It keeps no state worth saving:
a killed collector is restarted and starts a new episode.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import reverb
from absl import flags, logging
from tf_agents.drivers import py_driver
from tf_agents.experimental.distributed import reverb_variable_container
from tf_agents.policies import py_tf_eager_policy
from tf_agents.replay_buffers import reverb_utils
from tf_agents.trajectories import trajectory as trajectory_lib

from pipeline import (
    cli,
    config,
)
from pipeline.distributed import common
from pipeline.errors import UserError

flags.DEFINE_integer("index", 0, "This collector's number (0, 1, ...): picks its seed.")
flags.DEFINE_integer("restart", 0, "How often this collector was restarted: picks its seed.")
cli.define_run_flags()
FLAGS = flags.FLAGS

PROGRESS_INTERVAL_S = 30.0
# Env steps between flushes: a collector runs at most this far ahead of the rate limiter.
FLUSH_INTERVAL = 32
LEARNER_WAIT_S = 900.0  # how long to wait for the learner's first weights


def collector_seed(run_seed: int, index: int, restart: int) -> int:
    """Apart from the run's seed and from every other collector and restart."""
    return (run_seed + 1) * 100_003 + restart * 1_009 + index


class EpisodeReporter:
    """Observer that sends each finished episode's return and length to the learner."""

    def __init__(self, client: reverb.Client):
        self._client = client
        self._return, self._length = 0.0, 0

    def __call__(self, traj: trajectory_lib.Trajectory) -> None:
        if not traj.is_boundary():
            self._return += float(traj.reward)
            self._length += 1
        if traj.is_last():  # the boundary step after the episode's last transition
            episode = {"return": np.float32(self._return), "length": np.int64(self._length)}
            self._client.insert(episode, priorities={common.EPISODES_TABLE: 1.0})
            self._return, self._length = 0.0, 0


class Collector(common.RoleExperiment):
    def __init__(self, server_address: str, index: int, restart: int):
        seed = collector_seed(config.query("train.seed", 0), index, restart)
        super().__init__(".", seed=seed)
        self.index = index
        self.config = common.settings()
        self.server_address = server_address
        self._client = common.wait_for_server(server_address, self.config.connect_timeout_s)
        common.check_server_matches(self._client, self, server_address)
        self._finished = common.finished_flag()
        # Pulls land in the agent's weights, the ε schedule's clock and the flag directly.
        self._shared = common.shared_variables(self, self._finished)
        self._env = self._py_envs()[0]

    def _wait_for_weights(self) -> reverb_variable_container.ReverbVariableContainer:
        deadline = time.monotonic() + LEARNER_WAIT_S
        while self._client.server_info(timeout=30)[common.WEIGHTS_TABLE].current_size == 0:
            if time.monotonic() > deadline:
                raise UserError(
                    f"no learner pushed weights to {self.server_address} within "
                    f"{LEARNER_WAIT_S:.0f} s: start python -m pipeline.distributed.learner"
                )
            time.sleep(0.5)
        return reverb_variable_container.ReverbVariableContainer(
            self.server_address, table_names=[common.WEIGHTS_TABLE]
        )

    def collect(self) -> int:
        """Collects until the learner finishes; returns the env steps this collector took."""
        logging.info("collector %d (seed %d) on the server at %s", self.index, self.seed,
                     self.server_address)  # fmt: skip
        weights = self._wait_for_weights()
        policies = {
            name: py_tf_eager_policy.PyTFEagerPolicy(policy, use_tf_function=True)
            for name, policy in (("random", self._random_policy), ("collect", self._collect_policy))
        }
        writer = reverb_utils.ReverbAddTrajectoryObserver(
            self._client,
            common.REPLAY_TABLE,
            sequence_length=common.SEQUENCE_LENGTH,
            stride_length=1,
        )
        observers = [writer, EpisodeReporter(self._client)]
        time_step, steps = self._env.reset(), 0
        started = last_log = time.monotonic()
        while True:
            weights.update(self._shared, common.WEIGHTS_TABLE)
            # The flag alone may be a finished run's, left in the server's checkpoint when the
            # run is extended: stop only once the run's steps are reached too.
            if self._finished.numpy() and self.env_steps.result() >= self.total_env_steps:
                break
            shared_steps = int(self.env_steps.result())
            random_start = shared_steps < self.initial_collect_steps
            driver = py_driver.PyDriver(
                self._env,
                policies["random" if random_start else "collect"],
                observers,
                max_steps=FLUSH_INTERVAL,
            )
            for _ in range(0, self.config.weight_pull_interval, FLUSH_INTERVAL):
                time_step, _ = driver.run(time_step)
                # Waits until the server took the items: the rate limiter holds us back here.
                writer.flush()
                steps += FLUSH_INTERVAL
            if time.monotonic() - last_log >= PROGRESS_INTERVAL_S:
                last_log = time.monotonic()
                logging.info(
                    "collector %d: %s env steps (%.0f/s), run at %s, epsilon %.3f",
                    self.index,
                    f"{steps:,}",
                    steps / (last_log - started),
                    f"{shared_steps:,}",
                    float(self.epsilon()),
                )
        writer.close()
        return steps


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    try:
        config.parse(FLAGS.gin_file, FLAGS.gin_bindings)
        if not FLAGS.server:
            raise UserError("--server is required: pass the Reverb server's HOST:PORT")
        collector = Collector(FLAGS.server, FLAGS.index, FLAGS.restart)
        steps = collector.collect()
    except UserError as error:
        cli.fail(str(error).splitlines()[0])
    except (reverb.errors.DeadlineExceededError, RuntimeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"error: lost the Reverb server at {FLAGS.server}: {reason}", file=sys.stderr)
        sys.exit(1)
    print(f"collector {FLAGS.index}: the run is finished after {steps:,} env steps here")


if __name__ == "__main__":
    cli.run(main)
