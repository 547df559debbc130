"""How often does pure noise pass for a server limit? (issue 17, the probe's false alarms)

400 runs of 200 s on a fake clock: a demand of 20 req/s against a ceiling of 10 (so the
budget binds and probes are made), 5-30% of answers 429 at random, the same at every
rate. Prints how many runs learned a limit and how many probed. Expected: 0 of 400.

    PYTHONPATH=.:tests .venv/bin/python benchmarks/budget_noise.py
"""

from __future__ import annotations

import random

from test_budget import _client

from mh_notebook.polling.budget import AdaptiveRate


def run(seed: int) -> tuple[bool, bool]:
    """One run: (a limit was learned, a probe was made)."""
    share = [0.05, 0.1, 0.2, 0.3][seed % 4]
    rate = AdaptiveRate(10.0)

    def refused(t: float, sent: float, rng: random.Random) -> bool:
        return rng.random() < share

    limited = any(shown for _, _, shown in _client(rate, lambda t: 20.0, refused, 200.0, seed))
    return limited or rate.limit_known(200.0), rate._last_probe > 0


if __name__ == "__main__":
    results = [run(seed) for seed in range(400)]
    print(
        f"noise taken for a limit: {sum(r[0] for r in results)} of 400 runs; probed in {sum(r[1] for r in results)}"
    )
