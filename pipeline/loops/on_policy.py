"""The on-policy loop (REINFORCE, A2C, PPO), configured by gin under `train_on_policy`.

Each iteration collects fresh experience with the current stochastic policy, trains on it
once (the agent decides how many passes), and throws it away. Two ways to collect:

  collect_episodes_per_iteration = N   whole episodes (REINFORCE needs complete returns)
  collect_steps_per_iteration = T      T steps per env lane (A2C, PPO), episodes may span
                                       iterations: the last step of one batch is carried
                                       into the next as its first, so every transition is
                                       trained on once and each batch can bootstrap.

Evaluation, checkpoints, resume and signals are `pipeline.loops.base.TrainingLoop`'s, as for
DQN. A run picks this loop with `run_experiment.loop = @train_on_policy` (see the gin files).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import gin
import numpy as np
import tensorflow as tf
from absl import logging
from tf_agents.agents.reinforce import reinforce_agent
from tf_agents.drivers import dynamic_episode_driver, dynamic_step_driver
from tf_agents.networks import actor_distribution_network
from tf_agents.policies import greedy_policy
from tf_agents.replay_buffers import tf_uniform_replay_buffer

import envs
from pipeline.agents import build
from pipeline.agents.policies import GeneratorSamplingPolicy
from pipeline.errors import UserError
from pipeline.loops.base import TrainingLoop
from pipeline.loops.settings import LoopSettings
from pipeline.run import plain_data, trust
from pipeline.run.checkpoints import UNSIGNED
from pipeline.run.metrics import MetricsLog

CARRY = "carry.npz"  # the step carried into the next iteration (plain arrays)
LEGACY_CARRY = "carry.pkl"  # its pickle, before pickles were signed: loaded only when trusted


@gin.configurable("train_on_policy", denylist=["root_dir"])
class OnPolicyExperiment(TrainingLoop):
    setting = "train_on_policy"

    def __init__(
        self,
        root_dir: str | Path,
        *,
        seed: int = 0,
        env_loader: Callable[..., envs.GymnasiumEnvironment] = envs.load_gymnasium,
        num_envs: int = 1,
        agent: Callable = reinforce_agent.ReinforceAgent,
        actor_network: Callable = actor_distribution_network.ActorDistributionNetwork,
        value_network: Callable | None = None,
        optimizer: Callable = tf.keras.optimizers.Adam,
        total_env_steps: int = 100_000,
        collect_episodes_per_iteration: int | None = None,
        collect_steps_per_iteration: int | None = None,
        max_steps_per_iteration: int = 10_000,
        eval_interval: int = 5_000,
        eval_episodes: int = 10,
        eval_at_start: bool = True,
        progress_interval_s: float = 10.0,
        checkpoint_interval: int | None = None,
        checkpoint_interval_s: float = 1800.0,
        checkpoints_to_keep: int = 3,
        deterministic: bool = True,
    ):
        """See gin/reinforce_cartpole.gin, a2c_cartpole.gin and ppo_cartpole.gin.

        `max_steps_per_iteration` bounds the items one iteration may collect per lane (the
        size of the on-policy buffer; episode boundaries add an item each, so leave room);
        an iteration that collects more stops with an error.
        """
        if (collect_episodes_per_iteration is None) == (collect_steps_per_iteration is None):
            raise UserError(
                "set exactly one of train_on_policy.collect_episodes_per_iteration and "
                "train_on_policy.collect_steps_per_iteration: fix the bindings"
            )
        self._setup(root_dir, LoopSettings.of(locals()), first_eval=eval_interval)
        self.max_steps_per_iteration = max_steps_per_iteration
        self.agent = build.build_on_policy(
            agent,
            actor_network,
            value_network,
            optimizer,
            self.train_env.time_step_spec(),
            self.train_env.action_spec(),
            train_step_counter=self.train_step,
        )
        self._buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(
            self.agent.collect_data_spec,
            batch_size=self.train_env.batch_size,
            max_length=max_steps_per_iteration + 1,
        )
        observers = [
            self._buffer.add_batch,
            self.env_steps,
            self.episodes,
            self.train_return,
            self.train_length,
        ]
        collect_policy = GeneratorSamplingPolicy(
            self.agent.collect_policy, self._collect_rng, name="collect"
        )
        if collect_episodes_per_iteration is not None:
            driver = dynamic_episode_driver.DynamicEpisodeDriver(
                self.train_env,
                collect_policy,
                observers=observers,
                num_episodes=collect_episodes_per_iteration,
            )
        else:
            driver = dynamic_step_driver.DynamicStepDriver(
                self.train_env,
                collect_policy,
                observers=observers,
                num_steps=collect_steps_per_iteration * self.train_env.batch_size,
            )
        self._carry_last_step = collect_steps_per_iteration is not None
        self._carry = None  # the previous batch's last step, [lanes, 1, ...] NumPy
        self._collect_fn = tf.function(driver.run, autograph=False)
        self._train_fn = tf.function(self.agent.train, reduce_retracing=True)
        greedy = greedy_policy.GreedyPolicy(self.agent.policy)
        self._set_eval_policy(greedy, export=greedy)

    def _iteration(self, log: MetricsLog, env_steps: int) -> None:
        self._time_step, _ = self._collect_fn(self._time_step)
        experience = self._buffer.gather_all()
        self._buffer.clear()
        steps = int(tf.nest.flatten(experience)[0].shape[1])
        if steps > self.max_steps_per_iteration:
            raise UserError(
                f"an iteration collected {steps} steps per lane, more than "
                f"train_on_policy.max_steps_per_iteration ({self.max_steps_per_iteration}): "
                "raise it"
            )
        if self._carry is not None:
            experience = tf.nest.map_structure(
                lambda carried, new: tf.concat([carried, new], axis=1), self._carry, experience
            )
        if self._carry_last_step:
            self._carry = tf.nest.map_structure(lambda x: x[:, -1:].numpy(), experience)
        loss = float(self._train_fn(experience).loss)
        self._loop["loss"] = loss
        log.scalars("train", {"loss": loss}, int(self.env_steps.result()))

    def _save_extra(self, directory: Path) -> None:
        """The carried step as plain arrays (none: no file), in `collect_data_spec`'s order."""
        if self._carry is not None:
            plain_data.save(directory / CARRY, tf.nest.flatten(self._carry))

    def _restore_extra(self, directory: Path) -> None:
        """Reads the carried step back (`_cut_episodes` drops it if new episodes start).

        Checkpoints from before pickles were signed pickled it: loaded with --trust_run_dir.
        """
        self._carry = None
        path, legacy = directory / CARRY, directory / LEGACY_CARRY
        if path.exists():
            flat = [np.asarray(array) for array in plain_data.load(path)]
            self._carry = tf.nest.pack_sequence_as(self.agent.collect_data_spec, flat)
        elif legacy.exists():
            if trust.run_dir_trusted():
                self._carry = pickle.loads(legacy.read_bytes())
            else:
                logging.warning(
                    "checkpoint %s: not loading %s: %s; the step carried into the next "
                    "iteration is dropped (pass --trust_run_dir to load it)",
                    directory,
                    legacy.name,
                    UNSIGNED,
                )

    def _cut_episodes(self, last_time_step) -> None:
        """The carried step's successor is gone with the old episodes: drop it rather than
        pair it with the new episodes' FIRST steps."""
        self._carry = None
