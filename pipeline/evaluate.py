"""Plays a run's exported policy: `python -m pipeline.evaluate --root_dir=RUN [--video]`.

The eval environment comes from the run's own config.gin and each episode i starts from the
same reset seed the run's evaluations used, so a greedy policy scores here exactly what the
run's evaluation at the export's step scored. `--policy=random`, `cartpole_heuristic`,
`breakout_tracker` or `scripted` play a baseline on the same episodes instead.
`--checkpoint=N` (or `latest`) plays the agent of one checkpoint with the run's own eval
policy (eval epsilon included), so it prints what the run's evaluation at step N printed.
Videos (MP4, imageio's bundled ffmpeg) show the first `--video_episodes` episodes.

The run may be someone else's: its config.gin is read as settings only (an `import` in it is
refused without --trust_run_dir) and `--checkpoint` reads weights only, into our own agent;
the exported policy, by contrast, is a SavedModel whose TensorFlow graph runs here, so it is
played only when this user's secret signed it (or with --trust_run_dir).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from absl import flags, logging

from pipeline import cli, config
from pipeline.baselines import scripted_policies
from pipeline.errors import UserError
from pipeline.loops import off_policy
from pipeline.loops.evaluation import Evaluator, eval_episode_seeds
from pipeline.run import trust
from pipeline.run.checkpoints import read_variables
from pipeline.run.files import fsync_path, replace_durably

flags.DEFINE_string("root_dir", None, "Run directory (holds config.gin and policy/).")
flags.DEFINE_integer(
    "episodes", None, "Episodes to play; default: the run's eval_episodes.", lower_bound=1
)
flags.DEFINE_enum(
    "policy",
    "exported",
    ["exported", "random", "cartpole_heuristic", "breakout_tracker", "scripted"],
    "Which policy plays: the run's export, or a baseline (scripted: ScriptedPyPolicy.script "
    "from --gin_bindings).",
)
flags.DEFINE_string(
    "checkpoint",
    None,
    "Play the agent of this checkpoint (env steps, or 'latest') with the run's own eval "
    "policy (its eval epsilon too): the numbers of the run's evaluation at that step.",
)
flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings (e.g. a script to play).")
flags.DEFINE_bool("video", False, "Write MP4 videos of the first --video_episodes episodes.")
flags.DEFINE_integer("video_episodes", 1, "How many episodes to film with --video.")
flags.DEFINE_integer("fps", 30, "Frames per second of the videos.")
cli.define_trust_flag()
FLAGS = flags.FLAGS
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # pygame (CartPole's renderer) needs no sound


def run_settings(root_dir: Path, bindings: list[str]) -> tuple[str, dict]:
    """Parses the run's config.gin; returns its loop's gin name and the settings we need."""
    config_file = root_dir / "config.gin"
    if not config_file.exists():
        raise UserError(f"{root_dir} holds no run (no config.gin): pass a run directory")
    if not trust.run_dir_trusted():  # the run may be anyone's: settings, never imports
        trust.check_run_config(config_file)
    config.parse([str(config_file)], bindings)
    run = config.run_settings()
    settings = {
        "seed": run.seed,
        "eval_episodes": run.eval_episodes or 10,
        "env_loader": config.query(run.binding("env_loader")),
    }
    return run.loop, settings


def make_eval_envs(loader_ref, count: int, video: bool) -> list:
    loader = loader_ref.scoped_configurable_fn if loader_ref is not None else None
    if loader is None:
        import envs

        loader = envs.load_gymnasium
    kwargs = {"render_mode": "rgb_array"} if video else {}
    return [loader(seed=None, training=False, **kwargs) for _ in range(count)]


def load_policy(root_dir: Path, kind: str, env):
    from tf_agents.policies import py_tf_eager_policy, random_py_policy

    if kind == "random":
        return random_py_policy.RandomPyPolicy(
            env.time_step_spec(), env.action_spec(), seed=12345, outer_dims=None
        )
    baselines = {
        "cartpole_heuristic": scripted_policies.CartPoleHeuristicPyPolicy,
        "breakout_tracker": scripted_policies.BreakoutTrackerPyPolicy,
        "scripted": scripted_policies.ScriptedPyPolicy,
    }
    if kind in baselines:
        return baselines[kind](env.time_step_spec(), env.action_spec())
    path = root_dir / "policy"
    if not (path / "saved_model.pb").exists():
        raise UserError(
            f"{root_dir} has no exported policy yet (policy/ appears after the first "
            "evaluation): wait for it, or pass --policy=random"
        )
    problem = None if trust.run_dir_trusted() else trust.export_problem(path)
    if problem is not None:
        raise UserError(
            f"{path.resolve()} is not an export of yours ({problem}), and playing a SavedModel "
            "runs its TensorFlow graph here: pass --checkpoint=latest (weights only, into our "
            "own agent), or --trust_run_dir if you trust who wrote the run"
        )
    return py_tf_eager_policy.SavedModelPyTFEagerPolicy(
        str(path), env.time_step_spec(), env.action_spec(), batch_time_steps=False
    )


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    import imageio.v2 as imageio

    tmp = path.with_name(f".{path.name}.partial.mp4")
    imageio.mimwrite(tmp, frames, fps=fps, macro_block_size=1)
    fsync_path(tmp)
    replace_durably(tmp, path)


def checkpoint_steps(text: str) -> int | None:
    """`--checkpoint`: env steps (1,000 and 1_000 too), or None for 'latest'."""
    if text == "latest":
        return None
    digits = text.replace(",", "").replace("_", "")
    if not digits.isdigit():
        raise UserError(f"--checkpoint={text}: give env steps (e.g. --checkpoint=20000) or latest")
    return int(digits)


def policy_from_checkpoint(root_dir: Path, text: str):
    """The run's eval policy with the weights of one checkpoint, and that checkpoint's step
    (its loop is built from the already parsed config.gin; nothing is written)."""
    if FLAGS.policy != "exported":
        raise UserError("--checkpoint plays the run's agent: drop --policy")
    loop = off_policy.build_loop(root_dir)
    steps = read_variables(loop.checkpoints, loop.tf_state(), checkpoint_steps(text))
    return loop.eval_policy_at(steps), loop.eval_episodes_at(steps), steps


def evaluate(root_dir: Path) -> dict:
    _, settings = run_settings(root_dir, FLAGS.gin_bindings)
    seed = settings["seed"]
    policy, steps = None, None
    episodes = settings["eval_episodes"]
    if FLAGS.checkpoint is not None:
        policy, episodes, steps = policy_from_checkpoint(root_dir, FLAGS.checkpoint)
    episodes = FLAGS.episodes or episodes
    env_list = make_eval_envs(settings["env_loader"], episodes, FLAGS.video)
    policy = policy or load_policy(root_dir, FLAGS.policy, env_list[0])
    evaluator = Evaluator(env_list, seeds=eval_episode_seeds(seed, episodes))
    filmed = min(FLAGS.video_episodes, episodes) if FLAGS.video else 0
    frames: list[list[np.ndarray]] = [[] for _ in range(filmed)]

    def film(index: int, env) -> None:
        if index < filmed:
            frames[index].append(np.asarray(env.render()))

    stats = evaluator.run(policy, observer=film).summary()
    evaluator.close()
    videos = []
    for index, episode_frames in enumerate(frames):
        name = FLAGS.policy if steps is None else f"checkpoint-{steps}"
        path = root_dir / "videos" / f"{name}-episode{index}.mp4"
        path.parent.mkdir(exist_ok=True)
        write_video(path, episode_frames, FLAGS.fps)
        videos.append(path)
    return {**stats, "videos": videos, "checkpoint": steps}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}: use --root_dir=RUN")
    if not FLAGS.root_dir:
        cli.fail("--root_dir is required: pass the run directory")
    logging.set_verbosity(logging.WARNING)
    try:
        result = evaluate(Path(FLAGS.root_dir))
    except UserError as error:
        cli.fail(str(error))
    except Exception as error:  # raised inside a configurable gin called: a setting's fault
        message = config.explain_call_error(error)
        if message is None:
            raise
        cli.fail(message)
    lengths = result["eval_length_mean"]
    source = FLAGS.policy
    if result["checkpoint"] is not None:
        source = f"checkpoint {result['checkpoint']:,}"
    print(
        f"{source} policy: return {result['eval_return_mean']:.1f} +- "
        f"{result['eval_return_std']:.1f} (min {result['eval_return_min']:.1f}, max "
        f"{result['eval_return_max']:.1f}) over {result['eval_episodes']} episodes; mean "
        f"episode length {lengths:.1f}"
    )
    for path in result["videos"]:
        print(f"video: {path}")


def run() -> None:
    cli.run(main)


if __name__ == "__main__":
    run()
