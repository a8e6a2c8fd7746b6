"""What every training loop shares: evaluation, checkpoints, resume, signals, progress.

A subclass builds its agent and data path and implements one `_iteration` (collect and
train); `TrainingLoop.run` schedules evaluations and checkpoints around it, resumes from the
newest checkpoint, and stops cleanly on a signal. The DQN family (`pipeline.loops.off_policy`)
and the on-policy agents (`pipeline.loops.on_policy`) are both this loop.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import gin
import tensorflow as tf
from absl import logging
from tf_agents.metrics import tf_metrics
from tf_agents.policies import py_policy, tf_policy

from envs.batched import training_env
from pipeline.loops.evaluation import (
    EVAL_SEED_OFFSET,
    Evaluator,
    eval_episode_seeds,
    py_policy_for_evaluation,
)
from pipeline.loops.export import PolicyExporter
from pipeline.loops.settings import LoopSettings
from pipeline.run import rundir
from pipeline.run.checkpoints import (
    CheckpointStore,
    guarded_write,
    read_loop_state,
    write_loop_state,
)
from pipeline.run.metrics import MetricsLog, Progress, metric_windows
from pipeline.run.preemption import Preempted, PreemptionFlag


class TrainingLoop:
    """The schedule around `_iteration`; subclasses call `_setup` first in `__init__`."""

    setting = "train"  # the gin name of the subclass, for error messages

    def _setup(self, root_dir: str | Path, settings: LoopSettings, first_eval: int) -> None:
        """Builds what every loop has: envs, evaluator, counters, schedules, checkpoints.

        `first_eval` is the first scheduled evaluation after step 0 (the DQN loop puts it
        after the random initial collection).
        """
        seed, env_loader = settings.seed, settings.env_loader
        self.root_dir = Path(root_dir)
        self.seed = seed
        self.total_env_steps = settings.total_env_steps
        self.eval_interval = settings.eval_interval
        self.eval_at_start = settings.eval_at_start
        self.eval_episodes = settings.eval_episodes
        self.final_eval_episodes = settings.final_eval_episodes
        if self.final_eval_episodes is None:
            self.final_eval_episodes = self.eval_episodes
        self.progress_interval_s = settings.progress_interval_s
        self.checkpoint_interval = settings.checkpoint_interval or settings.eval_interval
        self.checkpoint_interval_s = settings.checkpoint_interval_s
        keep = settings.checkpoints_to_keep
        self.checkpoints = CheckpointStore(self.root_dir / "checkpoints", keep=keep)
        # What the loop needs besides TF variables to continue exactly (see checkpoints).
        self._loop: dict = {
            "next_eval": first_eval,
            "evaluated_at": None,
            "last_eval": {},
            "loss": None,
            # Seconds trained (all sessions, to the newest checkpoint) and each evaluation's, by
            # env steps: in loop.json, not in metrics.jsonl, which a resume reproduces exactly.
            "wall_s": 0.0,
            "eval_s": {},
        }
        self._session_start = time.monotonic()

        tf.keras.utils.set_random_seed(seed)
        if settings.deterministic:
            tf.config.experimental.enable_op_determinism()

        self.train_env = training_env(env_loader, seed, settings.num_envs)
        pyenv = self.train_env.pyenv
        first = getattr(pyenv, "envs", [pyenv])[0]
        self.env_description = getattr(first, "description", type(first).__name__)
        most = max(self.eval_episodes, self.final_eval_episodes)
        self.evaluator = Evaluator(
            [env_loader(seed=None, training=False) for _ in range(most)],
            seeds=eval_episode_seeds(seed, most),
            processes=settings.eval_processes,
        )
        self.env_steps = tf_metrics.EnvironmentSteps()
        self.episodes = tf_metrics.NumberOfEpisodes()
        self.train_return = tf_metrics.AverageReturnMetric(
            buffer_size=10, batch_size=self.train_env.batch_size
        )
        self.train_length = tf_metrics.AverageEpisodeLengthMetric(
            buffer_size=10, batch_size=self.train_env.batch_size
        )
        self.train_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="train_step")
        # Every random draw of collection comes from this Generator, which checkpoints hold.
        self._collect_rng = tf.random.Generator.from_seed(seed)
        # Reseeded before each evaluation, so an evaluation depends only on the weights.
        self._eval_rng = tf.random.Generator.from_seed(seed)
        self._time_step = None
        self._stop = PreemptionFlag()  # replaced by run()'s; iterations check it

    def _set_eval_policy(self, policy: tf_policy.TFPolicy, export: tf_policy.TFPolicy) -> None:
        """`policy` plays the evaluations; `export` (greedy, no eval noise) is saved after each."""
        self._eval_policy = py_policy_for_evaluation(policy)
        self._exporter = PolicyExporter(export, self.train_step, self.root_dir)

    def export_policy(self, env_steps: int) -> Path:
        """Saves the greedy policy with the current weights (`PolicyExporter`)."""
        return self._exporter.export(env_steps)

    # --- what subclasses provide -------------------------------------------------------

    def _iteration(self, log: MetricsLog, env_steps: int) -> None:
        """Collects and trains once; sets `self._loop['loss']` when it trains."""
        raise NotImplementedError

    def _checkpoint_objects(self) -> dict:
        """TF objects a checkpoint holds besides the agent, counters and collection RNG."""
        return {}

    def _save_extra(self, directory: Path) -> dict | None:
        """Writes state outside TF (a NumPy replay buffer) into the checkpoint directory;
        may return checksums it knows (see `CheckpointStore.save`)."""

    def _restore_extra(self, directory: Path) -> None:
        """Reads `_save_extra`'s files back (but the replay's)."""

    def _restore_replay(self, directory: Path) -> None:
        """Reads the replay buffer's files back, when they verified."""

    def _row_extras(self) -> dict:
        """Extra metrics.jsonl fields for each evaluation row."""
        return {}

    def _train_scalars(self) -> dict:
        """Extra TensorBoard `train/` scalars at each progress line."""
        return {}

    def _progress_extras(self) -> str:
        loss = self._loop["loss"]
        return f"loss {loss:.3g}" if loss is not None else ""

    # --- evaluation ------------------------------------------------------------------

    def _evaluate(self, log: MetricsLog, env_steps: int, stop: PreemptionFlag) -> dict | None:
        """Evaluates, logs and records the metrics.jsonl row it returns; None if a signal cut
        it short (it runs again after the resume)."""
        started = time.monotonic()
        episodes = self.evaluator.run(
            self.eval_policy_at(env_steps),
            should_stop=lambda: stop.requested,
            episodes=self.eval_episodes_at(env_steps),
        )
        if episodes is None:
            return None
        seconds = time.monotonic() - started
        self._loop["eval_s"][str(env_steps)] = seconds
        stats = episodes.summary()
        mean, std = stats["eval_return_mean"], stats["eval_return_std"]
        log.scalars(
            "eval",
            {
                "return_mean": mean,
                "return_std": std,
                "episode_length_mean": stats["eval_length_mean"],
            },
            env_steps,
        )
        logging.info(
            f"eval at {env_steps:,} env steps: return {mean:.1f} +- {std:.1f} over "
            f"{stats['eval_episodes']} episodes ({seconds:.0f} s)"
        )
        self._loop["last_eval"] = stats
        self._loop["evaluated_at"] = env_steps
        while self._loop["next_eval"] <= env_steps:
            self._loop["next_eval"] += self.eval_interval
        return self._record(log, stats)

    def eval_policy_at(self, env_steps: int) -> py_policy.PyPolicy:
        """The policy of the evaluation at `env_steps`, its noise reseeded for that step, so
        an evaluation depends only on the weights (and `pipeline.evaluate` can replay it)."""
        self._eval_rng.reset_from_seed(self.seed * EVAL_SEED_OFFSET + env_steps)
        return self._eval_policy

    def eval_episodes_at(self, env_steps: int) -> int:
        final = env_steps >= self.total_env_steps
        return self.final_eval_episodes if final else self.eval_episodes

    def _record(self, log: MetricsLog, stats: dict[str, float]) -> dict:
        row = {
            "env_steps": int(self.env_steps.result()),
            "train_steps": int(self.train_step.numpy()),
            "episodes": int(self.episodes.result()),
            **stats,
            "train_return_mean10": float(self.train_return.result()),
            "train_loss": self._loop["loss"],
            **self._row_extras(),
        }
        log.record(row)
        return row

    def _eval_due(self, env_steps: int) -> bool:
        due = (
            env_steps >= self._loop["next_eval"]
            or env_steps >= self.total_env_steps
            or (env_steps == 0 and self.eval_at_start)
        )
        return due and self._loop["evaluated_at"] != env_steps

    # --- checkpoints -----------------------------------------------------------------

    def _py_envs(self) -> list:
        """The training py envs under TFPyEnvironment (one per lane where they are separate)."""
        pyenv = self.train_env.pyenv
        return list(getattr(pyenv, "envs", [pyenv]))

    def tf_state(self) -> tf.train.Checkpoint:
        """The TF objects a checkpoint holds: agent, counters, metrics, random generators."""
        return tf.train.Checkpoint(
            agent=self.agent,
            train_step=self.train_step,
            env_steps=self.env_steps,
            episodes=self.episodes,
            train_return=self.train_return,
            train_length=self.train_length,
            collect_rng=self._collect_rng,
            **self._checkpoint_objects(),
        )

    def _windows(self) -> tf.train.Checkpoint:
        return metric_windows(train_return=self.train_return, train_length=self.train_length)

    def _write_checkpoint(self, directory: Path) -> dict:
        """Writes everything; returns the checksums the store need not compute (see save)."""
        env_states = [getattr(env, "get_state", lambda: None)() for env in self._py_envs()]
        time_step = None
        if self._time_step is not None:  # also where the envs cannot be saved: see below
            time_step = tf.nest.map_structure(lambda t: t.numpy(), self._time_step)
        write_loop_state(
            directory,
            self.tf_state(),
            self._windows(),
            env_states if all(state is not None for state in env_states) else None,
            time_step,
            self._loop,
        )
        return self._save_extra(directory) or {}

    def _read_checkpoint(self, directory: Path, replay_intact: bool = True) -> None:
        loop, time_step, env_states = read_loop_state(directory, self.tf_state(), self._windows())
        self._loop = {**self._loop, **loop}  # what an older checkpoint lacks keeps its default
        self._restore_extra(directory)
        if replay_intact:  # else the loop's replay stays empty and `_after_restore` refills it
            self._restore_replay(directory)
        self._time_step = self.train_env.reset()  # a fresh episode unless the envs come back
        if env_states is not None:
            for env, state in zip(self._py_envs(), env_states, strict=True):
                env.set_state(state)
            self._time_step = tf.nest.map_structure(tf.convert_to_tensor, time_step)
        else:
            logging.warning("the train env's state is not in the checkpoint: a new episode starts")
            self._cut_episodes(time_step)

    def _cut_episodes(self, last_time_step) -> None:
        """A resume that starts new episodes ends the old ones at their saved last step.

        The loops keep data that pairs each step with the next one (the replay, the
        on-policy carry); without this the last stored step of the old episode would be
        paired with the new episode's FIRST step, a transition that never happened.
        `last_time_step` is None in checkpoints that did not save it.
        """

    def _wall_s(self) -> float:
        """Wall-clock seconds the run has trained so far, over all its sessions.

        Work lost to a kill after the newest checkpoint is not counted: it is redone.
        """
        return self._loop["wall_s"] + time.monotonic() - self._session_start

    def _checkpoint(self, log: MetricsLog) -> None:
        self._loop["wall_s"] = self._wall_s()
        self._session_start = time.monotonic()
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

    def _after_restore(self) -> None:
        """Hook: work a resume needs before the loop goes on (refilling a replay buffer)."""

    def restore(self) -> int | None:
        """Loads the newest usable checkpoint; returns its env steps (None: none yet)."""
        loaded = self.checkpoints.load_latest(self._read_checkpoint)
        if loaded is None:
            return None
        logging.info("resumed from checkpoint at %s env steps", f"{loaded[0]:,}")
        self._after_restore()
        return loaded[0]

    def _checkpoint_at_end(self, log: MetricsLog) -> None:
        """The finished state, so running the command again reports instead of retraining."""
        newest = self.checkpoints.complete()
        if not newest or newest[0][0] < int(self.env_steps.result()):
            self._checkpoint(log)

    # --- the loop ------------------------------------------------------------------

    def run(self, stop: PreemptionFlag | None = None) -> list[dict]:
        """Trains to `total_env_steps`, resuming from the newest checkpoint if there is one.

        Returns the metrics.jsonl rows this call wrote. With `stop`, a signal makes the loop
        write a checkpoint and raise `Preempted` at the next iteration boundary.
        """
        stop = stop or PreemptionFlag()
        self._stop = stop  # long iterations look at it between their pieces
        resumed_at = self.restore()
        self._session_start = time.monotonic()
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
            row = self._evaluate(log, env_steps, stop) if self._eval_due(env_steps) else None
            rows += [row] if row is not None else []
            checkpoint_now = stop.requested or (self._checkpoint_due(env_steps) and env_steps > 0)
            final = env_steps >= self.total_env_steps
            if row is not None and self._exporter.due(checkpoint_now or final):
                self.export_policy(env_steps)
            if checkpoint_now:
                self._checkpoint(log)
            if stop.requested:
                log.close()
                self._close_envs()
                raise Preempted(stop.signal_name or "a signal", env_steps)
            if env_steps >= self.total_env_steps:
                break

            self._iteration(log, env_steps)
            if not wrote_operative_config:  # every configurable has now been called
                wrote_operative_config = True
                with guarded_write(f"operative_config.gin in {self.root_dir}"):
                    rundir.write_operative_config(self.root_dir)
                if fresh:
                    log.text("train", "operative_config", gin.operative_config_str(), env_steps)

            env_steps = int(self.env_steps.result())
            if progress.elapsed() - last_progress >= self.progress_interval_s:
                last_progress = progress.elapsed()
                self._log_progress(log, progress, env_steps)
        self._checkpoint_at_end(log)
        log.close()
        self._close_envs()
        last_return = self._loop["last_eval"].get("eval_return_mean")
        logging.info("done in %s", progress.line(self.total_env_steps, last_return, overall=True))
        return rows

    def _close_envs(self) -> None:
        self.evaluator.close()
        self.train_env.close()  # and its thread pool, which would complain at exit

    def _log_progress(self, log: MetricsLog, progress: Progress, env_steps: int) -> None:
        log.scalars(
            "train",
            {
                "return_mean10": float(self.train_return.result()),
                "episode_length_mean10": float(self.train_length.result()),
                "steps_per_sec": progress.update(env_steps),
                **self._train_scalars(),
            },
            env_steps,
        )
        last_return = self._loop["last_eval"].get("eval_return_mean")
        logging.info(progress.line(env_steps, last_return, self._progress_extras()))
