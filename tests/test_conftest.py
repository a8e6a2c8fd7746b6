"""The shared test helpers themselves: a real-fault test that cannot run skips on a
developer's machine and fails in CI (CI=true), naming why."""

from __future__ import annotations

import pytest

from tests import conftest

NEEDS_A_MOUNT = """
import pytest

from tests.conftest import skip_unless_ci


@pytest.fixture(scope="module")
def small_disk():
    skip_unless_ci("no tmpfs here: permission denied")


def test_a_real_fault():
    skip_unless_ci("no tmpfs here: permission denied")


def test_on_a_small_disk(small_disk):
    pass
"""


@pytest.mark.parametrize("ci", ["true", "1"])
def test_a_real_fault_test_that_cannot_run_fails_in_ci(pytester, monkeypatch, ci: str):
    monkeypatch.setenv("CI", ci)
    pytester.makepyfile(test_fault=NEEDS_A_MOUNT)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, errors=1)  # the fixture's failure is an error
    message = "Failed: CI=true, but this real-fault test cannot run here: no tmpfs here: *"
    result.stdout.fnmatch_lines(
        [f"FAILED test_fault.py::test_a_real_fault - {message}",
         f"ERROR test_fault.py::test_on_a_small_disk - {message}"]
    )  # fmt: skip


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_a_real_fault_test_that_cannot_run_skips_outside_ci(pytester, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makepyfile(test_fault=NEEDS_A_MOUNT)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] *: no tmpfs here: permission denied"] * 2)
    assert conftest.in_ci() is False
