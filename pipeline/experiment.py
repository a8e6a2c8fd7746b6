"""The collect-train-eval loop, configured by gin under the name `train`.

One object owns one run: it builds the environments, agent and replay buffer from gin
references in `__init__` (touching no files, so a bad setting leaves nothing behind), then
`run()` writes the run directory and loops: collect with the exploration policy, train at
a fixed ratio of updates to environment steps, evaluate the greedy policy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import gin
import tensorflow as tf
from absl import logging
from tf_agents.agents.dqn import dqn_agent
from tf_agents.drivers import dynamic_step_driver
from tf_agents.environments import tf_py_environment
from tf_agents.metrics import tf_metrics
from tf_agents.networks import q_network
from tf_agents.policies import epsilon_greedy_policy, py_tf_eager_policy, random_tf_policy

import envs
from envs.errors import UserError
from pipeline import agents, networks, rundir  # noqa: F401 (networks: gin names)
from pipeline.evaluation import Evaluator
from pipeline.metrics import MetricsLog, Progress
from pipeline.replay import UniformReplay
from pipeline.schedules import LinearSchedule

EVAL_SEED_OFFSET = 1_000_003  # keeps eval resets apart from the training env's seed


@gin.configurable("train", denylist=["root_dir"])
class Experiment:
    def __init__(
        self,
        root_dir: str | Path,
        *,
        seed: int = 0,
        env_loader: Callable[..., envs.GymnasiumEnvironment] = envs.load_gymnasium,
        agent: Callable = dqn_agent.DqnAgent,
        network: Callable = q_network.QNetwork,
        optimizer: Callable = tf.keras.optimizers.Adam,
        epsilon: Callable[[tf.Tensor], tf.Tensor] = LinearSchedule(),
        total_env_steps: int = 50_000,
        initial_collect_steps: int = 1_000,
        collect_steps_per_iteration: int = 1,
        train_steps_per_iteration: int = 1,
        batch_size: int = 64,
        replay: Callable = UniformReplay,
        replay_capacity: int = 100_000,
        eval_interval: int = 5_000,
        eval_episodes: int = 10,
        eval_at_start: bool = True,
        eval_epsilon: float = 0.0,
        progress_interval_s: float = 10.0,
        deterministic: bool = True,
    ):
        """Builds everything a run needs; see gin/dqn_cartpole.gin for what each knob means.

        `train_steps_per_iteration / collect_steps_per_iteration` is the update ratio: it is
        held exactly over the run, whatever the size of the last (or any) collection chunk.
        """
        self._check_sizes(locals())
        self.root_dir = Path(root_dir)
        self.seed = seed
        self.total_env_steps = total_env_steps
        self.initial_collect_steps = initial_collect_steps
        self.collect_steps_per_iteration = collect_steps_per_iteration
        self.updates_per_env_step = train_steps_per_iteration / collect_steps_per_iteration
        self.batch_size = batch_size
        self.eval_interval = eval_interval
        self.eval_at_start = eval_at_start
        self.progress_interval_s = progress_interval_s

        tf.keras.utils.set_random_seed(seed)
        if deterministic:
            tf.config.experimental.enable_op_determinism()

        self.train_env = tf_py_environment.TFPyEnvironment(env_loader(seed=seed, training=True))
        self.evaluator = Evaluator(
            [env_loader(seed=None, training=False) for _ in range(eval_episodes)],
            seeds=[seed * EVAL_SEED_OFFSET + EVAL_SEED_OFFSET + i for i in range(eval_episodes)],
        )

        self.env_steps = tf_metrics.EnvironmentSteps()
        self.episodes = tf_metrics.NumberOfEpisodes()
        self.train_return = tf_metrics.AverageReturnMetric(buffer_size=10)
        self.train_length = tf_metrics.AverageEpisodeLengthMetric(buffer_size=10)
        self.train_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="train_step")
        self.epsilon = lambda: epsilon(self.env_steps.result())

        self.agent = agents.build_dqn_family(
            agent,
            network,
            optimizer,
            self.train_env.time_step_spec(),
            self.train_env.action_spec(),
            epsilon=self.epsilon,
            train_step_counter=self.train_step,
        )
        self.replay = replay(
            data_spec=self.agent.collect_data_spec,
            batch_size=self.train_env.batch_size,
            capacity=replay_capacity,
            seed=seed,
        )
        self._observers = [
            self.replay.add_batch,
            self.env_steps,
            self.episodes,
            self.train_return,
            self.train_length,
        ]
        self._random_policy = random_tf_policy.RandomTFPolicy(
            self.train_env.time_step_spec(), self.train_env.action_spec()
        )
        self._collect_fns: dict[str, Callable] = {}
        self._chunk = tf.Variable(0, dtype=tf.int32, trainable=False, name="collect_chunk")
        self._time_step = None
        eval_policy = self.agent.policy
        if eval_epsilon > 0:  # Atari protocols evaluate with a little noise (see their gin)
            eval_policy = epsilon_greedy_policy.EpsilonGreedyPolicy(eval_policy, eval_epsilon)
        self._eval_policy = py_tf_eager_policy.PyTFEagerPolicy(
            eval_policy, use_tf_function=True, batch_time_steps=False
        )
        self.train_updates = tf.function(self._train_updates, autograph=False)

    @staticmethod
    def _check_sizes(settings: dict) -> None:
        positive = (
            "total_env_steps",
            "collect_steps_per_iteration",
            "train_steps_per_iteration",
            "batch_size",
            "replay_capacity",
            "eval_interval",
            "eval_episodes",
        )
        for name in positive:
            if settings[name] <= 0:
                raise UserError(
                    f"train.{name} must be positive, got {settings[name]}: fix the binding"
                )
        if not 0.0 <= settings["eval_epsilon"] <= 1.0:
            raise UserError(
                f"train.eval_epsilon must be in [0, 1], got {settings['eval_epsilon']}: "
                "fix the binding"
            )
        if settings["initial_collect_steps"] < 0:
            raise UserError("train.initial_collect_steps must be >= 0: fix the binding")
        if settings["initial_collect_steps"] >= settings["total_env_steps"]:
            raise UserError(
                f"train.initial_collect_steps ({settings['initial_collect_steps']}) leaves no "
                f"training within train.total_env_steps ({settings['total_env_steps']}): "
                "lower the first or raise the second"
            )

    # --- the pieces of one iteration -------------------------------------------------

    def _collect(self, policy, num_steps: int) -> None:
        """Steps the train env `num_steps` times inside one tf.function per policy.

        The step count lives in a variable the driver reads, so chunks of any size reuse
        one traced graph instead of tracing a new one per size.
        """
        if policy.name not in self._collect_fns:
            driver = dynamic_step_driver.DynamicStepDriver(
                self.train_env, policy, observers=self._observers, num_steps=self._chunk
            )
            self._collect_fns[policy.name] = tf.function(driver.run, autograph=False)
        self._chunk.assign(num_steps)
        self._time_step, _ = self._collect_fns[policy.name](self._time_step)

    def collect_random(self, num_steps: int) -> None:
        """Steps the train env with the uniform-random policy (the initial collection)."""
        self._collect(self._random_policy, num_steps)

    def _train_updates(self, num_updates: tf.Tensor) -> tf.Tensor:
        """Runs `num_updates` sampled updates in one graph loop; returns their mean loss."""

        def update(i, total):
            return i + 1, total + self.agent.train(self.replay.sample(self.batch_size)).loss

        _, total = tf.while_loop(
            lambda i, _: i < num_updates,
            update,
            (tf.constant(0, num_updates.dtype), tf.constant(0.0)),
            parallel_iterations=1,
        )
        return total / tf.maximum(tf.cast(num_updates, tf.float32), 1.0)

    def _updates_due(self, env_steps: int) -> int:
        learning_steps = max(env_steps - self.initial_collect_steps, 0)
        return math.floor(learning_steps * self.updates_per_env_step + 1e-9)

    def _evaluate(self, log: MetricsLog, env_steps: int) -> dict[str, float]:
        stats = self.evaluator.run(self._eval_policy).summary()
        log.scalars(
            "eval",
            {
                "return_mean": stats["eval_return_mean"],
                "return_std": stats["eval_return_std"],
                "episode_length_mean": stats["eval_length_mean"],
            },
            env_steps,
        )
        logging.info(
            "eval at %s env steps: return %.1f +- %.1f over %d episodes",
            f"{env_steps:,}",
            stats["eval_return_mean"],
            stats["eval_return_std"],
            stats["eval_episodes"],
        )
        return stats

    def _record(self, log: MetricsLog, stats: dict[str, float], loss: float | None) -> dict:
        row = {
            "env_steps": int(self.env_steps.result()),
            "train_steps": int(self.train_step.numpy()),
            "episodes": int(self.episodes.result()),
            **stats,
            "train_return_mean10": float(self.train_return.result()),
            "train_loss": loss,
            "epsilon": float(self.epsilon()),
        }
        log.record(row)
        return row

    # --- the loop ------------------------------------------------------------------

    def run(self) -> list[dict]:
        """Trains to `total_env_steps`; returns the metrics.jsonl rows it wrote."""
        log = MetricsLog(self.root_dir)
        first_iteration = True
        progress = Progress(self.total_env_steps)
        self._time_step = self.train_env.reset()
        last_eval: dict[str, float] = {}
        rows: list[dict] = []
        loss: float | None = None

        if self.eval_at_start:
            last_eval = self._evaluate(log, 0)
            rows.append(self._record(log, last_eval, loss))
        if self.initial_collect_steps:
            self.collect_random(self.initial_collect_steps)
            progress.update(int(self.env_steps.result()))  # rates from here on: learning

        next_eval = (int(self.env_steps.result()) // self.eval_interval + 1) * self.eval_interval
        last_progress = -math.inf
        collect_policy = self.agent.collect_policy
        while (env_steps := int(self.env_steps.result())) < self.total_env_steps:
            chunk = min(
                self.collect_steps_per_iteration,
                next_eval - env_steps,
                self.total_env_steps - env_steps,
            )
            self._collect(collect_policy, chunk)
            env_steps = int(self.env_steps.result())
            updates = self._updates_due(env_steps) - int(self.train_step.numpy())
            if updates > 0:
                loss = float(self.train_updates(tf.constant(updates, tf.int64)))
                log.scalars("train", {"loss": loss}, env_steps)
            if first_iteration:  # every configurable has now been called at least once
                first_iteration = False
                write_operative_config(self.root_dir)
                log.text("train", "operative_config", gin.operative_config_str(), env_steps)

            if env_steps >= next_eval or env_steps >= self.total_env_steps:
                last_eval = self._evaluate(log, env_steps)
                rows.append(self._record(log, last_eval, loss))
                next_eval += self.eval_interval
            if progress.elapsed() - last_progress >= self.progress_interval_s:
                last_progress = progress.elapsed()
                log.scalars(
                    "train",
                    {
                        "epsilon": float(self.epsilon()),
                        "return_mean10": float(self.train_return.result()),
                        "episode_length_mean10": float(self.train_length.result()),
                        "steps_per_sec": progress.update(env_steps),
                    },
                    env_steps,
                )
                logging.info(
                    progress.line(
                        env_steps,
                        last_eval.get("eval_return_mean"),
                        f"loss {loss:.3g} | eps {float(self.epsilon()):.3f}"
                        if loss is not None
                        else "",
                    )
                )
        log.close()
        self.evaluator.close()
        logging.info(
            "done in %s",
            progress.line(self.total_env_steps, last_eval.get("eval_return_mean"), overall=True),
        )
        return rows


def write_run_files(root_dir: Path, info: dict) -> None:
    """config.gin (as parsed) and run.json, both before training starts."""
    rundir.atomic_write_text(root_dir / "config.gin", gin.config_str())
    rundir.write_json(root_dir / "run.json", info)


def write_operative_config(root_dir: Path) -> None:
    rundir.atomic_write_text(root_dir / "operative_config.gin", gin.operative_config_str())
