"""A quick fault soak (the long one is benchmarks/fault_soak.py): nothing is lost."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from fault_soak import run_soak


def test_quick_fault_soak() -> None:
    result = run_soak(n_tasks=80, speed=50.0, rate_limit=40.0)
    assert result.faulted > 0.10 * result.requests  # the faults really happened (about 17% expected)
    assert {0, 200, 429} <= result.by_code.keys()
    assert result.resumed > 0
    assert result.wrong_status == []
    assert result.missing_from_history == []
    assert result.escaped_errors == []
    assert result.peak_per_second <= result.limit_per_second
    assert result.refreshed_urls == 10
