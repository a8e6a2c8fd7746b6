"""What every absl command line shares: one `error:` line and exit status 2 for bad input.

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
