"""What the server, learner and collectors agree on: table names, shapes and the rate.

Every role builds the same DQN-family experiment from the same gin files (the server to learn
the shapes of the data and the weights, the learner to train, the collectors to act), so the
tables here are derived from an `Experiment`, never written out by hand.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path

import gin
import reverb
import tensorflow as tf
from absl import flags
from tf_agents.specs import tensor_spec

from pipeline.errors import UserError
from pipeline.loops.off_policy import Experiment

REPLAY_TABLE = "replay"  # transitions: items of 2 consecutive steps (s, a, r) -> (s', ...)
WEIGHTS_TABLE = "weights"  # the newest policy weights, with the learner's env-step count
EPISODES_TABLE = "episodes"  # return and length of each finished collector episode
SEQUENCE_LENGTH = 2
EPISODES_KEPT = 1_000  # unread episode summaries kept on the server (oldest dropped)

flags.DEFINE_string("server", None, "Address of the Reverb server, HOST:PORT (learner, collector).")


@gin.configurable("distributed")
@dataclass(frozen=True)
class DistributedSettings:
    """The distributed mode's own knobs; everything else comes from `train` as usual.

    `samples_per_insert` None means the single-process ratio: batch_size x
    train_steps_per_iteration / collect_steps_per_iteration sampled transitions per
    collected one. The rate limiter keeps samples within `tolerance` of that ratio, counted
    over `initial_collect_steps` inserts (and at least `min_error_batches` batches), by
    blocking collectors when the learner falls behind and the learner when it runs ahead.
    """

    prioritized: bool = False  # Reverb's Prioritized selector instead of Uniform
    priority_exponent: float = 0.6  # alpha (Schaul et al. 2016, proportional variant)
    importance_exponent: float = 0.4  # beta of the importance-sampling weights
    samples_per_insert: float | None = None
    tolerance: float = 0.1
    min_error_batches: int = 4
    weight_pull_interval: int = 500  # env steps a collector takes between weight pulls
    weight_push_interval: int = 100  # train steps between the learner's weight pushes
    server_checkpoint_interval_s: float = 600.0
    connect_timeout_s: float = 60.0  # how long a role waits for the server to answer


def settings() -> DistributedSettings:
    return DistributedSettings()  # its ranges: pipeline.validation


class RoleExperiment(Experiment):
    """The DQN-family experiment of the gin files, minus the local replay buffer.

    Runs are not bit-reproducible across processes anyway (collectors race), so TF's
    deterministic ops, which Reverb's dataset does not support, stay off.
    """

    def __init__(self, root_dir: str | Path, **overrides):
        super().__init__(root_dir, deterministic=False, **overrides)

    def _make_replay(self, replay, capacity: int, seed: int) -> None:
        if self.window_steps != SEQUENCE_LENGTH:
            raise UserError(
                f"the distributed mode stores {SEQUENCE_LENGTH}-step items, and "
                f"n_step_update={self.window_steps - 1} needs {self.window_steps}-step windows: "
                "bind DqnAgent.n_step_update=1 or run single-process"
            )
        return None


def check_server_matches(client: reverb.Client, experiment: Experiment, address: str) -> None:
    """Refuses a server started from other gin settings (other shapes or ratio)."""
    info = client.server_info(timeout=30)[REPLAY_TABLE]
    expected = tensor_spec.add_outer_dim(experiment.agent.collect_data_spec, SEQUENCE_LENGTH)
    ours = [(tuple(s.shape), s.dtype) for s in tf.nest.flatten(expected)]
    theirs = [(tuple(s.shape), s.dtype) for s in tf.nest.flatten(info.signature)]
    ratio = samples_per_insert(experiment, settings())
    if ours != theirs or abs(info.rate_limiter_info.samples_per_insert - ratio) > 1e-9:
        raise UserError(
            f"the Reverb server at {address} was started with other settings (data shapes or "
            "samples per insert differ): start every role with the same --gin_file and "
            "--gin_bindings"
        )


def check_dqn_family() -> None:
    """The roles build the DQN-family loop (`@train`); on-policy gin files are refused."""
    from pipeline import config

    if config.query("run_experiment.loop") is not None:
        raise UserError(
            "the distributed mode trains the DQN family (@train) and these gin files ask for "
            "another loop (run_experiment.loop): run them with python -m pipeline.train"
        )
    agent = config.query("train.agent")
    name = getattr(agent, "selector", "")
    if config.query("distributed.prioritized", False) and name.endswith("CategoricalDqnAgent"):
        raise UserError(
            "distributed.prioritized=True needs per-sample TD errors, which "
            "CategoricalDqnAgent (C51) does not report: use uniform replay "
            "(distributed.prioritized=False) or @DqnAgent / @DdqnAgent"
        )


def samples_per_insert(experiment: Experiment, config: DistributedSettings) -> float:
    if config.samples_per_insert is not None:
        return float(config.samples_per_insert)
    return experiment.batch_size * experiment.updates_per_env_step


def error_buffer(experiment: Experiment, config: DistributedSettings) -> float:
    """How far samples may drift from the ratio before one side waits (in samples)."""
    ratio = samples_per_insert(experiment, config)
    window = max(experiment.initial_collect_steps, 1) * ratio * config.tolerance
    return max(window, config.min_error_batches * experiment.batch_size, 2.0 * max(ratio, 1.0))


def shared_variables(experiment: Experiment, finished: tf.Variable):
    """What the learner pushes and collectors pull straight into their own variables: policy
    weights, the run's env-step count (a collector's ε clock) and whether the run is over."""
    return {
        "policy": experiment.agent.policy.variables(),
        "env_steps": experiment.env_steps.environment_steps,
        "finished": finished,
    }


def finished_flag() -> tf.Variable:
    return tf.Variable(False, dtype=tf.bool, trainable=False, name="finished")


def episode_spec() -> dict:
    return {
        "return": tf.TensorSpec([], tf.float32),
        "length": tf.TensorSpec([], tf.int64),
    }


def build_tables(experiment: Experiment, config: DistributedSettings) -> list[reverb.Table]:
    """The replay table (rate-limited), the weights table (one item) and the episode log."""
    ratio = samples_per_insert(experiment, config)
    if config.prioritized:
        selector = reverb.selectors.Prioritized(config.priority_exponent)
    else:
        selector = reverb.selectors.Uniform()
    replay = reverb.Table(
        name=REPLAY_TABLE,
        sampler=selector,
        remover=reverb.selectors.Fifo(),
        max_size=experiment.replay_capacity,
        rate_limiter=reverb.rate_limiters.SampleToInsertRatio(
            samples_per_insert=ratio,
            min_size_to_sample=max(experiment.initial_collect_steps, 1),
            error_buffer=error_buffer(experiment, config),
        ),
        signature=tensor_spec.add_outer_dim(experiment.agent.collect_data_spec, SEQUENCE_LENGTH),
    )
    weights = reverb.Table(
        name=WEIGHTS_TABLE,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=1,
        rate_limiter=reverb.rate_limiters.MinSize(1),
        signature=tf.nest.map_structure(
            lambda v: tf.TensorSpec(v.shape, v.dtype),
            shared_variables(experiment, finished_flag()),
        ),
    )
    episodes = reverb.Table(
        name=EPISODES_TABLE,
        sampler=reverb.selectors.Fifo(),
        remover=reverb.selectors.Fifo(),
        max_size=EPISODES_KEPT,
        max_times_sampled=1,
        rate_limiter=reverb.rate_limiters.MinSize(1),
        signature=episode_spec(),
    )
    return [replay, weights, episodes]


def wait_for_server(address: str, timeout_s: float) -> reverb.Client:
    """A client once the server answers; a one-line UserError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    client = reverb.Client(address)
    while True:
        left = deadline - time.monotonic()
        try:
            info = client.server_info(timeout=max(1, min(5, int(left))))
        except (reverb.errors.DeadlineExceededError, RuntimeError, ValueError):
            info = None
        if info is not None:
            if REPLAY_TABLE not in info:
                raise UserError(
                    f"the Reverb server at {address} has no {REPLAY_TABLE!r} table: it is not "
                    "a pipeline.distributed.server; fix --server"
                )
            return client
        if time.monotonic() >= deadline:
            raise UserError(
                f"no Reverb server answered at {address} within {timeout_s:.0f} s: start "
                "python -m pipeline.distributed.server first or fix --server"
            )
        time.sleep(0.5)


def check_port_free(port: int) -> None:
    """Refuses a port another process listens on, before Reverb's gRPC noise would."""
    with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as error:
            raise UserError(
                f"port {port} is not free ({error.strerror}): pick another with --port or "
                "stop the process that holds it"
            ) from None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def learner_switches() -> list[str]:
    """The launcher's --no_lock and --trust_run_dir, passed on to the learner: the role that
    holds the run's lock and reads its checkpoints."""
    return [f"--{name}" for name in ("no_lock", "trust_run_dir") if flags.FLAGS[name].value]
