"""A quiet start: hides TensorFlow's start-up lines and old gym's deprecation notice.

Must run before TensorFlow or TF-Agents is imported. `--tf_logs` on the command line (or
PIPELINE_TF_LOGS=1) keeps TensorFlow's own logging for debugging.

TF 2.15 honours TF_CPP_MIN_LOG_LEVEL for everything it prints at import. Newer TensorFlow
prints its oneDNN and "no CUDA drivers" lines through C++ absl logging before that logging is
initialised, which no variable silences, so the first `import tensorflow` runs with file
descriptor 2 sent to a temporary file: dropped if the import succeeds, replayed if it fails.
TensorFlow is not imported any earlier than the caller imports it (report and sweep never do).
"""

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType

from pipeline import import_hook


def tf_logs_requested(argv: list[str]) -> bool:
    return "--tf_logs" in argv or os.environ.get("PIPELINE_TF_LOGS") == "1"


def apply(argv: list[str] | None = None) -> None:
    if tf_logs_requested(sys.argv if argv is None else argv):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TF's Python-side deprecation notices (about TF-Agents internals, not user code).
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    _drop_tensorflow_info_from_absl()
    # AutoGraph compiles TF-Agents code that compares with literals; Python warns each time.
    warnings.filterwarnings("ignore", category=SyntaxWarning)
    import_hook.around_import("tensorflow", _import_with_stderr_hidden)
    try:  # TF-Agents on the pinned stack imports old `gym`, which prints a notice from this table.
        import gym_notices.notices as gym_notices

        gym_notices.notices.clear()
    except ImportError:
        pass


class _TensorFlowInfo(logging.Filter):
    """Newer TensorFlow logs INFO lines through absl (e.g. each checkpoint's sharding time)."""

    def filter(self, record: logging.LogRecord) -> bool:
        inside_tf = f"{os.sep}tensorflow{os.sep}" in record.pathname
        return record.levelno >= logging.WARNING or not inside_tf


def _drop_tensorflow_info_from_absl() -> None:
    from absl import logging as absl_logging  # creates absl's own logger class first

    logger = absl_logging.get_absl_logger()
    if not any(isinstance(f, _TensorFlowInfo) for f in logger.filters):
        logger.addFilter(_TensorFlowInfo())


def _import_with_stderr_hidden(run: Callable[[], None], module: ModuleType) -> None:
    with _stderr_to_temp_file():
        run()


@contextlib.contextmanager
def _stderr_to_temp_file() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            os.write(2, captured.read())
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
