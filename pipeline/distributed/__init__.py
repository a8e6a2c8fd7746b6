"""Distributed mode: collectors and one learner around a Reverb replay server.

Roles (each `python -m pipeline.distributed.<role>`): `server` holds the replay and the
newest weights, `learner` trains and owns the run directory, `collector` acts; `launch` starts
them all on one machine or in one Slurm allocation and restarts any that die.

Reverb exists only on the pinned stack (Python 3.11, TF 2.15); elsewhere every role refuses
with one line before anything is written.
"""

from pipeline import stack

stack.require_reverb()
