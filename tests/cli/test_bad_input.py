"""Bad input across every CLI: exit 2, one `error:` line naming the culprit, no traceback,
and the working directory and any run directory exactly as they were.

The cases of one CLI run in one process (`tests/cli_case_runner.py`), so the table costs
one TensorFlow start-up per CLI, not one per case.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline import stack
from tests.conftest import REPO

RUNNER = ["-m", "tests.cli_case_runner"]  # a module: tests/ itself must not be on sys.path


@dataclass(frozen=True)
class Case:
    id: str
    cli: str
    args: list[str]
    fragments: list[str]
    files: dict[str, bytes] = field(default_factory=dict)  # written into the case's cwd
    needs_run: bool = False  # "{run}" in args: the shared tiny CartPole run directory

    def expected_fragments(self) -> list[str]:
        """Without Reverb (the current stack) every distributed CLI refuses with its own line."""
        if self.cli.startswith("pipeline.distributed.") and not stack.reverb_installed():
            return ["needs Reverb", "Python 3.11", "PIPELINE_STACK=pinned"]
        return self.fragments


def b(*items: str) -> list[str]:
    return [f"--gin_bindings={item}" for item in items]


ATARI = ["--gin_file=dqn_breakout.gin"]
TRAIN = "pipeline.train"
CASES = [
    # gin: names, syntax, files
    Case("unknown-parameter", TRAIN, b("DqnAgent.gama=0.9"), ["DqnAgent.gama", "gamma"]),
    Case("unknown-configurable", TRAIN, b("DqnAgnt.gamma=0.9"), ["DqnAgnt", "DqnAgent"]),
    Case("double-equals", TRAIN, b("train.seed=="), ["binding 'train.seed=='"]),
    Case("no-equals", TRAIN, b("train.seed"), ["binding 'train.seed'"]),
    Case("unbalanced", TRAIN, b("train.seed=(1"), ["binding 'train.seed=(1'", "unbalanced"]),
    Case(
        "unquoted-string",
        TRAIN,
        b("load_gymnasium.env_id=CartPole-v1"),
        ["quote strings", "load_gymnasium.env_id='CartPole-v1'"],
    ),
    Case("unknown-reference", TRAIN, b("train.network=@NoSuchNet"), ["@NoSuchNet"]),
    Case("eval-processes", TRAIN, b("train.eval_processes=3"), ["train.eval_processes=3"]),
    Case("gin-name", TRAIN, ["--gin_file=dqn_cartpol.gin"], ["dqn_cartpol.gin", "dqn_cartpole"]),
    Case("gin-path", TRAIN, ["--gin_file=/no/such/file.gin"], ["/no/such/file.gin", "not found"]),
    Case(
        "gin-syntax-line",
        TRAIN,
        ["--gin_file=bad.gin"],
        ["bad.gin", "line 2"],
        files={"bad.gin": b"train.seed = 0\nthis is not gin\n"},
    ),
    Case(
        "gin-binary",
        TRAIN,
        ["--gin_file=blob.gin"],
        ["blob.gin", "not text"],
        files={"blob.gin": bytes(range(128, 256)) * 4},
    ),
    Case("unknown-flag", TRAIN, ["--no_such_flag=1"], ["no_such_flag"]),
    Case("positional", TRAIN, ["train.seed=1"], ["--gin_bindings"]),
    # types
    Case("string-for-int", TRAIN, b("train.batch_size='64'"), ["train.batch_size", "quotes"]),
    Case("float-for-int", TRAIN, b("train.total_env_steps=5e4"), ["total_env_steps", "50_000"]),
    Case("bool-for-int", TRAIN, b("train.eval_episodes=True"), ["train.eval_episodes", "bool"]),
    Case("called-factory", TRAIN, b("train.network=@QNetwork()"), ["@QNetwork", "without"]),
    Case("number-for-schedule", TRAIN, b("train.epsilon=0.1"), ["train.epsilon", "schedule"]),
    Case("int-for-layers", TRAIN, b("TorchInitQNetwork.fc_layer_params=256"), ["tuple"]),
    Case(
        "string-for-bool",
        TRAIN,
        [*ATARI, *b("load_atari.fire_on_reset='no'")],
        ["load_atari.fire_on_reset", "bool"],
    ),
    # ranges
    Case("zero-batch", TRAIN, b("train.batch_size=0"), ["train.batch_size=0", ">= 1"]),
    Case("eval-epsilon", TRAIN, b("train.eval_epsilon=1.5"), ["train.eval_epsilon", "[0, 1]"]),
    Case("gamma", TRAIN, b("DqnAgent.gamma=1.5"), ["DqnAgent.gamma=1.5", "[0, 1]"]),
    Case("decay-steps", TRAIN, b("LinearSchedule.decay_steps=0"), ["decay_steps"]),
    Case("learning-rate", TRAIN, b("TorchAdam.learning_rate=-1.0"), ["learning_rate", "> 0"]),
    Case("frame-stack", TRAIN, [*ATARI, *b("load_atari.frame_stack=0")], ["frame_stack=0"]),
    Case("num-envs", TRAIN, [*ATARI, *b("load_atari.num_envs=0")], ["load_atari.num_envs=0"]),
    Case("sticky-prob", TRAIN, [*ATARI, *b("load_atari.sticky_action_prob=2.0")], ["sticky"]),
    Case(
        "dtype",
        TRAIN,
        [*ATARI, *b("train.network=@DuelingQNetwork", "DuelingQNetwork.dtype='float16'")],
        ["DuelingQNetwork.dtype", "mixed_bfloat16"],
    ),
    Case(
        "on-policy-envs",
        TRAIN,
        ["--gin_file=ppo_cartpole.gin", *b("train_on_policy.num_envs=0")],
        ["train_on_policy.num_envs=0"],
    ),
    # combinations
    Case(
        "batch-over-capacity",
        TRAIN,
        b("train.replay_capacity=32"),
        ["train.batch_size=64", "train.replay_capacity=32"],
    ),
    Case(
        "no-training-left",
        TRAIN,
        b("train.initial_collect_steps=60_000"),
        ["initial_collect_steps", "total_env_steps"],
    ),
    Case(
        "n-step-window",
        TRAIN,
        b("DqnAgent.n_step_update=10", "train.initial_collect_steps=5"),
        ["train.initial_collect_steps=5", "11-step window"],
    ),
    Case(
        "n-step-gamma",
        TRAIN,
        b("DqnAgent.n_step_update=3", "DqnAgent.gamma=0.0"),
        ["n-step returns (n=3)", "gamma in (0, 1]"],
    ),
    Case(
        "mixed-precision-output",
        TRAIN,
        b("train.network=@QNetwork", "QNetwork.dtype='mixed_bfloat16'"),
        ["QNetwork outputs bfloat16 Q-values", "DuelingQNetwork.dtype"],
    ),
    Case(
        "c51-support",
        TRAIN,
        ["--gin_file=c51_cartpole.gin", *b("CategoricalDqnAgent.min_q_value=200.0")],
        ["min_q_value", "max_q_value"],
    ),
    Case(
        "c51-prioritized",
        TRAIN,
        ["--gin_file=c51_cartpole.gin", *b("train.replay=@PrioritizedUniformReplay")],
        ["@CategoricalDqnAgent", "per-sample errors", "@RainbowAgent"],
    ),
    Case(
        "prioritized-exponent",
        TRAIN,
        ["--gin_file=rainbow_cartpole.gin", *b("PrioritizedUniformReplay.importance_exponent=1.5")],
        ["PrioritizedUniformReplay.importance_exponent=1.5"],
    ),
    # environments the agent cannot serve
    Case("env-id", TRAIN, b("load_gymnasium.env_id='CartPol-v1'"), ["CartPol-v1", "CartPole-v1"]),
    Case(
        "continuous-actions",
        TRAIN,
        b("load_gymnasium.env_id='Pendulum-v1'"),
        ["Pendulum-v1", "Box(", "discrete actions"],
    ),
    Case(
        "tuple-observations",
        TRAIN,
        b("load_gymnasium.env_id='Blackjack-v1'"),
        ["Blackjack-v1", "Tuple(", "Box and Discrete"],
    ),
    Case("atari-game", TRAIN, [*ATARI, *b("load_atari.game='Breakot'")], ["Breakot", "Breakout"]),
    Case(
        "unused-binding",
        TRAIN,
        b("Adam.learning_rate=0.01"),
        ["Adam.learning_rate=0.01", "never builds"],
    ),
    # errors raised while gin calls a configurable
    Case("in-configurable", TRAIN, b("TorchAdam.amsgrad=True"), ["TorchAdam", "amsgrad"]),
    # pipeline.evaluate
    Case("evaluate-no-root", "pipeline.evaluate", [], ["--root_dir"]),
    Case("evaluate-not-a-run", "pipeline.evaluate", ["--root_dir=nowhere"], ["nowhere"]),
    Case(
        "evaluate-policy",
        "pipeline.evaluate",
        ["--root_dir={run}", "--policy=bogus"],
        ["policy", "bogus"],
        needs_run=True,
    ),
    Case(
        "evaluate-episodes",
        "pipeline.evaluate",
        ["--root_dir={run}", "--episodes=0"],
        ["--episodes"],
        needs_run=True,
    ),
    Case(
        "evaluate-binding",
        "pipeline.evaluate",
        ["--root_dir={run}", "--gin_bindings=train.eval_epsilon=2.0"],
        ["train.eval_epsilon"],
        needs_run=True,
    ),
    # pipeline.sweep
    Case("sweep-grid", "pipeline.sweep", ["--grid=train.seed"], ["train.seed"]),
    Case("sweep-seeds", "pipeline.sweep", ["--seeds=0-x"], ["0-x"]),
    Case("sweep-parallel", "pipeline.sweep", ["--parallel=0"], ["--parallel"]),
    Case(
        "sweep-grid-value",
        "pipeline.sweep",
        ["--grid=train.batch_size=32,'64'"],
        ["train.batch_size"],
    ),
    Case("sweep-gin-file", "pipeline.sweep", ["--gin_file=nope.gin"], ["nope.gin"]),
    # pipeline.atari100k
    Case("suite-game", "pipeline.atari100k", ["--games=Breakout,Pacman"], ["Pacman", "Alien,"]),
    Case("suite-seeds", "pipeline.atari100k", ["--suite=atari100k", "--seeds=4-1"], ["4-1"]),
    Case(
        "suite-nothing",
        "pipeline.atari100k",
        ["--games=Pong", "--report_only", "--out=nowhere", "--archive="],
        ["nothing to report"],
    ),
    # pipeline.report
    Case("report-missing", "pipeline.report", ["nowhere"], ["nowhere"]),
    Case("report-reps", "pipeline.report", ["{run}", "--reps=5"], ["--reps"], needs_run=True),
    Case(
        "report-threshold",
        "pipeline.report",
        ["{run}", "--threshold=abc"],
        ["threshold"],
        needs_run=True,
    ),
    # pipeline.distributed.*
    Case(
        "distributed-setting",
        "pipeline.distributed.launch",
        b("distributed.samples_per_insert=-1.0"),
        ["distributed.samples_per_insert"],
    ),
    Case(
        "distributed-collectors",
        "pipeline.distributed.launch",
        ["--num_collectors=0"],
        ["--num_collectors"],
    ),
    Case(
        "distributed-c51-prioritized",
        "pipeline.distributed.launch",
        ["--gin_file=c51_cartpole.gin", *b("distributed.prioritized=True")],
        ["CategoricalDqnAgent", "prioritized"],
    ),
    Case(
        "distributed-on-policy",
        "pipeline.distributed.launch",
        ["--gin_file=ppo_cartpole.gin"],
        ["another loop"],
    ),
    Case(
        "slurm-time",
        "pipeline.distributed.slurm",
        ["--time=soon", "--dry_run"],
        ["--time", "soon"],
    ),
]


def _snapshot(*roots: Path) -> list[tuple]:
    return sorted(
        (str(p), p.is_dir(), None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns))
        for root in roots
        if root.exists()
        for p in [root, *root.rglob("*")]
    )


@pytest.fixture(scope="session")
def results(tmp_path_factory, request) -> dict[str, tuple[dict, list, list]]:
    """Runs every case, one process per CLI; id -> (result, snapshot before, after)."""
    out: dict[str, tuple[dict, list, list]] = {}
    run_dir = None
    if any(case.needs_run for case in CASES):
        run_dir = request.getfixturevalue("tiny_run")
    by_cli: dict[str, list[Case]] = {}
    for case in CASES:
        by_cli.setdefault(case.cli, []).append(case)
    for cli, cases in by_cli.items():
        payload, befores = [], []
        for case in cases:
            cwd = tmp_path_factory.mktemp(case.id)
            for name, data in case.files.items():
                (cwd / name).write_bytes(data)
            args = [a.replace("{run}", str(run_dir)) for a in case.args]
            payload.append({"args": args, "cwd": str(cwd)})
            watched = (cwd, run_dir) if case.needs_run else (cwd,)
            befores.append((watched, _snapshot(*watched)))
        folder = tmp_path_factory.mktemp(cli.replace(".", "_"))
        (folder / "cases.json").write_text(json.dumps(payload))
        process = subprocess.run(
            [sys.executable, *RUNNER, cli, str(folder / "cases.json"), str(folder / "out")],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert process.returncode == 0, process.stderr[-3000:]
        for case, result, (watched, before) in zip(
            cases, json.loads((folder / "out").read_text()), befores, strict=True
        ):
            out[case.id] = (result, before, _snapshot(*watched))
    return out


def test_the_table_is_large_enough():
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)
    clis = {case.cli for case in CASES}
    assert {"pipeline.train", "pipeline.evaluate", "pipeline.sweep", "pipeline.report"} <= clis
    assert any(cli.startswith("pipeline.distributed.") for cli in clis)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, results):
    result, before, after = results[case.id]
    stderr = result["stderr"]
    assert "Traceback" not in stderr, stderr
    assert result["code"] == 2, stderr
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for fragment in case.expected_fragments():
        assert fragment in lines[0], lines[0]
    assert after == before, "a refused command must leave every directory as it was"


def test_missing_env_dependency_names_the_install_command():
    """LunarLander needs box2d, which the constraints do not install."""
    if importlib.util.find_spec("Box2D") is not None:
        pytest.skip("Box2D is installed here")
    from envs.loader import load_gymnasium
    from pipeline.errors import UserError

    with pytest.raises(UserError, match=r"LunarLander-v3 needs a package.*pip install"):
        load_gymnasium("LunarLander-v3")
