"""List polling against per-task GETs and a fixed 0.5 s poller (issue 19's targets).

Each arm is a real TaskWatcher against its own fresh simulator over HTTP on 127.0.0.1, on
the same task timelines (same seed): "list" is the default (list pages where cheaper, one
GET per result), "per-task" is ``PollPolicy(list_polling=False)`` (the learned per-task
schedule of before), "fixed 0.5s" is computed exactly from the true timelines (a GET every
0.5 s from when the watcher was told, whatever the budget: it would need 600 requests/s).

The simulator runs ``--speed`` times faster and the watcher's clock is scaled the same way
(``time_scale``: schedule durations divided, the 10 requests/s budget multiplied), so every
figure is in simulated seconds: a delay is (the real time the watcher's ``on_done`` callback
ran - the true end) x speed. Requests are counted at the simulator: list pages and
GETs (``sim.calls``), result GETs included.

Scenarios:

- ``300``: 120 images of 2-8 s (seedream-4-5), 120 videos of 15-40 s (viduq3-turbo), 60
  failing after 3-20 s (kling-v3), created at once and watched from their creation answers;
- ``300 + 1000 others``: the same, with 1,000 tasks nobody watches created in the same
  instant, interleaved: 500 images of 2-8 s of the same model (no filter tells them apart)
  and 500 videos of 15-40 s of another (viduq3-pro);
- ``list missing``: the 300 with the simulator's list answering 404 (list polling on);
- ``10,000 watched``: tasks that run past the measurement (``--minutes`` simulated
  minutes): requests per task per minute (no result GETs happen) and how stale the
  watcher's view of a task is (seconds since it was last observed, sampled every second).

    python benchmarks/list_polling.py [--speed 4] [--seed 1] [--big 10000] [--minutes 3] [--only list]

``--only list`` runs the list arm of the first two scenarios alone. "end seen (journal)" is
``history()["detection_delay_s"]``: the first observation of the end on the server's clock
(local time plus the learned offset); "local p95" is the same observation on this machine's
clock, which is the simulator's: the difference is the offset's error early in a run (the
``Date`` header has whole seconds: up to half a second, x ``--speed`` here).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import threading
import time
from dataclasses import dataclass, field

from mh_notebook.models import Task
from mh_notebook.polling.policy import PollPolicy
from mh_notebook.polling.state import Observation
from mh_notebook.sim import Simulator
from mh_notebook.watcher import TaskWatcher

IMAGE, VIDEO, FAILING, OTHER_VIDEO = "seedream-4-5", "viduq3-turbo", "kling-v3", "viduq3-pro"


@dataclass
class Spec:
    model: str
    outcome: str
    latency: float
    watched: bool = True


@dataclass
class Result:
    arm: str
    tasks: int
    requests: dict[str, int]
    delays: list[float] = field(default_factory=list)
    """Simulated seconds from each true end to the first observation of it (journalled: on
    the server's clock through the learned offset, whose error early in a run adds to it)."""
    local: list[float] = field(default_factory=list)
    """The same on this machine's clock (the simulator's own: no offset to learn)."""
    results: list[float] = field(default_factory=list)
    """Simulated seconds from each true end to ``on_done`` (a succeeded task's result URLs in hand)."""
    right: int = 0
    wall: float = 0.0
    mode: str = ""

    @property
    def per_task(self) -> float:
        return (self.requests.get("list", 0) + self.requests.get("get", 0)) / self.tasks


def workload(rng: random.Random, others: int = 0) -> list[Spec]:
    specs = [Spec(IMAGE, "succeeded", rng.uniform(2, 8)) for _ in range(120)]
    specs += [Spec(VIDEO, "succeeded", rng.uniform(15, 40)) for _ in range(120)]
    specs += [Spec(FAILING, "failed", rng.uniform(3, 20)) for _ in range(60)]
    half = others // 2
    specs += [Spec(IMAGE, "succeeded", rng.uniform(2, 8), False) for _ in range(half)]
    specs += [Spec(OTHER_VIDEO, "succeeded", rng.uniform(15, 40), False) for _ in range(others - half)]
    rng.shuffle(specs)  # interleaved in creation order
    return specs


def create(sim: Simulator, spec: Spec) -> Task:
    """Create a task as ``POST`` would and return its creation answer (pending, created_at)."""
    task_id = sim.submit(model=spec.model, outcome=spec.outcome, latency=spec.latency)
    sim_task = next(t for t in reversed(sim.ordered()[0]) if t.id == task_id)
    return Task.from_api(sim.data(sim_task, time.time()))


def run_arm(arm: str, specs: list[Spec], speed: float, seed: int, list_mode: str = "ok") -> Result:
    policy = PollPolicy(list_polling=arm != "per-task")
    with Simulator(seed=seed, speed=speed, list_mode=list_mode) as sim:
        made = [(create(sim, s), s) for s in specs]
        mine = [(t, s) for t, s in made if s.watched]
        ends: dict[str, float] = {}
        lock = threading.Lock()
        sim.reset_counts()
        start = time.time()
        with TaskWatcher(
            sim.api_key, sim.url, store=None, display="none", time_scale=speed, policy=policy
        ) as w:

            @w.on_done
            def _seen(task: Task) -> None:
                with lock:
                    ends.setdefault(task.id, time.time())

            seen_local = _spy_ends(w)
            w.watch([t for t, _ in mine])
            final = w.wait(timeout=600)
            mode = w.engine.poller.polling_mode
            seen = w.history().set_index("task_id")["detection_delay_s"]
        wall = time.time() - start
        result = Result(arm, len(mine), dict(sim.calls), wall=wall, mode=mode)
        for task, spec in mine:
            end = sim.timeline(task.id)["end"]
            result.results.append((ends[task.id] - end) * speed)
            result.delays.append(float(seen[task.id]) * speed)
            result.local.append((seen_local[task.id] - end) * speed)
            result.right += final[task.id].status == spec.outcome
    return result


def _spy_ends(w: TaskWatcher) -> dict[str, float]:
    """Local time each task's end was first observed (``Observation.observed_at``, this
    machine's clock; a page's end: when the page came), by wrapping the engine's observer."""
    poller, found = w.engine.poller, dict[str, float]()
    inner = poller._on_observation  # a benchmark's spy: the engine has no public hook for it

    def spy(obs: Observation) -> None:
        if obs.ended:
            found.setdefault(obs.task_id, obs.observed_at)
        inner(obs)

    poller._on_observation = spy
    return found


def fixed_arm(specs: list[Spec], interval: float = 0.5) -> Result:
    """A GET every ``interval`` from creation (simulated seconds), computed exactly."""
    mine = [s for s in specs if s.watched]
    result = Result(f"fixed {interval:g}s", len(mine), {"get": 0}, right=len(mine))
    for spec in mine:
        k = max(0, math.ceil(spec.latency / interval - 1e-9))
        result.requests["get"] += k + 1
        result.delays.append(k * interval - spec.latency)
        result.local.append(k * interval - spec.latency)
        result.results.append(k * interval - spec.latency)
    return result


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def table(title: str, rows: list[Result], targets: str) -> None:
    print(f"\n{title}  (targets: {targets})")
    print(f"{'':<31}{'end seen (journal)':^24}{'local':^8}{'result in hand':^16}")
    head = (
        f"{'arm':<12}{'pages':>6}{'GETs':>6}{'req/task':>9}{'p50':>8}{'p95':>8}{'max':>8}{'p95':>8}"
        f"{'p50':>8}{'p95':>8}"
    )
    print(f"{head}{'right':>9}{'wall':>6}")
    for r in rows:
        print(
            f"{r.arm:<12}{r.requests.get('list', 0):>6}{r.requests.get('get', 0):>6}{r.per_task:>9.2f}"
            f"{statistics.median(r.delays):>7.2f}s{p(r.delays, 0.95):>7.2f}s{max(r.delays):>7.2f}s"
            f"{p(r.local, 0.95):>7.2f}s"
            f"{statistics.median(r.results):>7.2f}s{p(r.results, 0.95):>7.2f}s"
            f"{r.right:>5}/{r.tasks:<3}{r.wall:>5.0f}s"
        )
    for r in rows:
        if r.mode:
            print(f"  {r.arm}: panel says {r.mode!r}")


def big_arm(arm: str, n: int, minutes: float, speed: float, seed: int) -> tuple[float, float, float, str]:
    """(requests per task per minute, p50 and p95 staleness in simulated seconds, mode)."""
    policy = PollPolicy(list_polling=arm != "per-task")
    with Simulator(seed=seed, speed=speed) as sim:
        tasks = [create(sim, Spec(VIDEO, "succeeded", 1e6)) for _ in range(n)]
        sim.reset_counts()
        stale: list[float] = []
        with TaskWatcher(
            sim.api_key, sim.url, store=None, display="none", time_scale=speed, policy=policy
        ) as w:
            w.watch(tasks)
            poller = w.engine.poller
            end = time.time() + minutes * 60 / speed
            warm = time.time() + 30 / speed  # the first answers of every task: not a steady state
            while time.time() < end:
                time.sleep(1.0 / speed)
                if time.time() < warm:
                    continue
                now = time.time()
                stale += [(now - (s.fetched_at or now)) * speed for s in poller.states()]
            mode = poller.polling_mode
        calls = sim.calls["list"] + sim.calls["get"]
    return calls / n / minutes, statistics.median(stale), p(stale, 0.95), mode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--big", type=int, default=10_000, help="watched tasks of the scale run (0: skip)")
    parser.add_argument("--minutes", type=float, default=3.0, help="simulated minutes of the scale run")
    parser.add_argument(
        "--only", default="", help="list: the list arm alone of the 300 and 1,000-others scenarios (faster)"
    )
    args = parser.parse_args()
    if args.only == "list":
        for others, title in (
            (0, "300 watched tasks"),
            (1000, "300 watched + 1,000 others in the same window"),
        ):
            specs = workload(random.Random(args.seed), others=others)
            table(title, [run_arm("list", specs, args.speed, args.seed)], "p95 <= 1.0 s / 1.5 s")
        return

    specs = workload(random.Random(args.seed))
    rows = [run_arm("list", specs, args.speed, args.seed), run_arm("per-task", specs, args.speed, args.seed)]
    table(
        "300 watched tasks",
        [*rows, fixed_arm(specs)],
        "list <= 2.5 req/task, p95 <= 1.0 s, every status right",
    )
    per_task = rows[1].per_task

    crowded = workload(random.Random(args.seed), others=1000)
    rows = [
        run_arm("list", crowded, args.speed, args.seed),
        run_arm("per-task", crowded, args.speed, args.seed),
    ]
    table(
        "300 watched + 1,000 others in the same window",
        [*rows, fixed_arm(crowded)],
        "list <= 4 req/task, p95 <= 1.5 s",
    )

    missing = run_arm("list", specs, args.speed, args.seed, list_mode="missing")
    missing.arm = "list (404)"
    table(
        "list endpoint missing (404)",
        [missing],
        f"every status right, cost within 10% of per-task's {per_task:.2f}",
    )
    print(f"  cost vs per-task: {missing.per_task / per_task - 1:+.1%}")

    if args.big:
        print(
            f"\n{args.big:,} watched tasks running, {args.minutes:g} simulated minutes after a 30 s warm-up"
            " (target: list <= 1 request per task per minute, result GETs excluded)"
        )
        print(f"{'arm':<12}{'req/task/min':>14}{'stale p50':>11}{'p95':>9}")
        for arm in ("list", "per-task"):
            per_min, p50, p95, mode = big_arm(arm, args.big, args.minutes, args.speed, args.seed)
            print(f"{arm:<12}{per_min:>14.3f}{p50:>10.1f}s{p95:>8.1f}s   panel: {mode!r}")


if __name__ == "__main__":
    main()
