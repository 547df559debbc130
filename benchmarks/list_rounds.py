"""The list arm's rounds, one line each: when it started, how long it took, what it walked.

An instrumented run of ``list_polling.py``'s list arm (the crowded scenario by default):
each round of walks the lister sends (``Lister._round``, wrapped: the engine has no public
hook for it) is printed with its start and length in simulated seconds, the tasks it
covered and its walks (filter, estimated pages). It shows how the image and video groups'
rounds fall together or alternate. Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/list_rounds.py [--others 1000] [--speed 1] [--rounds 40]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import list_polling as lp

from mh_notebook.polling import lister

ROUNDS: list[tuple[float, float, list[tuple[str, int]], int]] = []


def _spy() -> None:
    inner = lister.Lister._round

    async def _round(self: lister.Lister, walks: Any, covered: dict[str, float]) -> None:
        started = time.monotonic()
        await inner(self, walks, covered)
        what = [(w.model or w.provider or "*", w.est_pages) for w in walks]
        ROUNDS.append((started, time.monotonic(), what, len(covered)))

    lister.Lister._round = _round  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--others", type=int, default=1000)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=40, help="rounds printed (all are counted)")
    args = parser.parse_args()
    _spy()
    specs = lp.workload(random.Random(args.seed), others=args.others)
    result = lp.run_arm("list", specs, args.speed, args.seed)
    start = ROUNDS[0][0]
    print(f"{'start':>8} {'length':>7} {'covers':>6}  walks (filter, est. pages)")
    for began, ended, walks, covered in ROUNDS[: args.rounds]:
        print(
            f"{(began - start) * args.speed:7.2f}s {(ended - began) * args.speed:6.2f}s {covered:6d}  {walks}"
        )
    print(
        f"{len(ROUNDS)} rounds; local p95 {lp.p(result.local, 0.95):.2f} s, result in hand p95 "
        f"{lp.p(result.results, 0.95):.2f} s, {result.per_task:.2f} requests per task"
    )


if __name__ == "__main__":
    main()
