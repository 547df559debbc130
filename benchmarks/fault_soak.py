"""Fault soak: hundreds of tasks through a heavy fault mix, with a stop and a resume.

The simulator answers with 429 + Retry-After, 5xx (JSON and HTML), HTML pages with 200,
truncated JSON, dropped connections and slow answers; result URLs expire quickly. A first
watcher is stopped when about 40% of the tasks have ended; a second one resumes from the
journal and finishes. Checked: every task reaches its real final status, the history
loses nothing, the rate limit holds at the simulator, no exception escapes the poller
thread, and stale result URLs are refreshed.

    python benchmarks/fault_soak.py [--tasks 400] [--speed 20]

``tests/test_soak.py`` runs a quick version of the same routine.

``--budget`` runs the request-budget arms instead (issue 17: a budget that tells a server
limit from random 429s), each ``--repeat`` times (default 2), with a fresh simulator and a
fresh watcher (defaults: 10 req/s ceiling, ``store=None``) per run:

- ``control``: 300 tasks of 1-8 s (images and audio, catalogue outcomes), all watched at
  once, no faults;
- ``faults, no 429``: the same with 10% 5xx (500/502/503/504, half HTML), 5% garbage bodies
  (2.5% HTML pages with 200, 2.5% truncated JSON) and 5% dropped connections;
- ``faults + 429``: the same plus 10% random 429s (``Retry-After: 1``), not rate-bound;
- ``limit 6/s``: 60 catalogue tasks (seed 7, not the seed of ``polling_conditions.py``)
  arriving at 0.5 task/s against a server that allows 6 requests per simulated second
  (burst 6), at speed 2;
- ``limit 6/s, told``: the same with the watcher's ``rate_limit=5.9``: what a budget that
  knew the limit from the start would give (the bound of what learning it can reach);
- ``no limit 0.5/s``: the same workload against a server without a limit (the watcher's
  own 10 req/s ceiling only): what the schedule gives when nothing rations its polls
  (per task: 98.3% on time at 21.5 requests per task, against 14.7-15.4 under the limit).

Printed: the time until every task has ended (simulated seconds), wrong final statuses,
requests per task (GETs and list pages), the share answered 429, on time (the end in the
watcher's hands, its ``on_done``, within max(1 s, 5% of the latency) of the simulator's true
end) and the watcher's belief about its 429s; then the
targets: the 429 arm in at most 1.5x the time of the no-429 arm, the limit arm >= 90% on
time with <= 5% answered 429, and the control's requests per task within 10% of
``--control-baseline`` (the figure of the code before the change).

    python benchmarks/fault_soak.py --budget [--arms control ...] [--repeat 2]
        [--control-baseline 3.6] [--per-task] [--late]

``--per-task`` turns list polling off (issue 19): with it on, these workloads need a page a
second or so, far under a 6/s limit, so only ``--per-task`` still makes the limit arm learn
a limit from its 429s. ``--late`` lists each run's late tasks (type, model, the how-manieth
of its model, when it arrived, its latency, how late it was seen, the GETs it cost).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mh_notebook.history import read_history
from mh_notebook.polling.policy import PollPolicy
from mh_notebook.sim import CATALOGUE, Faults, Simulator
from mh_notebook.watcher import TaskWatcher

HEAVY = Faults(
    rate_429=0.05, retry_after=0.05, rate_5xx=0.08, rate_html=0.04, rate_truncated=0.04,
    rate_drop=0.04, rate_slow=0.03, slow_seconds=1.5,
)  # fmt: skip


@dataclass
class SoakResult:
    tasks: int
    requests: int
    faulted: int
    wrong_status: list[str]
    missing_from_history: list[str]
    peak_per_second: int
    limit_per_second: float
    escaped_errors: list[str]
    refreshed_urls: int
    seconds: float
    resumed: int
    by_code: dict[int, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.wrong_status or self.missing_from_history or self.escaped_errors) and (
            self.peak_per_second <= self.limit_per_second
        )


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


def _peak(times: list[float], window: float) -> int:
    times.sort()
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def run_soak(n_tasks: int = 400, speed: float = 20.0, rate_limit: float = 20.0, seed: int = 11) -> SoakResult:
    """Run the soak. Latencies, the rate limit and the URL lifetime (5 s) are in simulated
    seconds: the simulator runs ``speed`` times faster and the watchers' clocks match."""
    rng = random.Random(seed)
    collector = _Collector()
    logging.getLogger("mh_notebook").addHandler(collector)
    escaped: list[str] = []
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: escaped.append(repr(args.exc_value))
    journal = Path(tempfile.mkdtemp()) / "soak.sqlite"
    start = time.time()
    try:
        with Simulator(seed=seed, speed=speed, faults=HEAVY, url_lifetime=5.0) as sim:
            ids = [sim.submit(model=rng.choice(list(CATALOGUE))) for _ in range(n_tasks)]
            opts = {
                "store": journal,
                "display": "none",
                "time_scale": speed,
                "rate_limit": rate_limit,
            }
            first = TaskWatcher(sim.api_key, sim.url, **opts)  # type: ignore[arg-type]
            first.watch(ids)
            while len(ids) - len(first.pending) < 0.4 * n_tasks:
                time.sleep(0.05)
            first.stop()
            second = TaskWatcher(sim.api_key, sim.url, **opts)  # type: ignore[arg-type]
            resumed = second.resume()
            final = second.wait(timeout=600)
            time.sleep(5.1)  # every result URL has expired by now
            refreshed = 0
            for task_id in [i for i in ids if sim.timeline(i)["outcome"] == "succeeded"][:10]:
                old = (second.tasks.get(task_id) or first.tasks[task_id]).result[0].url
                if second.fresh_task(task_id).result[0].url != old:
                    refreshed += 1
            second.stop()
            truth = {i: sim.timeline(i)["outcome"] for i in ids}
            seen = {**first.tasks, **final}
            log = list(sim.request_log)
        history = read_history(journal).set_index("task_id")
    finally:
        threading.excepthook = previous_hook
        logging.getLogger("mh_notebook").removeHandler(collector)
    by_code: dict[int, int] = {}
    for _, _, code in log:
        by_code[code] = by_code.get(code, 0) + 1
    return SoakResult(
        tasks=n_tasks,
        requests=len(log),
        faulted=sum(n for code, n in by_code.items() if code != 200),
        wrong_status=[i for i in ids if str(seen[i].status) != truth[i]],
        missing_from_history=[
            i for i in ids if i not in history.index or history.loc[i, "status"] != truth[i]
        ],
        peak_per_second=_peak([t for t, _, _ in log], 1.0 / speed),  # per simulated second
        limit_per_second=rate_limit * 2 + 2,  # sustained rate + one burst (+2: timer slack)
        escaped_errors=escaped + collector.records,
        refreshed_urls=refreshed,
        seconds=time.time() - start,
        resumed=len(resumed),
        by_code=dict(sorted(by_code.items())),
    )


# ------------------------------------------------------------------ budget arms (issue 17)
NOISE = {"rate_5xx": 0.10, "rate_html": 0.025, "rate_truncated": 0.025, "rate_drop": 0.05}
"""The faults of both noise arms: 10% 5xx, 5% garbage bodies, 5% dropped connections."""
SHORT_MODELS = [m for m, spec in CATALOGUE.items() if spec.type in ("image", "audio")]


@dataclass(frozen=True)
class BudgetArm:
    """One workload and one server of the budget benchmark."""

    name: str
    faults: Faults
    tasks: int = 300
    arrivals: float | None = None
    """Tasks per simulated second (``None``: all watched at once)."""
    server_limit: float | None = None
    """Requests per simulated second the server allows (``None``: no limit)."""
    speed: float = 1.0
    seed: int = 17
    ceiling: float = 10.0
    """The watcher's ``rate_limit`` (requests per simulated second)."""


BUDGET_ARMS = [
    BudgetArm("control", Faults()),
    BudgetArm("faults, no 429", Faults(**NOISE)),
    BudgetArm("faults + 429", Faults(rate_429=0.10, retry_after=1.0, **NOISE)),
    BudgetArm("limit 6/s", Faults(), tasks=60, arrivals=0.5, server_limit=6.0, speed=2.0, seed=7),
    BudgetArm(
        "limit 6/s, told", Faults(), tasks=60, arrivals=0.5, server_limit=6.0, speed=2.0, seed=7, ceiling=5.9
    ),
    BudgetArm("no limit 0.5/s", Faults(), tasks=60, arrivals=0.5, speed=2.0, seed=7),
]


@dataclass
class BudgetResult:
    arm: BudgetArm
    seconds: float
    """Simulated seconds from the first watch until every task was seen to end (or the cap)."""
    ended: int
    wrong_status: int
    requests: int
    answered_429: int
    on_time: float
    belief: str
    late: list[str] = field(default_factory=list)
    """One line per task seen late (or never): its type, model, order, latency, delay, GETs."""


def _budget_workload(arm: BudgetArm) -> tuple[list[float], list[str], list[float | None]]:
    """Arrival times (simulated seconds), models and forced latencies of the arm's tasks."""
    rng = random.Random(arm.seed)
    if arm.arrivals is None:
        models = [rng.choice(SHORT_MODELS) for _ in range(arm.tasks)]
        return [0.0] * arm.tasks, models, [rng.uniform(1.0, 8.0) for _ in models]
    at, times, models = 0.0, [], []
    for _ in range(arm.tasks):
        at += rng.expovariate(arm.arrivals)
        kind = rng.choices(["video", "image", "audio"], weights=[0.6, 0.28, 0.12])[0]
        times.append(at)
        models.append(rng.choice([m for m, spec in CATALOGUE.items() if spec.type == kind]))
    return times, models, [None] * arm.tasks


def run_budget_arm(arm: BudgetArm, cap: float = 300.0, *, per_task: bool = False) -> BudgetResult:
    """Run one arm; ``cap`` real seconds at most after the last arrival. ``per_task``: list
    polling off (each task polled by its own GETs, as before issue 19)."""
    speed = arm.speed
    sim = Simulator(
        seed=arm.seed,
        speed=speed,
        faults=arm.faults,
        rate_limit=None if arm.server_limit is None else arm.server_limit * speed,
        rate_burst=arm.server_limit,
    )
    with sim:
        times, models, latencies = _budget_workload(arm)
        policy = PollPolicy(list_polling=not per_task)
        watcher = TaskWatcher(
            sim.api_key,
            sim.url,
            store=None,
            display="none",
            time_scale=speed,
            rate_limit=arm.ceiling,
            policy=policy,
        )
        ended_at: dict[str, float] = {}
        watcher.on_done(lambda task: ended_at.setdefault(task.id, time.time()))
        ids: list[str] = []
        start = time.time()
        for at, model, latency in zip(times, models, latencies, strict=True):
            pause = start + at / speed - time.time()
            if pause > 0:
                time.sleep(pause)
            ids.append(sim.submit(model=model, latency=latency))
            if arm.arrivals is not None:
                watcher.watch(ids[-1])
        if arm.arrivals is None:
            watcher.watch(ids)
        try:
            final = watcher.wait(timeout=cap)
        except TimeoutError:
            final = watcher.tasks
        seconds = (time.time() - start) * speed
        snapshot = watcher.snapshot()
        belief = str(getattr(snapshot, "budget_belief", None) or "-")
        watcher.stop()
        truth = {i: sim.timeline(i) for i in ids}
        log = [entry for entry in sim.request_log if entry[1] in truth]
        requests = sim.calls["get"] + sim.calls["list"]  # every request of the watch: GETs and pages
        limited = sum(code == 429 for _, _, code in log) + sim.calls["list limited"]
    ended = [i for i in ids if i in final and final[i].is_terminal]
    on_time, late, gets = 0, [], dict.fromkeys(ids, 0)
    for _, task_id, _ in log:
        gets[task_id] += 1
    seen: dict[str, int] = {}
    for i in ids:  # the end in the watcher's hands (on_done) within max(1 s, 5%) of the true end
        latency = (truth[i]["end"] - truth[i]["created"]) * speed
        delay = (ended_at.get(i, math.inf) - truth[i]["end"]) * speed
        on_time += delay <= max(1.0, 0.05 * latency)
        nth = seen[truth[i]["model"]] = seen.get(truth[i]["model"], 0) + 1
        if delay > max(1.0, 0.05 * latency):
            late.append(
                f"{truth[i]['type']:<6}{truth[i]['model']:<20}#{nth:<3}{truth[i]['outcome']:<10}"
                f"at {(truth[i]['created'] - start) * speed:6.1f} s, latency {latency:6.1f} s, "
                f"seen {delay:5.1f} s late (allowed {max(1.0, 0.05 * latency):.1f}), {gets[i]} GETs"
            )
    return BudgetResult(
        arm=arm,
        seconds=seconds,
        ended=len(ended),
        wrong_status=sum(str(final[i].status) != truth[i]["outcome"] for i in ended),
        requests=requests,
        answered_429=limited,
        on_time=on_time / len(ids),
        belief=belief,
        late=late,
    )


def budget_report(results: list[BudgetResult], control_baseline: float | None, *, late: bool = False) -> None:
    """Print one row per run (with ``late``, its late tasks) and the targets."""
    head = f"{'arm':<16}{'tasks':>6}{'ended':>6}{'wrong':>6}{'sim s':>8}{'req/task':>9}{'429':>7}{'on time':>9}  belief"
    print(head)
    print("-" * (len(head) + 30))
    for r in results:
        print(
            f"{r.arm.name:<16}{r.arm.tasks:>6}{r.ended:>6}{r.wrong_status:>6}{r.seconds:>8.1f}"
            f"{r.requests / r.arm.tasks:>9.2f}{r.answered_429 / max(1, r.requests):>7.1%}{r.on_time:>9.1%}  {r.belief}"
        )
        for line in r.late if late else []:
            print(f"    late: {line}")
    by: dict[str, list[BudgetResult]] = {}
    for r in results:
        by.setdefault(r.arm.name, []).append(r)
    print("\nTargets (issue 17), run by run:")
    for a, b in zip(by.get("faults + 429", []), by.get("faults, no 429", []), strict=False):
        ok = a.ended == a.arm.tasks and a.wrong_status == 0 and a.seconds <= 1.5 * b.seconds
        print(
            f"  {'PASS' if ok else 'MISS'} random 429s: all end with their true status in <= 1.5x the "
            f"no-429 time: {a.ended}/{a.arm.tasks} ended, {a.wrong_status} wrong, "
            f"{a.seconds:.1f} s vs {b.seconds:.1f} s = {a.seconds / b.seconds:.2f}x"
        )
    for r in by.get("limit 6/s", []):
        share = r.answered_429 / max(1, r.requests)
        ok = r.on_time >= 0.90 and share <= 0.05
        print(
            f"  {'PASS' if ok else 'MISS'} server limit 6/s at 0.5 task/s: >= 90% on time, <= 5% answered 429: "
            f"{r.on_time:.1%} on time, {share:.1%} answered 429"
        )
    for r in by.get("limit 6/s, told", []):
        print(
            f"  ref. the same with the watcher told the limit (rate_limit=5.9, no 429 to learn from): "
            f"{r.on_time:.1%} on time, {r.answered_429 / max(1, r.requests):.1%} answered 429"
        )
    for r in by.get("no limit 0.5/s", []):
        print(
            f"  ref. the same without a server limit (what the schedule gives unrationed): "
            f"{r.on_time:.1%} on time, {r.requests / r.arm.tasks:.2f} requests per task"
        )
    for r in by.get("control", []):
        per_task = r.requests / r.arm.tasks
        if control_baseline is None:
            print(f"  n/a  control requests per task: {per_task:.2f} (no --control-baseline given)")
            continue
        ratio = per_task / control_baseline
        mark = "PASS" if abs(ratio - 1.0) <= 0.10 else "MISS"
        print(
            f"  {mark} control requests per task within 10% of the code before: "
            f"{per_task:.2f} vs {control_baseline:.2f} = {ratio:.2f}x"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--speed", type=float, default=20.0)
    parser.add_argument(
        "--rate-limit", type=float, default=20.0, help="watcher requests per simulated second"
    )
    parser.add_argument("--budget", action="store_true", help="run the budget arms (issue 17) instead")
    parser.add_argument("--arms", nargs="+", help=f"budget arms: {[a.name for a in BUDGET_ARMS]}")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each budget arm")
    parser.add_argument(
        "--per-task", action="store_true", help="budget arms with list polling off (GETs only)"
    )
    parser.add_argument("--late", action="store_true", help="budget arms: list the late tasks")
    parser.add_argument("--control-baseline", type=float, help="control req/task of the code before")
    args = parser.parse_args()
    if args.budget:
        return budget_main(args)
    r = run_soak(args.tasks, args.speed, args.rate_limit)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"{r.tasks} tasks, simulator speed {args.speed:g}, heavy faults {HEAVY}")
    print(
        f"ran {r.seconds:.1f} s real; {r.requests} status requests, {r.faulted} faulted ({r.faulted / r.requests:.0%}); by HTTP code (0 = dropped): {r.by_code}"
    )
    print(f"stopped at ~40% and resumed {r.resumed} unfinished tasks from the journal")
    print(
        f"tasks with a wrong final status: {len(r.wrong_status)}; missing or wrong in the history: {len(r.missing_from_history)}"
    )
    print(
        f"peak requests in any simulated second at the simulator: {r.peak_per_second} (ceiling {args.rate_limit:g}/s; checked against {r.limit_per_second:g})"
    )
    print(f"exceptions escaping the poller (thread hooks, error logs): {len(r.escaped_errors)}")
    print(f"expired result URLs refreshed on demand: {r.refreshed_urls}/10")
    print("RESULT:", "PASS" if r.ok and r.refreshed_urls == 10 else "FAIL")
    return 0 if r.ok else 1


def budget_main(args: argparse.Namespace) -> int:
    """The budget arms, each ``args.repeat`` times, in turn (runs of one arm not back to back)."""
    arms = [a for a in BUDGET_ARMS if args.arms is None or a.name in args.arms]
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; figures in simulated seconds")
    results = []
    for round_ in range(args.repeat):
        for arm in arms:
            began = time.time()
            r = run_budget_arm(arm, per_task=args.per_task)
            results.append(r)
            print(
                f"  run {round_ + 1} {arm.name:<15} {time.time() - began:5.0f} s real at speed {arm.speed:g}: "
                f"{r.ended}/{arm.tasks} ended in {r.seconds:.1f} sim s",
                flush=True,
            )
    print()
    budget_report(results, args.control_baseline, late=args.late)
    return 0


if __name__ == "__main__":
    sys.exit(main())
