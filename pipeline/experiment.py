"""The collect-train-eval loop, configured by gin under the name `train`.

One object owns one run: it builds the environments, agent and replay buffer from gin
references in `__init__` (touching no files, so a bad setting leaves nothing behind), then
`run()` writes the run directory and loops: collect with the exploration policy, train at
a fixed ratio of updates to environment steps, evaluate the greedy policy.
"""

from __future__ import annotations

import json
import math
import pickle
import time
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
from tf_agents.policies import py_tf_eager_policy

import envs
from envs.errors import UserError
from pipeline import agents, networks, rundir  # noqa: F401 (networks: gin names)
from pipeline.checkpoints import CheckpointStore
from pipeline.evaluation import Evaluator
from pipeline.metrics import MetricsLog, Progress
from pipeline.policies import EpsilonGreedyPolicy, UniformRandomPolicy
from pipeline.preemption import Preempted, PreemptionFlag
from pipeline.replay import UniformReplay
from pipeline.schedules import LinearSchedule

EVAL_SEED_OFFSET = 1_000_003  # keeps eval resets apart from the training env's seed
RANDOM_CHUNK = 5_000  # initial random steps per call: signals wait at most one chunk


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
        checkpoint_interval: int | None = None,
        checkpoint_interval_s: float = 1800.0,
        checkpoints_to_keep: int = 3,
        checkpoint_replay: bool = True,
        deterministic: bool = True,
    ):
        """Builds everything a run needs; see gin/dqn_cartpole.gin for what each knob means.

        `train_steps_per_iteration / collect_steps_per_iteration` is the update ratio: it is
        held exactly over the run, whatever the size of the last (or any) collection chunk.
        `checkpoint_interval` (env steps; default: `eval_interval`) and `checkpoint_interval_s`
        (wall clock) say when to checkpoint; neither changes what the run computes.
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
        self.checkpoint_interval = checkpoint_interval or eval_interval
        self.checkpoint_interval_s = checkpoint_interval_s
        self.checkpoint_replay = checkpoint_replay
        self.checkpoints = CheckpointStore(self.root_dir / "checkpoints", keep=checkpoints_to_keep)
        # What the loop needs besides TF variables to continue exactly (see checkpoints).
        self._loop: dict = {
            "next_eval": (initial_collect_steps // eval_interval + 1) * eval_interval,
            "evaluated_at": None,
            "last_eval": {},
            "loss": None,
        }
        self._replay_restored = False

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
        # Every random draw of collection comes from this Generator, which checkpoints hold.
        self._collect_rng = tf.random.Generator.from_seed(seed)
        self._random_policy = UniformRandomPolicy(
            self.train_env.time_step_spec(), self.train_env.action_spec(), self._collect_rng
        )
        self._collect_policy = EpsilonGreedyPolicy(
            self.agent.policy, self.epsilon, self._collect_rng, name="collect"
        )
        self._collect_fns: dict[tuple, Callable] = {}
        self._chunk = tf.Variable(0, dtype=tf.int32, trainable=False, name="collect_chunk")
        self._time_step = None
        eval_policy = self.agent.policy
        # Reseeded before each evaluation, so an evaluation depends only on the weights.
        self._eval_rng = tf.random.Generator.from_seed(seed)
        if eval_epsilon > 0:  # Atari protocols evaluate with a little noise (see their gin)
            eval_policy = EpsilonGreedyPolicy(eval_policy, eval_epsilon, self._eval_rng, "eval")
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
        if settings["checkpoint_interval"] is not None and settings["checkpoint_interval"] <= 0:
            raise UserError("train.checkpoint_interval must be positive (or None): fix the binding")
        if settings["checkpoint_interval_s"] <= 0:
            raise UserError("train.checkpoint_interval_s must be positive: fix the binding")
        if settings["initial_collect_steps"] < 0:
            raise UserError("train.initial_collect_steps must be >= 0: fix the binding")
        if settings["initial_collect_steps"] >= settings["total_env_steps"]:
            raise UserError(
                f"train.initial_collect_steps ({settings['initial_collect_steps']}) leaves no "
                f"training within train.total_env_steps ({settings['total_env_steps']}): "
                "lower the first or raise the second"
            )

    # --- the pieces of one iteration -------------------------------------------------

    def _collect(self, policy, num_steps: int, observers: list | None = None) -> None:
        """Steps the train env `num_steps` times inside one tf.function per policy.

        The step count lives in a variable the driver reads, so chunks of any size reuse
        one traced graph instead of tracing a new one per size.
        """
        observers = self._observers if observers is None else observers
        key = (policy.name, len(observers))
        if key not in self._collect_fns:
            driver = dynamic_step_driver.DynamicStepDriver(
                self.train_env, policy, observers=observers, num_steps=self._chunk
            )
            self._collect_fns[key] = tf.function(driver.run, autograph=False)
        self._chunk.assign(num_steps)
        self._time_step, _ = self._collect_fns[key](self._time_step)

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

    def _evaluate(
        self, log: MetricsLog, env_steps: int, stop: PreemptionFlag
    ) -> dict[str, float] | None:
        """Evaluates and logs; None if a signal cut it short (it runs again after resume)."""
        self._eval_rng.reset_from_seed(self.seed * EVAL_SEED_OFFSET + env_steps)
        episodes = self.evaluator.run(self._eval_policy, should_stop=lambda: stop.requested)
        if episodes is None:
            return None
        stats = episodes.summary()
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

    # --- checkpoints ---------------------------------------------------------------

    def _inner_env(self):
        """The single py env under TFPyEnvironment's batching, if there is one."""
        pyenv = self.train_env.pyenv
        envs_ = getattr(pyenv, "envs", None)
        return envs_[0] if envs_ is not None and len(envs_) == 1 else pyenv

    def _tf_state(self) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(
            agent=self.agent,
            train_step=self.train_step,
            env_steps=self.env_steps,
            episodes=self.episodes,
            train_return=self.train_return,
            train_length=self.train_length,
            collect_rng=self._collect_rng,
        )

    def _write_checkpoint(self, directory: Path) -> None:
        self._tf_state().write(str(directory / "tf" / "state"))
        (directory / "replay").mkdir()
        self.replay.save(directory / "replay", contents=self.checkpoint_replay)
        env_state = getattr(self._inner_env(), "get_state", lambda: None)()
        if env_state is not None:
            (directory / "env.pkl").write_bytes(env_state)
            time_step = tf.nest.map_structure(lambda t: t.numpy(), self._time_step)
            (directory / "time_step.pkl").write_bytes(pickle.dumps(time_step))
        rundir.write_json(directory / "loop.json", self._loop)

    def _read_checkpoint(self, directory: Path) -> None:
        self._tf_state().read(str(directory / "tf" / "state")).assert_consumed()
        self._loop = json.loads((directory / "loop.json").read_text())
        self._replay_restored = self.replay.restore(directory / "replay")
        self._time_step = self.train_env.reset()  # a fresh episode unless the env comes back
        if (directory / "env.pkl").exists():
            self._inner_env().set_state((directory / "env.pkl").read_bytes())
            time_step = pickle.loads((directory / "time_step.pkl").read_bytes())
            self._time_step = tf.nest.map_structure(tf.convert_to_tensor, time_step)
        else:
            logging.warning("the train env's state is not in the checkpoint: a new episode starts")

    def _checkpoint(self, log: MetricsLog) -> None:
        env_steps = int(self.env_steps.result())
        log.flush()  # everything logged so far belongs to this checkpoint
        path = self.checkpoints.save(env_steps, self._write_checkpoint)
        self._schedule_checkpoint(env_steps)
        logging.info("checkpoint at %s env steps: %s", f"{env_steps:,}", path)

    def _schedule_checkpoint(self, env_steps: int) -> None:
        interval = self.checkpoint_interval
        self._next_checkpoint = (env_steps // interval + 1) * interval
        self._last_checkpoint_time = time.monotonic()

    def _checkpoint_due(self, env_steps: int) -> bool:
        return (
            env_steps >= self._next_checkpoint
            or time.monotonic() - self._last_checkpoint_time >= self.checkpoint_interval_s
        )

    def restore(self) -> int | None:
        """Loads the newest usable checkpoint; returns its env steps (None: none yet)."""
        loaded = self.checkpoints.load_latest(self._read_checkpoint)
        if loaded is None:
            return None
        env_steps = loaded[0]
        logging.info("resumed from checkpoint at %s env steps", f"{env_steps:,}")
        if not self._replay_restored:
            refill = min(self.initial_collect_steps, self.replay.capacity)
            logging.info("replay contents not checkpointed: refilling %s transitions", refill)
            self._collect(self._collect_policy, refill, observers=[self.replay.add_batch])
        return env_steps

    # --- the loop ------------------------------------------------------------------

    def _eval_due(self, env_steps: int) -> bool:
        due = (
            env_steps >= self._loop["next_eval"]
            or env_steps >= self.total_env_steps
            or (env_steps == 0 and self.eval_at_start)
        )
        return due and self._loop["evaluated_at"] != env_steps

    def run(self, stop: PreemptionFlag | None = None) -> list[dict]:
        """Trains to `total_env_steps`, resuming from the newest checkpoint if there is one.

        Returns the metrics.jsonl rows this call wrote. With `stop`, a signal makes the loop
        write a checkpoint and raise `Preempted` at the next iteration boundary.
        """
        stop = stop or PreemptionFlag()
        resumed_at = self.restore()
        fresh = resumed_at is None
        # A directory that holds a run but no checkpoint restarts from zero: drop its rows.
        log = MetricsLog(self.root_dir, keep_until=-1 if fresh else resumed_at)
        if fresh:
            self._time_step = self.train_env.reset()
        env_steps = int(self.env_steps.result())
        progress = Progress(self.total_env_steps, start_env_steps=env_steps)
        self._schedule_checkpoint(env_steps)
        rows: list[dict] = []
        last_progress = -math.inf
        wrote_operative_config = False

        while True:
            env_steps = int(self.env_steps.result())
            if self._eval_due(env_steps):
                stats = self._evaluate(log, env_steps, stop)
                if stats is not None:
                    self._loop["last_eval"] = stats
                    self._loop["evaluated_at"] = env_steps
                    while self._loop["next_eval"] <= env_steps:
                        self._loop["next_eval"] += self.eval_interval
                    rows.append(self._record(log, stats, self._loop["loss"]))
            if stop.requested or (self._checkpoint_due(env_steps) and env_steps > 0):
                self._checkpoint(log)
            if stop.requested:
                log.close()
                raise Preempted(stop.signal_name or "a signal", env_steps)
            if env_steps >= self.total_env_steps:
                break

            if env_steps < self.initial_collect_steps:  # the random start, in chunks
                self.collect_random(min(RANDOM_CHUNK, self.initial_collect_steps - env_steps))
            else:
                chunk = min(
                    self.collect_steps_per_iteration,
                    self._loop["next_eval"] - env_steps,
                    self.total_env_steps - env_steps,
                )
                self._collect(self._collect_policy, chunk)
                env_steps = int(self.env_steps.result())
                updates = self._updates_due(env_steps) - int(self.train_step.numpy())
                if updates > 0:
                    loss = float(self.train_updates(tf.constant(updates, tf.int64)))
                    self._loop["loss"] = loss
                    log.scalars("train", {"loss": loss}, env_steps)
                if not wrote_operative_config:  # every configurable has now been called
                    wrote_operative_config = True
                    write_operative_config(self.root_dir)
                    if fresh:
                        log.text("train", "operative_config", gin.operative_config_str(), env_steps)

            env_steps = int(self.env_steps.result())
            if progress.elapsed() - last_progress >= self.progress_interval_s:
                last_progress = progress.elapsed()
                self._log_progress(log, progress, env_steps)
        self._checkpoint_at_end(log)
        log.close()
        self.evaluator.close()
        logging.info(
            "done in %s",
            progress.line(
                self.total_env_steps,
                self._loop["last_eval"].get("eval_return_mean"),
                overall=True,
            ),
        )
        return rows

    def _checkpoint_at_end(self, log: MetricsLog) -> None:
        """The finished state, so running the command again reports instead of retraining."""
        newest = self.checkpoints.complete()
        if not newest or newest[0][0] < int(self.env_steps.result()):
            self._checkpoint(log)

    def _log_progress(self, log: MetricsLog, progress: Progress, env_steps: int) -> None:
        loss = self._loop["loss"]
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
        extra = f"loss {loss:.3g} | eps {float(self.epsilon()):.3f}" if loss is not None else ""
        logging.info(
            progress.line(env_steps, self._loop["last_eval"].get("eval_return_mean"), extra)
        )


def write_run_files(root_dir: Path, info: dict) -> None:
    """config.gin (as parsed) and run.json, both before training starts."""
    rundir.atomic_write_text(root_dir / "config.gin", gin.config_str())
    rundir.write_json(root_dir / "run.json", info)


def record_resume(root_dir: Path, info: dict) -> None:
    """Appends this session (time, host, Slurm ids) to run.json's `resumes` list."""
    path = root_dir / "run.json"
    run = json.loads(path.read_text()) if path.exists() else info
    session = {k: info[k] for k in ("started", "host", "slurm", "command")}
    run.setdefault("resumes", []).append(session)
    rundir.write_json(path, run)


def write_operative_config(root_dir: Path) -> None:
    rundir.atomic_write_text(root_dir / "operative_config.gin", gin.operative_config_str())
