"""The learner: trains from the Reverb server, pushes weights, owns the run directory.

    python -m pipeline.distributed.learner --gin_file=dqn_cartpole.gin --root_dir=RUN \
        --server=HOST:PORT --gin_bindings=DqnAgent.n_step_update=1

It is the single-process loop (`pipeline.loops.base` via `Experiment`) with another data path:
environment steps are the transitions the server has received from all collectors, and each
iteration makes the updates those steps are due under the gin file's update ratio (the same
`_updates_due` as one process). Evaluation, checkpoints, exports, resume and signals are the
loop's own; the replay lives on the server and is checkpointed there.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

import numpy as np
import reverb
import tensorflow as tf
from absl import flags
from tf_agents.experimental.distributed import reverb_variable_container
from tf_agents.replay_buffers import reverb_replay_buffer

from pipeline import cli, train
from pipeline.distributed import common
from pipeline.errors import UserError
from pipeline.run.metrics import MetricsLog
from pipeline.run.preemption import PreemptionFlag

FLAGS = flags.FLAGS

IDLE_WAIT_S = 0.02  # between polls of the server while no update is due
# At most this many updates between two reads of the server (and checks for signals).
UPDATES_PER_ITERATION = 64


class Learner(common.RoleExperiment):
    def __init__(self, root_dir: str | Path, server_address: str):
        super().__init__(root_dir)
        self.config = common.settings()
        self.server_address = server_address
        self._client = common.wait_for_server(server_address, self.config.connect_timeout_s)
        common.check_server_matches(self._client, self, server_address)
        self._tf_client = reverb.TFClient(server_address)
        self._finished = common.finished_flag()
        self._weights = reverb_variable_container.ReverbVariableContainer(
            server_address, table_names=[common.WEIGHTS_TABLE]
        )
        dataset = reverb_replay_buffer.ReverbReplayBuffer(
            self.agent.collect_data_spec,
            common.REPLAY_TABLE,
            sequence_length=common.SEQUENCE_LENGTH,
            server_address=server_address,
        ).as_dataset(sample_batch_size=self.batch_size, num_steps=common.SEQUENCE_LENGTH)
        self._samples = iter(dataset.prefetch(2))
        self._loop["server_inserts"] = 0  # the server's insert count when last read
        self._recent_returns: collections.deque = collections.deque(maxlen=10)
        self._pushed_at: int | None = None

    # --- the data path ------------------------------------------------------------------

    def _update_once(self) -> tf.Tensor:
        experience, info = next(self._samples)
        experience = self._training_batch(experience)
        if not self.config.prioritized:
            return self.agent.train(experience).loss
        # Importance weights (N P(i))^-beta, scaled so the largest is 1 (Schaul et al. 2016).
        probability = tf.cast(info.probability[:, 0], tf.float32)
        size = tf.cast(info.table_size[:, 0], tf.float32)
        weights = tf.pow(size * probability, -self.config.importance_exponent)
        weights /= tf.reduce_max(weights)
        loss_info = self.agent.train(experience, weights=weights)
        td_error = tf.reshape(loss_info.extra.td_error, [self.batch_size, -1])[:, 0]
        self._tf_client.update_priorities(
            common.REPLAY_TABLE,
            info.key[:, 0],
            tf.cast(tf.abs(td_error) + 1e-6, tf.float64),
        )
        return loss_info.loss

    def _read_server(self) -> None:
        """Counts the collectors' new transitions and episodes into the loop's metrics."""
        info = self._client.server_info(timeout=30)
        inserted = int(info[common.REPLAY_TABLE].rate_limiter_info.insert_stats.completed)
        # A server restarted from an older Reverb checkpoint counts from lower down again.
        new = max(inserted - self._loop["server_inserts"], 0)
        self._loop["server_inserts"] = inserted
        steps = min(int(self.env_steps.result()) + new, self.total_env_steps)
        self.env_steps.environment_steps.assign(steps)
        unread = info[common.EPISODES_TABLE].current_size
        if unread:
            for sample in self._client.sample(common.EPISODES_TABLE, num_samples=unread):
                episode = tf.nest.pack_sequence_as(common.episode_spec(), sample[0].data)
                self._recent_returns.append(float(episode["return"]))
                self.episodes.number_episodes.assign_add(1)

    def _push(self) -> None:
        self._weights.push(
            common.shared_variables(self, self._finished),
            common.WEIGHTS_TABLE,
        )
        self._pushed_at = int(self.train_step.numpy())

    # --- the loop's hooks ---------------------------------------------------------------

    def _iteration(self, log: MetricsLog, env_steps: int) -> None:
        self._read_server()
        env_steps = int(self.env_steps.result())
        due = self._updates_due(env_steps) - int(self.train_step.numpy())
        if env_steps < self.total_env_steps:  # the last iteration makes every update owed
            due = min(due, UPDATES_PER_ITERATION)
        if due > 0:
            loss = float(self.train_updates(tf.constant(due, tf.int64)))
            self._loop["loss"] = loss
            log.scalars("train", {"loss": loss}, env_steps)
        if int(self.train_step.numpy()) - self._pushed_at >= self.config.weight_push_interval:
            self._push()
        if due <= 0:
            time.sleep(IDLE_WAIT_S)

    def restore(self) -> int | None:
        loaded = super().restore()
        self._push()  # collectors start (or go on) with the weights the run resumes from
        return loaded

    def run(self, stop: PreemptionFlag | None = None) -> list[dict]:
        rows = super().run(stop)
        self._finished.assign(True)
        self._push()  # collectors stop when they see it
        return rows

    def _save_extra(self, directory: Path) -> None:
        """The replay is the server's to checkpoint."""

    def _restore_replay(self, directory: Path) -> None:
        self._replay_restored = True

    def _after_restore(self) -> None:
        """Nothing to refill: the server kept (or restored) the replay."""

    def _row_extras(self) -> dict:
        extras = super()._row_extras()
        if self._recent_returns:  # returns are the collectors' episodes, not the learner's
            extras["train_return_mean10"] = float(np.mean(self._recent_returns))
        return extras

    def _train_scalars(self) -> dict:
        scalars = super()._train_scalars()
        if self._recent_returns:
            scalars["return_mean10"] = float(np.mean(self._recent_returns))
        return scalars


def build_learner(root_dir: Path) -> Learner:
    if not FLAGS.server:
        raise UserError("--server is required: pass the Reverb server's HOST:PORT")
    return Learner(root_dir, FLAGS.server)


def main(argv: list[str]) -> None:
    train.execute(argv, build_learner, launched=True)


if __name__ == "__main__":
    cli.run(main)
