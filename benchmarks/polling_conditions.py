"""Polling under real-service conditions: one workload replayed under skewed clocks,
whole-second timestamps, a server rate limit and heavier arrivals (issue 11).

Every arm replays the same workload (same seed, so the same models, outcomes and latencies
in the same order: ~60 mixed catalogue tasks, Poisson arrivals) against a fresh
``Simulator`` over real HTTP, with a fresh ``TaskWatcher`` (``store=None``, default poll
policy, default 10 req/s ceiling), in real time at ``--speed`` (the watcher's
``time_scale`` is the same). All figures are in simulated seconds.

Arms (the condition is set on the simulator):

- ``control``: server clock = ours, millisecond timestamps, no server limit, 0.3 task/s;
- ``skew -120``, ``skew +120``, ``skew +600``: ``clock_skew`` of that many seconds (taken
  as real seconds: a clock offset is not a duration of the schedule, so it is not divided
  by the speed; uncorrected it would look like ``speed`` times as much task age);
- ``whole s, +30``: ``whole_seconds=True`` and ``clock_skew=+30``. The simulator floors
  real seconds, so at speed N the quantum is N simulated seconds (N times coarser than
  the real API's whole seconds);
- ``limit 6/s``: the server allows 6 requests per second per key (``rate_burst = 6``:
  one second's worth); arrivals 0.5 task/s; the watcher keeps its default 10 req/s
  ceiling. This arm runs in real time (speed 1, about 4 minutes) whatever ``--speed``
  says: the simulator's ``Retry-After`` is whole real seconds (at least 1), as the real
  API's, and at speed N every 429 would pause N times longer than against the real API
  (and the learned rate would regrow N times slower), a handicap of the compressed
  clock, not of the schedule. ``--quick`` runs it at the quick speed;
- ``arrivals 0.5/s``, ``arrivals 1/s``: the same tasks arriving faster, default limit.

Measured at the simulator, not from the watcher: requests per task (``sim.requests``,
429 answers included), the share of requests answered 429 (``sim.request_log``) and the
detection delay = the first 200 answer sent at or after the task's true end - that end.
"On time" = seen within max(1 s, 5% of the task's true latency).

Baselines are computed exactly from the true timelines (``sim.timeline(id)``), each
starting when the task was watched: fixed 0.5 s, 1 s and 6 s pollers (first poll at once)
and capped exponential backoff (as AWS waiters: first poll 1 s after the watch, each gap
1.5x the previous, at most 30 s). They ignore rate limits: under a server limit they would
be answered 429 far more often than this table shows.

    python benchmarks/polling_conditions.py [--tasks 60] [--speed 5] [--seed 3] [--quick]
        [--arms control "skew -120" ...] [--verbose]
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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from mh_notebook.sim import CATALOGUE, Simulator
from mh_notebook.watcher import TaskWatcher

BASE_RATE = 0.3
"""Arrivals per simulated second of the arms with no rate of their own."""
SERVER_LIMIT = 6.0
"""The limit arm's server limit, requests per simulated second."""
MIN_SAMPLES = 3
"""Ends of a model the default policy needs before a window shapes the schedule."""


@dataclass(frozen=True)
class Arm:
    name: str
    rate: float = BASE_RATE
    clock_skew: float = 0.0
    whole_seconds: bool = False
    server_limit: float | None = None  # requests per simulated second
    speed: float | None = None  # this arm's own speed (None: --speed)

    def describe(self) -> str:
        parts = []
        if self.clock_skew:
            parts.append(f"clock {self.clock_skew:+g} s")
        if self.whole_seconds:
            parts.append("whole s")
        if self.server_limit:
            parts.append(f"{self.server_limit:g} req/s")
        return ", ".join(parts) or "-"


ARMS = [
    Arm("control"),
    Arm("skew -120", clock_skew=-120.0),
    Arm("skew +120", clock_skew=120.0),
    Arm("skew +600", clock_skew=600.0),
    Arm("whole s, +30", clock_skew=30.0, whole_seconds=True),
    Arm("limit 6/s", rate=0.5, server_limit=SERVER_LIMIT, speed=1.0),
    Arm("arrivals 0.5/s", rate=0.5),
    Arm("arrivals 1/s", rate=1.0),
]


@dataclass
class TaskResult:
    index: int
    model: str
    type: str
    outcome: str
    latency: float  # true, simulated seconds
    delay: float  # simulated seconds (inf: never seen)
    requests: int
    answered_429: int
    first_poll_wait: float  # watch -> first request, simulated seconds
    hit_429_late: bool  # a 429 answer for it between its end and when it was seen
    windowed: bool  # >= MIN_SAMPLES succeeded ends of its model before its own end
    watched: float  # real epoch
    end: float  # real epoch

    @property
    def on_time(self) -> bool:
        return self.delay <= max(1.0, 0.05 * self.latency)


@dataclass
class ArmResult:
    arm: Arm
    speed: float
    tasks: list[TaskResult]
    requests: int
    answered_429: int
    seconds: float  # simulated
    offset: str
    rate_min: float  # watcher's effective rate, simulated req/s
    rate_end: float
    ceiling: float
    durations: list[float] = field(default_factory=list)  # per-task true latencies (for the identity check)
    ended_in_watcher: int = 0


def _mix(rng: random.Random) -> str:
    kind = rng.choices(["video", "image", "audio"], weights=[0.6, 0.28, 0.12])[0]
    return rng.choice([m for m, s in CATALOGUE.items() if s.type == kind])


def workload(n: int, seed: int) -> tuple[list[float], list[str]]:
    """Unit-rate Poisson gaps (divided by an arm's rate) and the models, in order."""
    rng = random.Random(seed)
    gaps = [rng.expovariate(1.0) for _ in range(n)]
    return gaps, [_mix(rng) for _ in range(n)]


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def run_arm(arm: Arm, gaps: list[float], models: list[str], speed: float, seed: int) -> ArmResult:
    sim = Simulator(
        seed=seed,
        speed=speed,
        clock_skew=arm.clock_skew,
        whole_seconds=arm.whole_seconds,
        rate_limit=None if arm.server_limit is None else arm.server_limit * speed,
        rate_burst=None if arm.server_limit is None else arm.server_limit,
    )
    watched: dict[str, float] = {}
    order: list[str] = []
    rates: list[float] = []
    with sim:
        watcher = TaskWatcher(sim.api_key, sim.url, store=None, display="none", time_scale=speed)
        poller = watcher.engine.poller
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                rates.append(poller.effective_rate)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.time()
        at = 0.0
        for gap, model in zip(gaps, models, strict=True):
            at += gap / arm.rate
            pause = start + at / speed - time.time()
            if pause > 0:
                time.sleep(pause)
            task_id = sim.submit(model=model)
            watched[task_id] = time.time()
            order.append(task_id)
            watcher.watch(task_id)
        try:
            final = watcher.wait(timeout=1200 / speed + 60)
        except TimeoutError:
            final = watcher.tasks
        elapsed = (time.time() - start) * speed
        done.set()
        sampler.join()
        offset = repr(watcher.clock_offset)
        ceiling = poller.rate_limit / speed
        rate_end = poller.effective_rate / speed
        watcher.stop()
        log = list(sim.request_log)
        counts = Counter(sim.requests)
        timelines = {i: sim.timeline(i) for i in order}
    ids = set(order)
    log = [entry for entry in log if entry[1] in ids]
    by_task: dict[str, list[tuple[float, int]]] = {i: [] for i in order}
    for t, task_id, code in log:
        by_task[task_id].append((t, code))
    # succeeded ends of each model, for "did the watcher have a window for it"
    ends_by_model: dict[str, list[float]] = {}
    for i in order:
        tl = timelines[i]
        if tl["outcome"] == "succeeded":
            ends_by_model.setdefault(tl["model"], []).append(tl["end"])
    results = []
    for index, task_id in enumerate(order):
        tl = timelines[task_id]
        entries = by_task[task_id]
        end = tl["end"]
        seen = next((t for t, code in entries if code == 200 and t >= end), math.inf)
        prior = sum(e < end for e in ends_by_model.get(tl["model"], []))
        results.append(
            TaskResult(
                index=index,
                model=tl["model"],
                type=tl["type"],
                outcome=tl["outcome"],
                latency=(end - tl["created"]) * speed,
                delay=(seen - end) * speed,
                requests=counts[task_id],
                answered_429=sum(code == 429 for _, code in entries),
                first_poll_wait=((entries[0][0] - watched[task_id]) * speed) if entries else math.inf,
                hit_429_late=any(code == 429 and end <= t <= seen for t, code in entries),
                windowed=prior >= MIN_SAMPLES,
                watched=watched[task_id],
                end=end,
            )
        )
    return ArmResult(
        arm=arm,
        speed=speed,
        tasks=results,
        requests=len(log),
        answered_429=sum(code == 429 for _, _, code in log),
        seconds=elapsed,
        offset=offset,
        rate_min=min(rates, default=poller.effective_rate) / speed,
        rate_end=rate_end,
        ceiling=ceiling,
        durations=[r.latency for r in results],
        ended_in_watcher=sum(1 for t in final.values() if t.is_terminal),
    )


# ------------------------------------------------------------------ baselines
def fixed(latency: float, interval: float) -> tuple[int, float]:
    """Requests and delay of a poller asking every ``interval`` from the watch (t = 0)."""
    k = max(0, math.ceil(latency / interval - 1e-9))
    return k + 1, k * interval - latency


def backoff(latency: float, first: float = 1.0, factor: float = 1.5, cap: float = 30.0) -> tuple[int, float]:
    """Requests and delay of capped exponential backoff: polls at 1, 1+1.5, 1+1.5+2.25, ..."""
    t, gap, n = first, first, 1
    while t < latency - 1e-9:
        gap = min(cap, gap * factor)
        t += gap
        n += 1
    return n, t - latency


BASELINES: dict[str, Callable[[float], tuple[int, float]]] = {
    "fixed 0.5 s": lambda lat: fixed(lat, 0.5),
    "fixed 1 s": lambda lat: fixed(lat, 1.0),
    "fixed 6 s": lambda lat: fixed(lat, 6.0),
    "backoff 1-30 s": backoff,
}


def baseline_rows(r: ArmResult) -> dict[str, tuple[float, float, float, float]]:
    """Per baseline: requests/task, p50, p95, on-time share, on this arm's tasks."""
    out = {}
    for name, poll in BASELINES.items():
        # the baseline starts when the task was watched (a few ms after its creation)
        runs = [poll((t.end - t.watched) * r.speed) for t in r.tasks]
        delays = [d for _, d in runs]
        on_time = sum(d <= max(1.0, 0.05 * t.latency) for d, t in zip(delays, r.tasks, strict=True))
        out[name] = (
            statistics.mean(n for n, _ in runs),
            _pct(delays, 0.5),
            _pct(delays, 0.95),
            on_time / len(r.tasks),
        )
    return out


# ------------------------------------------------------------------ report
def summary(r: ArmResult) -> dict[str, float]:
    delays = [t.delay for t in r.tasks]
    return {
        "req": r.requests / len(r.tasks),
        "share429": r.answered_429 / max(1, r.requests),
        "p50": _pct(delays, 0.5),
        "p95": _pct(delays, 0.95),
        "on_time": sum(t.on_time for t in r.tasks) / len(r.tasks),
    }


def cost_split(r: ArmResult) -> str:
    """Requests and on-time share of tasks with and without a learned window, and the
    mean rate of requests the simulator answered (200) and received, per simulated second."""
    parts = []
    for label, group in (
        ("windowed", [t for t in r.tasks if t.windowed]),
        ("no window", [t for t in r.tasks if not t.windowed]),
    ):
        if group:
            parts.append(
                f"{label}: {len(group)} tasks, {statistics.mean(t.requests for t in group):.1f} req/task, "
                f"{sum(t.on_time for t in group) / len(group):.0%} on time"
            )
    answered = (r.requests - r.answered_429) / r.seconds
    parts.append(f"at the simulator {r.requests / r.seconds:.1f} req/s received, {answered:.1f} answered 200")
    return "; ".join(parts)


def late_breakdown(r: ArmResult) -> str:
    """Why the late tasks were late, first matching reason each."""
    reasons: Counter[str] = Counter()
    for t in r.tasks:
        if t.on_time:
            continue
        if t.hit_429_late:
            reasons["429 pause after its end"] += 1
        elif t.outcome == "failed" and t.latency < 5:
            reasons["early failure (<5 s)"] += 1
        elif not t.windowed:
            reasons["no window yet (<3 ends of its model)"] += 1
        elif t.outcome != "succeeded":
            reasons["failure outside the window"] += 1
        elif t.latency < 10:
            reasons["short (<10 s), windowed"] += 1
        else:
            reasons["other (windowed, >=10 s)"] += 1
    late = sum(reasons.values())
    if not late:
        return "none late"
    return f"{late} late: " + "; ".join(f"{n} {why}" for why, n in reasons.most_common())


def print_table(results: list[ArmResult]) -> None:
    head = (
        f"{'arm':<16}{'arrivals':>9}{'server':>22}{'req/task':>9}{'vs 0.5s':>8}{'429':>7}"
        f"{'p50':>8}{'p95':>8}{'on time':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        s = summary(r)
        base = baseline_rows(r)["fixed 0.5 s"][0]
        print(
            f"{r.arm.name:<16}{r.arm.rate:>7g}/s{r.arm.describe():>22}{s['req']:>9.1f}{base / s['req']:>7.1f}x"
            f"{s['share429']:>7.1%}{s['p50']:>7.2f}s{s['p95']:>7.2f}s{s['on_time']:>9.1%}"
        )
    ref = results[0]
    for name, (req, p50, p95, on_time) in baseline_rows(ref).items():
        base = baseline_rows(ref)["fixed 0.5 s"][0]
        print(
            f"{name:<16}{'any':>9}{'(ignores limits)':>22}{req:>9.1f}{base / req:>7.1f}x{'-':>7}"
            f"{p50:>7.2f}s{p95:>7.2f}s{on_time:>9.1%}"
        )


def targets(results: list[ArmResult]) -> list[tuple[str, bool | None, str]]:
    by = {r.arm.name: r for r in results}
    out: list[tuple[str, bool | None, str]] = []
    control = summary(by["control"]) if "control" in by else None
    for name in ("skew -120", "skew +120", "skew +600", "whole s, +30"):
        if name not in by:
            continue
        s = summary(by[name])
        if control is None:
            out.append((f"{name}: >= 92% on time at <= 1.3x control req/task", None, "no control arm run"))
            continue
        ratio = s["req"] / control["req"]
        ok = s["on_time"] >= 0.92 and ratio <= 1.3
        out.append(
            (
                f"{name}: >= 92% on time at <= 1.3x control req/task",
                ok,
                f"{s['on_time']:.1%} on time, {s['req']:.1f} req/task = {ratio:.2f}x control",
            )
        )
    if "limit 6/s" in by:
        s = summary(by["limit 6/s"])
        ok = s["on_time"] >= 0.90 and s["share429"] <= 0.05
        out.append(
            (
                "server limit 6 req/s at 0.5 task/s: >= 90% on time, <= 5% answered 429",
                ok,
                f"{s['on_time']:.1%} on time, {s['share429']:.1%} answered 429",
            )
        )
    if "arrivals 1/s" in by:
        s = summary(by["arrivals 1/s"])
        out.append(
            ("1 task/s under the default limit: >= 90% on time", s["on_time"] >= 0.90, f"{s['on_time']:.1%}")
        )
    if control is not None:
        base = baseline_rows(by["control"])["fixed 0.5 s"][0]
        fewer = base / control["req"]
        ok = fewer >= 4.0 and control["on_time"] >= 0.95
        out.append(
            (
                "no skew: >= 4x fewer requests than the 0.5 s poller at >= 95% on time",
                ok,
                f"{fewer:.1f}x fewer ({control['req']:.1f} vs {base:.1f} req/task), {control['on_time']:.1%} on time",
            )
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--speed", type=float, default=5.0, help="simulator speed = watcher time_scale")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20 tasks per arm at speed 10")
    parser.add_argument("--arms", nargs="+", help=f"arms to run (default all): {[a.name for a in ARMS]}")
    parser.add_argument("--verbose", action="store_true", help="list the late tasks of each arm")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.speed = 20, 10.0
    arms = [a for a in ARMS if args.arms is None or a.name in args.arms]
    if not arms:
        parser.error(f"no such arm; known: {[a.name for a in ARMS]}")
    gaps, models = workload(args.tasks, args.seed)
    kinds = Counter(CATALOGUE[m].type for m in models)
    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; "
        f"simulator speed {args.speed:g} = watcher time_scale; figures in simulated seconds"
    )
    print(
        f"workload: {args.tasks} tasks (seed {args.seed}): {kinds['video']} video, {kinds['image']} image, "
        f"{kinds['audio']} audio, {len(set(models))} models; Poisson arrivals; watcher defaults "
        "(10 req/s ceiling, bursts of 10, store=None)"
    )
    results = []
    for arm in arms:
        began = time.time()
        speed = arm.speed if arm.speed is not None and not args.quick else args.speed
        r = run_arm(arm, gaps, models, speed, args.seed)
        results.append(r)
        s = summary(r)
        print(
            f"  {arm.name:<15} {time.time() - began:5.0f} s real at speed {speed:g}, {r.seconds:6.0f} sim s; "
            f"{r.ended_in_watcher}/{len(r.tasks)} ended in the watcher; learned {r.offset}; "
            f"rate ceiling {r.ceiling:g}/s, effective min {r.rate_min:.1f}/s end {r.rate_end:.1f}/s; "
            f"first poll wait p50 {_pct([t.first_poll_wait for t in r.tasks], 0.5):.2f} s "
            f"p95 {_pct([t.first_poll_wait for t in r.tasks], 0.95):.2f} s; on time {s['on_time']:.1%}",
            flush=True,
        )
        print(f"  {'':<15} {cost_split(r)}", flush=True)
    same = all(
        max(abs(a - b) for a, b in zip(r.durations, results[0].durations, strict=True)) < 1e-4
        for r in results
    )
    print(f"\nsame task timelines in every arm (latency of each task to 0.1 ms): {'yes' if same else 'NO'}")
    print("'on time' = end seen within max(1 s, 5% of the task's latency); delays p50/p95 in simulated s;")
    print(
        "'vs 0.5s' = the 0.5 s poller's requests on the same tasks / this row's; 429 = share answered 429\n"
    )
    print_table(results)
    print("\nLate tasks (first matching reason):")
    for r in results:
        print(f"  {r.arm.name:<16}{late_breakdown(r)}")
        if args.verbose:
            for t in r.tasks:
                if not t.on_time:
                    print(
                        f"      #{t.index:<3}{t.model:<20}{t.outcome:<10}latency {t.latency:6.1f}s "
                        f"delay {t.delay:6.2f}s requests {t.requests:3} (429: {t.answered_429}) "
                        f"first poll after {t.first_poll_wait:5.2f}s{'' if t.windowed else ' no window'}"
                    )
    print("\nTargets (issue 11):")
    for name, ok, value in targets(results):
        mark = "PASS" if ok else ("n/a " if ok is None else "MISS")
        print(f"  {mark} {name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
