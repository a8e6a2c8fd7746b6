"""The local Slurm cluster of the sweep's tests, for the suite's Slurm array test."""

from tests.sweep.test_slurm import slurm_cluster  # noqa: F401 (a fixture, used by name)
