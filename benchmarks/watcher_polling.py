"""TaskWatcher vs fixed-interval polling, on the same task timelines.

Runs a real TaskWatcher against the simulator over HTTP on 127.0.0.1 with a mixed
workload (video, image and audio models with the catalogue's latency distributions and
failure rates), tasks arriving as a Poisson process, then a second phase with one model
of steady latency that the watcher has already seen finish. The simulator runs
``--speed`` times faster and the watcher's clock is scaled the same way (``time_scale``),
so every figure below is in simulated seconds.

Fixed-interval pollers (0.5 s as Replicate's default, 1 s as OpenAI's, 6 s as Runway's)
are deterministic: their requests and detection delays are computed exactly from the
true timelines, each starting when the watcher was told about the task.

Targets (issue 3): overall at least 4x fewer requests than the 0.5 s poller, while 95%
of tasks are seen ended within max(1 s, 5% of their own latency); for the steady model,
at most 3 requests per task and a p95 delay under 1 s.

    python benchmarks/watcher_polling.py [--tasks 300] [--rate 0.3] [--speed 10]

``--second-wave RUNS`` measures something else (issue 17, item 20): a model already
learned. Per run, a fresh simulator and watcher (``store=None``); a first wave of
``--first`` tasks of one model whose latency is exactly 6 s is watched to its end, then a
second wave of 12 tasks of that model, submitted and watched together. It prints the p95
detection delay (simulated seconds, measured at the simulator) of each run's second wave
and of all runs pooled (target < 1 s), once with the watcher that saw the first wave and
once with a fresh one fed the first wave's journal (``--journal``: a fresh engine whose
clock offset is not known yet).

    python benchmarks/watcher_polling.py --second-wave 5 [--speed 1] [--first 6] [--skew 0]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from mh_notebook.polling.policy import PollPolicy
from mh_notebook.sim import CATALOGUE, Simulator
from mh_notebook.watcher import TaskWatcher

PER_TASK = PollPolicy(list_polling=False)
"""This benchmark measures the per-task schedule, timed by its GETs at the simulator: with
list polling (the default since issue 19) an end a page shows has no GET to time it by."""

FIXED = (0.5, 1.0, 6.0)
STEADY_MODEL, STEADY_LATENCY, STEADY_CV, WARM_UP = "seedream-4.5", 8.0, 0.01, 5


@dataclass
class Outcome:
    task_id: str
    model: str
    outcome: str
    cls: str
    latency: float
    delay: float
    requests: int
    fixed: dict[float, tuple[int, float]]


def _mix(rng: random.Random) -> str:
    kind = rng.choices(["video", "image", "audio"], weights=[0.6, 0.28, 0.12])[0]
    return rng.choice([m for m, s in CATALOGUE.items() if s.type == kind])


def _fixed(watched: float, end: float, interval: float) -> tuple[int, float]:
    """Requests and detection delay of a poller asking every ``interval`` from ``watched``."""
    k = max(0, math.ceil((end - watched) / interval - 1e-9))
    return k + 1, watched + k * interval - end


def _run_phase(
    sim: Simulator, watcher: TaskWatcher, arrivals: list[tuple[float, dict[str, object]]]
) -> dict[str, float]:
    watched_at: dict[str, float] = {}
    start = time.time()

    def submit_all() -> None:
        for at, kwargs in arrivals:
            delay = start + at / sim.speed - time.time()
            if delay > 0:
                time.sleep(delay)
            task_id = sim.submit(**kwargs)  # type: ignore[arg-type]
            watched_at[task_id] = time.time()
            watcher.watch(task_id)

    feeder = threading.Thread(target=submit_all)
    feeder.start()
    feeder.join()
    watcher.wait(timeout=3600)
    return watched_at


def _seen_at(sim: Simulator, ids: set[str]) -> dict[str, float]:
    """When the simulator first answered each task with its end (real epoch seconds).

    Measured at the simulator (its request log), not from the watcher's journal: the
    journal records observations on the server's clock as the watcher learned it.
    """
    ends = {i: sim.timeline(i)["end"] for i in ids}
    seen: dict[str, float] = {}
    for t, task_id, code in sim.request_log:
        if code == 200 and task_id in ends and task_id not in seen and t >= ends[task_id]:
            seen[task_id] = t
    return seen


def _outcomes(sim: Simulator, watched_at: dict[str, float], cls_of: dict[str, str]) -> list[Outcome]:
    seen = _seen_at(sim, set(watched_at))
    s = sim.speed
    out = []
    for task_id, watched in watched_at.items():
        t = sim.timeline(task_id)
        fixed = {p: _fixed(watched * s, t["end"] * s, p) for p in FIXED}
        out.append(
            Outcome(
                task_id,
                t["model"],
                t["outcome"],
                cls_of[task_id],
                (t["end"] - t["created"]) * s,
                (seen[task_id] - t["end"]) * s,
                sim.requests[task_id],
                fixed,
            )
        )
    return out


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def _report(title: str, outcomes: list[Outcome]) -> dict[str, float]:
    print(f"\n{title}")
    head = f"{'class':<8}{'tasks':>6}{'poller':>11}{'req/task':>10}{'vs 0.5s':>9}{'delay p50':>11}{'p95':>8}{'rel p50':>9}{'rel p95':>9}{'on time':>9}"
    print(head)
    print("-" * len(head))
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[o.cls].append(o)
    groups["overall"] = outcomes
    summary = {}
    for cls, group in groups.items():
        base = sum(o.fixed[0.5][0] for o in group)
        rows = [("watcher", [o.requests for o in group], [o.delay for o in group])]
        rows += [
            (f"fixed {p:g}s", [o.fixed[p][0] for o in group], [o.fixed[p][1] for o in group]) for p in FIXED
        ]
        for name, reqs, delays in rows:
            rel = [d / o.latency for d, o in zip(delays, group, strict=True)]
            on_time = sum(d <= max(1.0, 0.05 * o.latency) for d, o in zip(delays, group, strict=True)) / len(
                group
            )
            print(
                f"{cls:<8}{len(group):>6}{name:>11}{statistics.mean(reqs):>10.1f}{base / sum(reqs):>8.1f}x"
                f"{_pct(delays, 0.5):>10.2f}s{_pct(delays, 0.95):>7.2f}s{_pct(rel, 0.5):>8.1%}{_pct(rel, 0.95):>9.1%}{on_time:>9.1%}"
            )
            if name == "watcher":
                summary[cls] = base / sum(reqs)
                summary[f"{cls}_on_time"] = on_time
                summary[f"{cls}_req"] = statistics.mean(reqs)
                summary[f"{cls}_p95"] = _pct(delays, 0.95)
    return summary


def _peak_rate(sim: Simulator) -> float:
    """Most status requests the simulator saw in any one simulated second."""
    times = sorted(t for t, _, _ in sim.request_log)
    window = 1.0 / sim.speed
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return float(best)


WAVE_LATENCY, WAVE_SIZE = 6.0, 12


def _wave(sim: Simulator, watcher: TaskWatcher, n: int) -> list[str]:
    ids = [sim.submit(model=STEADY_MODEL, outcome="succeeded", latency=WAVE_LATENCY) for _ in range(n)]
    watcher.watch(ids)
    watcher.wait(timeout=600)
    return ids


def _wave_delays(sim: Simulator, ids: list[str]) -> list[float]:
    seen = _seen_at(sim, set(ids))
    return [(seen[i] - sim.timeline(i)["end"]) * sim.speed for i in ids]


def second_wave(runs: int, speed: float, first: int, skew: float, journal: bool) -> list[float]:
    """Detection delays of second waves (simulated seconds), per run printed, all returned."""
    import tempfile

    pooled: list[float] = []
    for run in range(runs):
        with (
            tempfile.TemporaryDirectory() as tmp,
            Simulator(seed=100 + run, speed=speed, clock_skew=skew) as sim,
        ):
            store: Any = f"{tmp}/journal.sqlite" if journal else None
            options: dict[str, Any] = {
                "store": store,
                "display": "none",
                "time_scale": speed,
                "policy": PER_TASK,
            }
            with TaskWatcher(sim.api_key, sim.url, **options) as watcher:
                _wave(sim, watcher, first)
                if journal:
                    watcher.stop()
                    watcher = TaskWatcher(sim.api_key, sim.url, **options)
                ids = _wave(sim, watcher, WAVE_SIZE)
                error = watcher.clock_offset.error
                watcher.stop()
            delays = _wave_delays(sim, ids)
            requests = statistics.mean(sim.requests[i] for i in ids)
        pooled += delays
        print(
            f"  run {run}: p95 {_pct(delays, 0.95):.2f} s, max {max(delays):.2f} s, "
            f"{requests:.1f} req/task, offset error {error:.3f} s"
        )
    return pooled


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=300, help="tasks of the mixed workload")
    parser.add_argument("--rate", type=float, default=0.3, help="arrivals per simulated second")
    parser.add_argument("--steady", type=int, default=45, help="tasks of the steady phase (5 warm up)")
    parser.add_argument("--speed", type=float, default=10.0, help="simulator speed = watcher time_scale")
    parser.add_argument("--rate-limit", type=float, default=10.0, help="watcher requests/s (simulated)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--verbose", action="store_true", help="list the tasks seen late")
    parser.add_argument("--second-wave", type=int, default=0, metavar="RUNS", help="item 20 instead")
    parser.add_argument("--first", type=int, default=6, help="tasks of the first wave (--second-wave)")
    parser.add_argument("--skew", type=float, default=0.0, help="server clock skew, s (--second-wave)")
    args = parser.parse_args()
    if args.second_wave:
        for journal in (False, True):
            how = "a fresh watcher fed the journal" if journal else "the same watcher"
            print(
                f"second wave of {WAVE_SIZE} x {WAVE_LATENCY:g} s after {args.first}, {how}, speed {args.speed:g}, skew {args.skew:+g} s:"
            )
            pooled = second_wave(args.second_wave, args.speed, args.first, args.skew, journal)
            print(f"  all runs: p95 {_pct(pooled, 0.95):.2f} s, max {max(pooled):.2f} s (target p95 < 1 s)")
        return 0
    rng = random.Random(args.seed)
    arrivals, t = [], 0.0
    for _ in range(args.tasks):
        t += rng.expovariate(args.rate)
        arrivals.append((t, {"model": _mix(rng)}))
    steady, t = [], 0.0
    for _ in range(args.steady):
        t += rng.expovariate(args.rate)
        latency = STEADY_LATENCY * math.exp(rng.gauss(0, STEADY_CV))
        steady.append((t, {"model": STEADY_MODEL, "latency": latency, "outcome": "succeeded"}))
    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; simulator speed {args.speed:g} = watcher time_scale"
    )
    print(
        f"workload: {args.tasks} mixed tasks, Poisson arrivals at {args.rate:g}/s; then {args.steady} tasks of {STEADY_MODEL} with latency {STEADY_LATENCY:g} s ± {STEADY_CV:.0%}"
    )
    print(
        f"watcher rate limit: {args.rate_limit:g} requests/s (simulated), default poll policy "
        "with list polling off (per-task GETs; pages: benchmarks/list_polling.py)"
    )
    # store=None: a clean slate, nothing learned from earlier runs' journals
    options: dict[str, Any] = {
        "store": None,
        "display": "none",
        "time_scale": args.speed,
        "rate_limit": args.rate_limit,
        "policy": PER_TASK,
    }
    with Simulator(seed=args.seed, speed=args.speed) as sim:
        with TaskWatcher(sim.api_key, sim.url, **options) as watcher:
            first_engine = watcher.engine
            started = time.time()
            mixed_at = _run_phase(sim, watcher, arrivals)
            mixed = _outcomes(sim, mixed_at, {i: sim.timeline(i)["type"] for i in mixed_at})
        # a fresh watcher: what it knows of the model comes from the warm-up tasks alone
        with TaskWatcher(sim.api_key, sim.url, **options) as watcher:
            # one engine per API per process: the first one ended with its last watcher
            assert watcher.engine is not first_engine, "the steady phase must start from a fresh engine"
            _run_phase(sim, watcher, steady[:WARM_UP])  # these teach the watcher the model
            steady_at = _run_phase(
                sim, watcher, [(at - steady[WARM_UP][0], kw) for at, kw in steady[WARM_UP:]]
            )
            steady_out = _outcomes(sim, steady_at, dict.fromkeys(steady_at, "steady"))
        elapsed = (time.time() - started) * args.speed
        peak = _peak_rate(sim)
    total = sum(sim.requests.values())
    print(
        f"ran {elapsed:,.0f} simulated seconds; {total} requests in all, peak {peak:.0f} in one simulated second (ceiling {args.rate_limit:g}/s, bursts of {max(1.0, args.rate_limit / 5):g})"
    )
    m = _report("Mixed workload (simulated seconds; 'on time' = seen within max(1 s, 5% of latency))", mixed)
    s = _report(f"Steady model, after {WARM_UP} warm-up tasks had finished", steady_out)
    checks = [
        ("overall >= 4x fewer requests than 0.5 s", m["overall"] >= 4.0, f"{m['overall']:.1f}x"),
        ("overall >= 95% on time", m["overall_on_time"] >= 0.95, f"{m['overall_on_time']:.1%}"),
        ("steady <= 3 requests per task", s["overall_req"] <= 3.0, f"{s['overall_req']:.2f}"),
        ("steady p95 delay < 1 s", s["overall_p95"] < 1.0, f"{s['overall_p95']:.2f} s"),
    ]
    if args.verbose:
        print("\nLate tasks (mixed workload):")
        for o in mixed:
            if o.delay > max(1.0, 0.05 * o.latency):
                print(
                    f"  {o.task_id} {o.model:<20} {o.outcome:<10} latency {o.latency:6.1f}s delay {o.delay:5.2f}s requests {o.requests}"
                )
    print("\nTargets:")
    for name, ok, value in checks:
        print(f"  {'MET   ' if ok else 'MISSED'} {name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
