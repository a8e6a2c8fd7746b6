"""The sweep's aggregate reads runs through the same model as the report, with one std."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from pipeline.analysis import aggregate
from tests.analysis.test_report import make_run


def test_aggregate_and_report_agree_on_finished_final_best_and_std(tmp_path: Path):
    """Three seeds of one setting: two finished at 1,000 env steps, one stopped at 500. The
    numbers are over the finished two, std with n - 1 as the report computes it."""
    evals = {0: [(0, 1.0), (500, 9.0), (1000, 5.0)], 1: [(0, 2.0), (1000, 8.0)], 2: [(500, 3.0)]}
    runs = []
    for seed, points in evals.items():
        make_run(tmp_path / f"s{seed}", seed, points, total_env_steps=1000)
        runs.append(
            {"slug": "x", "setting": {}, "seed": seed, "run_dir": f"s{seed}",
             "total_env_steps": 1000}
        )  # fmt: skip
    (tmp_path / aggregate.SWEEP_FILE).write_text(json.dumps({"runs": runs}))
    [setting] = aggregate.collect(tmp_path)
    assert [run.finished for run in setting.runs] == [True, True, False]
    assert setting.runs[2].status == "unfinished (500 of 1,000 env steps)"
    stats = setting.stats()
    assert stats["final_mean"] == pytest.approx(6.5)
    assert stats["final_std"] == pytest.approx(statistics.stdev([5.0, 8.0]))
    assert stats["best_mean"] == pytest.approx((9.0 + 8.0) / 2)
