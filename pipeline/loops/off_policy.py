"""The off-policy loop of the DQN family, configured by gin under the name `train`.

One object owns one run: it builds the environments, agent and replay buffer from gin
references in `__init__` (touching no files, so a bad setting leaves nothing behind); `run()`
(from `pipeline.loops.base`) writes the run directory and loops. Each iteration here collects with
the exploration policy and trains at a fixed ratio of updates to environment steps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gin
import tensorflow as tf
from absl import logging
from tf_agents.agents.dqn import dqn_agent
from tf_agents.drivers import dynamic_step_driver
from tf_agents.networks import q_network

import envs
from pipeline.agents import build
from pipeline.agents.build import trains_on_transitions
from pipeline.agents.frozen import FrozenGreedy
from pipeline.agents.policies import EpsilonGreedyPolicy, UniformRandomPolicy
from pipeline.agents.schedules import LinearSchedule
from pipeline.agents.synced_target import sync_target
from pipeline.errors import UserError
from pipeline.loops.base import TrainingLoop
from pipeline.loops.settings import LoopSettings
from pipeline.replay.prioritized import check_errors_for_priorities, is_prioritized
from pipeline.replay.uniform import UniformReplay
from pipeline.replay.windows import check_first_window, truncation
from pipeline.run.checkpoints import MANIFEST, save_replay
from pipeline.run.metrics import MetricsLog

RANDOM_CHUNK = 5_000  # initial random steps per call: signals wait at most one chunk
UPDATE_CHUNK = 32  # updates per call: a signal waits for at most this many, not a round


@gin.configurable("train", denylist=["root_dir"])
class Experiment(TrainingLoop):
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
        augmentation: Callable | None = None,
        eval_interval: int = 5_000,
        eval_episodes: int = 10,
        final_eval_episodes: int | None = None,
        eval_at_start: bool = True,
        eval_epsilon: float = 0.0,
        eval_processes: int = 1,
        action_mask_splitter: Callable | None = None,
        progress_interval_s: float = 10.0,
        checkpoint_interval: int | None = None,
        checkpoint_interval_s: float = 1800.0,
        checkpoints_to_keep: int = 3,
        checkpoint_replay: bool = True,
        deterministic: bool = True,
    ):
        """Builds everything a run needs; see gin/dqn_cartpole.gin for what each knob means.

        `train_steps_per_iteration` updates follow every `collect_steps_per_iteration` env
        steps, in rounds aligned to step 0 (see `_updates_due`); evaluations cut a round's
        collection but never its updates.
        `checkpoint_interval` (env steps; default: `eval_interval`) and `checkpoint_interval_s`
        (wall clock) say when to checkpoint; neither changes what the run computes.
        """
        first_eval = (initial_collect_steps // eval_interval + 1) * eval_interval
        self._setup(root_dir, LoopSettings.of(locals()), first_eval)
        self.initial_collect_steps = initial_collect_steps
        self.collect_steps_per_iteration = collect_steps_per_iteration
        self.train_steps_per_iteration = train_steps_per_iteration
        self.updates_per_env_step = train_steps_per_iteration / collect_steps_per_iteration
        self.batch_size = batch_size
        self.checkpoint_replay = checkpoint_replay
        self._replay_restored = False
        self.epsilon = lambda: epsilon(self.env_steps.result())

        if not self.train_env.action_spec().dtype.is_integer:
            raise UserError(
                f"{self.env_description}: the DQN family (train.agent) needs discrete "
                "actions: pick an env with Discrete actions, or a policy-gradient agent "
                "(gin/ppo_cartpole.gin shows run_experiment.loop = @train_on_policy)"
            )
        self.agent = build.build_dqn_family(
            agent,
            network,
            optimizer,
            self.train_env.time_step_spec(),
            self.train_env.action_spec(),
            epsilon=self.epsilon,
            train_step_counter=self.train_step,
            action_mask_splitter=action_mask_splitter,
        )
        self.replay_capacity = replay_capacity
        check_first_window(self.initial_collect_steps, self.window_steps)
        self.replay = self._make_replay(replay, replay_capacity, seed)
        self._trains_on_transitions = trains_on_transitions(self.agent)
        check_errors_for_priorities(self.replay, self.agent)
        self._observers = [self.replay.add_batch] if self.replay is not None else []
        self._observers += [
            self.env_steps,
            self.episodes,
            self.train_return,
            self.train_length,
        ]
        # With an action mask (`action_mask_splitter`), every policy picks allowed actions.
        self._random_policy = UniformRandomPolicy(
            self.train_env.time_step_spec(),
            self.train_env.action_spec(),
            self._collect_rng,
            splitter=action_mask_splitter,
        )
        self._collect_policy = EpsilonGreedyPolicy(
            self.agent.policy,
            self.epsilon,
            self._collect_rng,
            name="collect",
            splitter=action_mask_splitter,
        )
        self._collect_fns: dict[tuple, Callable] = {}
        self._rounds_fn: Callable | None = None
        self._chunk = tf.Variable(0, dtype=tf.int32, trainable=False, name="collect_chunk")
        # A mixed-precision Q-network evaluates on weights cast once per evaluation.
        self._frozen = (
            FrozenGreedy(self.agent.policy) if FrozenGreedy.serves(self.agent.policy) else None
        )
        eval_policy = self._frozen.policy if self._frozen is not None else self.agent.policy
        if eval_epsilon > 0:  # Atari protocols evaluate with a little noise (see their gin)
            eval_policy = EpsilonGreedyPolicy(
                eval_policy, eval_epsilon, self._eval_rng, "eval", splitter=action_mask_splitter
            )
        self._set_eval_policy(eval_policy, export=self.agent.policy)
        # Training batches only (`pipeline.agents.augmentation`); policies see the env's frames.
        self.augmentation = augmentation(seed=seed) if augmentation is not None else None
        self.train_updates = tf.function(self._train_updates, autograph=False)

    def _make_replay(self, replay: Callable, capacity: int, seed: int):
        """The local buffer; the distributed roles replace it with the Reverb server.

        It samples the windows the agent trains on: `n_step_update + 1` steps.
        """
        return replay(
            data_spec=self.agent.collect_data_spec,
            batch_size=self.train_env.batch_size,
            capacity=capacity,
            seed=seed,
            num_steps=self.window_steps,
            gamma=float(self.agent._gamma),
        )

    @property
    def window_steps(self) -> int:
        """Steps per sampled window: `n_step_update + 1` for the DQN family."""
        return int(self.agent.train_sequence_length or 2)

    def eval_policy_at(self, env_steps: int):
        """The evaluation policy with the current weights (see `FrozenGreedy`)."""
        if self._frozen is not None:
            self._frozen.sync()
        return super().eval_policy_at(env_steps)

    # --- the pieces of one iteration -------------------------------------------------

    def _collect(self, policy, num_steps: int, observers: list | None = None) -> None:
        """Steps the train env `num_steps` times inside one tf.function per policy.

        The step count lives in a variable the driver reads, so chunks of any size reuse
        one traced graph instead of tracing a new one per size.
        """
        observers = self._observers if observers is None else observers
        if self._time_step is None:  # called before run() (benchmarks, tests)
            self._time_step = self.train_env.reset()
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
            return i + 1, total + self._update_once()

        _, total = tf.while_loop(
            lambda i, _: i < num_updates,
            update,
            (tf.constant(0, num_updates.dtype), tf.constant(0.0)),
            parallel_iterations=1,
        )
        return total / tf.maximum(tf.cast(num_updates, tf.float32), 1.0)

    def _update_once(self) -> tf.Tensor:
        """One gradient update on one sampled batch; returns its loss."""
        if is_prioritized(self.replay):
            return self._prioritized_update()
        if self._trains_on_transitions:
            batch = self.replay.sample_transition(self.batch_size)
        else:
            batch = self.replay.sample(self.batch_size)
        return self.agent.train(self._training_batch(batch)).loss

    def _prioritized_update(self) -> tf.Tensor:
        """Draws by priority, trains with the importance weights, writes the errors back.

        The weights' exponent anneals to 1 over the run (`total_env_steps`).
        """
        progress = tf.cast(self.env_steps.result(), tf.float64) / self.total_env_steps
        batch, keys, weights = self.replay.sample_prioritized(
            self.batch_size, progress, transitions=self._trains_on_transitions
        )
        info = self.agent.train(self._training_batch(batch), weights=weights)
        with tf.control_dependencies([info.loss]):
            written = self.replay.update_priorities(keys, info.extra.td_error)
        with tf.control_dependencies([written]):
            return tf.identity(info.loss)

    def _training_batch(self, window):
        """What the agent trains on: the sampled windows, augmented if the gin file asks."""
        return window if self.augmentation is None else self.augmentation(window)

    def _checkpoint_objects(self) -> dict:
        if self.augmentation is None:
            return {}
        return {"augmentation_rng": self.augmentation.rng}

    def _updates_due(self, env_steps: int) -> int:
        """Updates owed after `env_steps`: a whole round for every collection round ended.

        Rounds end at multiples of `collect_steps_per_iteration`, counted from step 0 (not
        from the end of the random start), and only those ending after the random start
        train, as SB3 and Dopamine schedule theirs. An evaluation in the middle of a round
        does not split it, so a target copy every `train_steps_per_iteration` updates
        always falls between rounds.
        """
        per_round = self.collect_steps_per_iteration
        rounds = env_steps // per_round - self.initial_collect_steps // per_round
        return max(rounds, 0) * self.train_steps_per_iteration

    # --- the loop's hooks --------------------------------------------------------------

    def _iteration(self, log: MetricsLog, env_steps: int) -> None:
        if self._updates_owed(env_steps) > 0:  # a signal cut the last round short: finish it
            self._train(log, env_steps)
            return
        if env_steps < self.initial_collect_steps:  # the random start, in chunks
            self.collect_random(min(RANDOM_CHUNK, self.initial_collect_steps - env_steps))
            return
        rounds = self._whole_rounds(env_steps)
        if rounds:
            loss = self.train_rounds(rounds)
            log.scalars("train", {"loss": loss}, int(self.env_steps.result()))
            return
        chunk = min(
            self.collect_steps_per_iteration - env_steps % self.collect_steps_per_iteration,
            self._loop["next_eval"] - env_steps,
            self.total_env_steps - env_steps,
        )
        self._collect(self._collect_policy, chunk)
        self._train(log, int(self.env_steps.result()))

    def _whole_rounds(self, env_steps: int) -> int:
        """Whole rounds (collect, then train) that one graph call can run from `env_steps`.

        From a round boundary after the random start, up to the next evaluation, the end of
        the run and the end of a block of at most `UPDATE_CHUNK` updates. Blocks are aligned
        to step 0, so a resumed run cuts its rounds into the same blocks as an uncut one.
        0 where a round is open (the random start ended or an evaluation fell inside it) or
        a round trains more than a block holds: `_collect` and `_train` do those.
        """
        per_round, updates = self.collect_steps_per_iteration, self.train_steps_per_iteration
        if env_steps % per_round or not 1 <= updates <= UPDATE_CHUNK:
            return 0
        block = UPDATE_CHUNK // updates * per_round
        end = min((env_steps // block + 1) * block, self._loop["next_eval"], self.total_env_steps)
        return max(end - env_steps, 0) // per_round

    def train_rounds(self, rounds: int) -> float:
        """Runs `rounds` whole rounds in one graph call: the same steps, updates and random
        draws in the same order as `_collect` and `_train` make them one call at a time,
        without a return to Python between an agent step and its update (with one update
        per step, that return cost about a sixth of the step on Breakout). Returns the mean
        loss of their updates."""
        if self._rounds_fn is None:
            self._rounds_fn = tf.function(self._collect_and_train, autograph=False)
        if self._time_step is None:  # called before run() (benchmarks, tests)
            self._time_step = self.train_env.reset()
        self._time_step, loss = self._rounds_fn(self._time_step, tf.constant(rounds, tf.int32))
        self._loop["loss"] = float(loss)
        return self._loop["loss"]

    def _collect_and_train(self, time_step, rounds: tf.Tensor):
        """`rounds` x (collect a round with the exploration policy, then its updates);
        returns the last time step and the mean loss of the updates."""
        driver = dynamic_step_driver.DynamicStepDriver(
            self.train_env,
            self._collect_policy,
            observers=self._observers,
            num_steps=self.collect_steps_per_iteration,
        )
        updates = tf.constant(self.train_steps_per_iteration, tf.int64)

        def one_round(i, time_step, total):
            time_step, _ = driver.run(time_step)
            return i + 1, time_step, total + self._train_updates(updates)

        _, time_step, total = tf.while_loop(
            lambda i, *_: i < rounds,
            one_round,
            (tf.constant(0, tf.int32), time_step, tf.constant(0.0)),
            parallel_iterations=1,
        )
        return time_step, total / tf.cast(rounds, tf.float32)

    def _updates_owed(self, env_steps: int) -> int:
        return self._updates_due(env_steps) - int(self.train_step.numpy())

    def _train(self, log: MetricsLog, env_steps: int) -> None:
        """The updates owed, `UPDATE_CHUNK` per call; a signal stops them between calls.

        The updates left are made first thing after the resume, before any collection, so
        a round cut by a signal trains exactly as an uncut one.
        """
        owed = self._updates_owed(env_steps)
        done, total = 0, 0.0
        while done < owed:
            piece = min(UPDATE_CHUNK, owed - done)
            total += float(self.train_updates(tf.constant(piece, tf.int64))) * piece
            done += piece
            if self._stop.requested:
                break
        if done:
            loss = total / done
            self._loop["loss"] = loss
            log.scalars("train", {"loss": loss}, env_steps)

    def _cut_episodes(self, last_time_step) -> None:
        """The saved last steps go into the replay as time-limit truncations (LAST with the
        discount kept): the stored step before them then bootstraps from the state the env
        was really in, and nothing pairs it with the new episode's FIRST step."""
        if last_time_step is None or self.replay is None:
            return
        cut = truncation(self.agent.collect_data_spec, last_time_step, self.train_env.batch_size)
        self.replay.add_batch(cut)

    def _write_checkpoint(self, directory: Path) -> dict:
        sync_target(self.agent)  # the target holds the online weights, as after each update
        return super()._write_checkpoint(directory)

    def _save_extra(self, directory: Path) -> dict:
        """The replay, sharing the chunks it did not change with the newest checkpoint."""
        return save_replay(self.checkpoints, self.replay, directory, self.checkpoint_replay)

    def _restore_replay(self, directory: Path) -> None:
        sealed = (directory / MANIFEST).is_file()  # verified by load_latest when it is
        sums = self.checkpoints.checksums(directory, "replay/") if sealed else None
        self._replay_restored = self.replay.restore(directory / "replay", sums=sums)

    def _after_restore(self) -> None:
        if not self._replay_restored:
            refill = min(self.initial_collect_steps, self.replay.capacity)
            logging.info("replay contents not checkpointed: refilling %s transitions", refill)
            self._collect(self._collect_policy, refill, observers=[self.replay.add_batch])

    def _row_extras(self) -> dict:
        return {"epsilon": float(self.epsilon())}

    def _train_scalars(self) -> dict:
        return {"epsilon": float(self.epsilon())}

    def _progress_extras(self) -> str:
        loss = self._loop["loss"]
        if loss is None:
            return ""
        return f"loss {loss:.3g} | eps {float(self.epsilon()):.3f}"


@gin.configurable("run_experiment", denylist=["root_dir"])
def build_loop(root_dir: Path, loop: type[TrainingLoop] | None = None) -> TrainingLoop:
    """The loop a gin file asks for: `@train` (DQN family, the default) or `@train_on_policy`."""
    return (loop or Experiment)(root_dir)
