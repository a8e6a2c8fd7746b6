"""What every absl command line shares: one `error:` line and exit status 2 for bad input,
and the flags that say what to run and where (`pipeline.train` and the distributed roles).

absl's own flag errors (an unknown flag, a bad enum or integer) exit 1 with usage text;
here they end like every other input error.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

from absl import app, flags

EXIT_BAD_INPUT = 2


def fail(message: str) -> NoReturn:
    """Prints `error: <first line of message>` and exits 2."""
    first = str(message).strip().splitlines()[0] if str(message).strip() else "bad input"
    print(f"error: {first}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(f"{error}: see --helpfull")


def run(main: Callable[[list[str]], None]) -> None:
    app.run(main, flags_parser=parse_flags)


def define_run_flags() -> None:
    """--gin_file, --gin_bindings, --root_dir, --no_lock, --tf_logs and --trust_run_dir, once
    per process. Flags only say how to run (files, bindings, where); everything that changes
    results is gin."""
    if "gin_file" in flags.FLAGS:
        return
    flags.DEFINE_multi_string(
        "gin_file",
        ["dqn_cartpole.gin"],
        "Gin file: a path, or a bare name found in the repository's gin/ folder. Repeatable.",
    )
    flags.DEFINE_multi_string(
        "gin_bindings", [], "Gin binding such as 'train.total_env_steps=20_000'. Repeatable."
    )
    flags.DEFINE_string(
        "root_dir", None, "Run directory; default runs/<gin file>[-<bindings hash>]-s<seed>."
    )
    flags.DEFINE_bool(
        "no_lock",
        False,
        "Run without the run directory's lock (flock on <root_dir>/.lock), for filesystems that "
        "cannot lock: nothing then stops a second process from writing the same directory.",
    )
    flags.DEFINE_bool("tf_logs", False, "Show TensorFlow's own start-up and C++ log lines.")
    define_trust_flag()


def define_trust_flag() -> None:
    """--trust_run_dir, once per process: the commands that read a run directory load what
    could run code (pickles not signed with the user's secret, a config.gin that imports)
    only with it (see `pipeline.run.trust`)."""
    if "trust_run_dir" in flags.FLAGS:
        return
    flags.DEFINE_bool(
        "trust_run_dir",
        False,
        "Trust the run directory: load its pickles even when your secret did not sign them "
        "(another user's run, or checkpoints from before signing) and let its config.gin "
        "import modules. Only for directories whose author you trust: both can run any code.",
    )
