"""Both stacks (docs/getting-started.md, "Two stacks"): Keras 2 under TF-Agents, a quiet start,
the gym stand-in, pip's view of the install, and the set-up script's choice of stack."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline import stack
from tests.conftest import REPO


def python(code: str) -> subprocess.CompletedProcess:
    hidden = ("PIPELINE_TF_LOGS", "TF_CPP_MIN_LOG_LEVEL")
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env, timeout=300
    )


def test_tf_agents_runs_on_keras_2():
    import importlib

    import tensorflow as tf

    package = importlib.import_module(tf.keras.layers.Dense.__module__.split(".")[0])
    assert package.__version__.startswith("2."), (package.__name__, package.__version__)


def test_importing_tensorflow_and_tf_agents_prints_nothing():
    result = python("import pipeline, tensorflow, tf_agents, envs; tensorflow.constant(1.0) + 1")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def test_the_quiet_import_replays_what_a_failed_import_printed():
    code = (
        "import os, pipeline.quiet as q\n"
        "with q._stderr_to_temp_file():\n"
        "    os.write(2, b'hidden when all goes well\\n')\n"
        "try:\n"
        "    with q._stderr_to_temp_file():\n"
        "        os.write(2, b'shown when it fails\\n')\n"
        "        raise ImportError('boom')\n"
        "except ImportError:\n"
        "    pass\n"
    )
    result = python(code)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "shown when it fails\n"


def test_gym_is_the_real_package_or_the_stand_in():
    from tf_agents.system import system_multiprocessing  # noqa: F401 (imports gym)

    gym = sys.modules["gym"]
    if stack.current_stack():
        assert gym.__doc__ == stack.GYM_STAND_IN_DOC
    else:
        assert gym.__version__ == "0.23.0"


def test_pip_check_reports_only_tf_agents_own_pins():
    result = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120
    )
    problems = [line for line in result.stdout.splitlines() if line.strip()]
    if not stack.current_stack():
        assert result.returncode == 0, result.stdout
        return
    assert problems, "the current stack installs tf-agents without its pins"
    assert all(line.startswith("tf-agents 0.19.0 ") for line in problems), problems


def setup_env(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "setup_env.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_setup_refuses_an_unknown_stack_in_one_line():
    result = setup_env(PIPELINE_STACK="newest")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: PIPELINE_STACK=newest is not a stack: use pinned (Python 3.11) or current "
        "(Python 3.12/3.13)"
    ]


def test_setup_refuses_the_other_stack_over_an_existing_venv():
    other = "pinned" if stack.current_stack() else "current"
    held = "current" if other == "pinned" else "pinned"
    result = setup_env(PIPELINE_STACK=other, PIPELINE_VENV=sys.prefix)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"holds the {held} stack" in lines[0], result.stderr
    assert "PIPELINE_VENV" in lines[0]


@pytest.mark.skipif(stack.reverb_installed(), reason="Reverb is installed: the mode runs here")
def test_the_distributed_mode_names_the_stack_it_needs():
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.distributed.server"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {stack.REVERB_MISSING}"]


def test_uint8_specs_sample_their_whole_range_as_on_numpy_1():
    """numpy 2 wrapped TF-Agents' uint8 bound 255 + 1 to 0; the stack samples as int32 did."""
    import tensorflow as tf
    from tf_agents.specs import tensor_spec

    def sample(dtype):
        spec = tensor_spec.BoundedTensorSpec((5_000,), dtype, 0, 255)
        tf.random.set_seed(7)
        return tensor_spec.sample_spec_nest(spec, seed=3, outer_dims=(2,))

    frames, wide = sample(tf.uint8), sample(tf.int32)
    assert frames.dtype == tf.uint8 and frames.shape == (2, 5_000)
    assert int(tf.reduce_min(frames)) == 0 and int(tf.reduce_max(frames)) == 255
    assert (frames.numpy() == wide.numpy()).all()
