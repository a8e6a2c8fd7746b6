"""Makes either supported stack (docs/getting-started.md) import TF-Agents the same way.

Must run before TensorFlow or TF-Agents is imported; `pipeline/__init__.py` calls `prepare()`
and `envs/__init__.py` imports `pipeline` first for that reason.

- TensorFlow >= 2.16 maps `tf.keras` to Keras 3, which TF-Agents 0.19 was not written for;
  `TF_USE_LEGACY_KERAS=1` maps it to tf-keras (Keras 2) instead. It is set only where
  tf-keras is installed: TF 2.15 honours it too, and fails without tf-keras.
- TF-Agents imports the retired `gym` package at import time (in
  `tf_agents/system/system_multiprocessing.py`, for a registry helper we never call). The
  pinned stack installs gym 0.23 through TF-Agents' own pins; the current stack installs
  TF-Agents without its pins, so an empty module named `gym` stands in for it. TF-Agents'
  optional gym suites already skip themselves when `gym.spaces` is missing.
- Under numpy 2, TF-Agents' `sample_bounded_spec` computes a uint8 spec's exclusive upper
  bound as `maximum + 1` in uint8, so 255 wraps to 0 and every network on Atari frames fails
  to build ("Need minval < maxval"). TF-Agents samples uint8 as int32 anyway, so sampling
  from the same bounds widened to int32 and casting back is exactly what numpy 1 did.
"""

import os
import sys
from importlib import metadata, util
from types import ModuleType

from pipeline import import_hook

GYM_STAND_IN_DOC = "Empty stand-in for the retired gym package (see pipeline/stack.py)."


def current_stack() -> bool:
    """True on the Python 3.12+ stack (current TensorFlow with tf-keras, no Reverb)."""
    return sys.version_info >= (3, 12)


def prepare() -> None:
    if util.find_spec("tf_keras") is not None:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    if "gym" not in sys.modules and util.find_spec("gym") is None:
        sys.modules["gym"] = ModuleType("gym", GYM_STAND_IN_DOC)
    if int(metadata.version("numpy").split(".")[0]) >= 2:
        import_hook.around_import("tf_agents.specs.tensor_spec", _widen_uint8_sampling)


def _widen_uint8_sampling(run, module: ModuleType) -> None:  # noqa: ANN001
    run()
    import numpy as np
    import tensorflow as tf

    narrow = module.sample_bounded_spec

    def sample_bounded_spec(spec, seed=None, outer_dims=None):  # noqa: ANN001, ANN202
        if spec.dtype != tf.uint8:
            return narrow(spec, seed=seed, outer_dims=outer_dims)
        wide = module.BoundedTensorSpec(
            spec.shape,
            tf.int32,
            np.asarray(spec.minimum, np.int32),
            np.asarray(spec.maximum, np.int32),
        )
        return tf.cast(narrow(wide, seed=seed, outer_dims=outer_dims), tf.uint8)

    module.sample_bounded_spec = sample_bounded_spec


REVERB_MISSING = (
    "the distributed mode needs Reverb (dm-reverb 0.14), which is built only for Python 3.11 "
    "with TensorFlow 2.15: set up the pinned stack (PIPELINE_STACK=pinned bash "
    "scripts/setup_env.sh, with python3.11 installed) and run it from there"
)


def reverb_installed() -> bool:
    return util.find_spec("reverb") is not None


def require_reverb() -> None:
    """One `error:` line and exit status 2 where Reverb cannot be installed, not a traceback."""
    if not reverb_installed():
        from pipeline import cli

        cli.fail(REVERB_MISSING)
