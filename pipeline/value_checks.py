"""The checks a bound setting can be held to, one per kind of value: each returns what is
wrong with a value (one phrase for the error line), or None. `pipeline.validation` says which
setting gets which."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gin

Check = Callable[[Any], "str | None"]  # returns what is wrong with a value, or None

PLAIN_TYPES = {"int", "float", "bool", "str", "None"}


# --- checks --------------------------------------------------------------------------------


def is_reference(value: Any) -> bool:
    return isinstance(value, gin.config.ConfigurableReference)


def _not_a_number(value: Any, integer: bool) -> str | None:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool):
        return f"must be {kind}, not a bool"
    if isinstance(value, str):
        return f"must be {kind}, not the string {value!r} (drop the quotes)"
    if integer and isinstance(value, float):
        if value.is_integer():
            return f"must be an integer, not a float (write {int(value):_}, not {value!r})"
        return "must be an integer"
    if not isinstance(value, int | float):
        return f"must be {kind}"
    return None


def integer(low: int | None = None, *, none: bool = False) -> Check:
    """An int (not a bool, not a float such as 1e5) of at least `low`."""

    def check(value: Any) -> str | None:
        if value is None and none:
            return None
        wanted = "an integer" + (f" >= {low}" if low is not None else "")
        wanted += " or None" if none else ""
        problem = _not_a_number(value, integer=True)
        if problem is not None:
            return problem.replace("an integer", wanted, 1)
        if low is not None and value < low:
            return f"must be {wanted}"
        return None

    return check


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    none: bool = False,
    schedule: bool = False,
) -> Check:
    """A float or int in the interval; `schedule`: `@Schedule()` is accepted too."""
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    if low is not None and high is not None:
        wanted = f"a number in {left}{low:g}, {high:g}{right}"
    elif low is not None:
        wanted = f"a number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        wanted = f"a number {'<' if high_open else '<='} {high:g}"
    else:
        wanted = "a number"
    wanted += " or None" if none else ""
    wanted += " or a schedule (@Name())" if schedule else ""

    def check(value: Any) -> str | None:
        if value is None and none:
            return None
        if schedule and is_reference(value):
            return None if value.evaluate else f"must be {wanted}"
        if _not_a_number(value, integer=False) is not None:
            return f"must be {wanted}" + _quoted_hint(value)
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        return f"must be {wanted}" if below or above else None

    return check


def probability(none: bool = False) -> Check:
    return number(0.0, 1.0, none=none)


def positive(none: bool = False, schedule: bool = False) -> Check:
    return number(0.0, low_open=True, none=none, schedule=schedule)


def one_of(*choices: Any) -> Check:
    def check(value: Any) -> str | None:
        shown = ", ".join(repr(choice) for choice in choices)
        return None if value in choices else f"must be one of {shown}"

    return check


def layer_sizes(width: int = 1) -> Check:
    """A tuple of positive ints (`width` 1), or of `width`-tuples of them (conv layers)."""
    item = "a positive int" if width == 1 else f"a ({', '.join(['int'] * width)}) tuple"

    def good(entry: Any) -> bool:
        if width == 1:
            return isinstance(entry, int) and not isinstance(entry, bool) and entry > 0
        return (
            isinstance(entry, tuple | list)
            and len(entry) == width
            and all(good_int(x) for x in entry)
        )

    def good_int(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x > 0

    def check(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, tuple | list):
            example = "(256,)" if width == 1 else "((32, 8, 4),)"
            return f"must be a tuple with {item} per layer, e.g. {example} (note the comma)"
        bad = [entry for entry in value if not good(entry)]
        return f"every layer must be {item}, got {bad[0]!r}" if bad else None

    return check


def factory(none: bool = False) -> Check:
    """A configurable the pipeline calls itself: `@Name`, without parentheses."""

    def check(value: Any) -> str | None:
        if value is None and none:
            return None
        if not is_reference(value):
            return "must be a configurable, e.g. @Name" + (" or None" if none else "")
        if value.evaluate:
            return f"must be @{value.selector} without '()': the pipeline builds it"
        return None

    return check


def schedule() -> Check:
    """A schedule object, `@Name()` (called at parse time)."""

    def check(value: Any) -> str | None:
        if is_reference(value) and value.evaluate:
            return None
        if is_reference(value):
            return f"must be @{value.selector}() with '()': the schedule itself is needed"
        return (
            "must be a schedule, e.g. @ConstantSchedule() with ConstantSchedule.value = "
            f"{value!r}, or @LinearSchedule()"
        )

    return check


def called(value: gin.config.ConfigurableReference) -> str:
    return f"@{value.selector}{'()' if value.evaluate else ''}"


def _quoted_hint(value: Any) -> str:
    return f", not the string {value!r} (drop the quotes)" if isinstance(value, str) else ""
