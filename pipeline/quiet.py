"""A quiet start: hides TensorFlow's C++ start-up lines and old gym's deprecation notice.

Must run before TensorFlow or TF-Agents is imported. `--tf_logs` on the command line (or
PIPELINE_TF_LOGS=1) keeps TensorFlow's own logging for debugging.
"""

import logging
import os
import sys
import warnings


def tf_logs_requested(argv: list[str]) -> bool:
    return "--tf_logs" in argv or os.environ.get("PIPELINE_TF_LOGS") == "1"


def apply(argv: list[str] | None = None) -> None:
    if tf_logs_requested(sys.argv if argv is None else argv):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TF's Python-side deprecation notices (about TF-Agents internals, not user code).
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    # AutoGraph compiles TF-Agents code that compares with literals; Python warns each time.
    warnings.filterwarnings("ignore", category=SyntaxWarning)
    try:  # TF-Agents imports old `gym`, which prints a notice looked up in this table.
        import gym_notices.notices as gym_notices

        gym_notices.notices.clear()
    except ImportError:
        pass
