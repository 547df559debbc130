"""When to ask about a task next: the poll schedule, as pure functions of time.

No I/O and no clock of its own: every function takes the elapsed time, so the whole
schedule is testable with plain numbers. Durations are real seconds; for a simulator
that runs N times faster, ``PollPolicy().scaled(N)`` divides every duration by N.

The schedule for a task created ``e`` seconds ago:

- Nothing learned about its model yet: ask every ``fraction * e`` seconds (between the
  status's bounds). Since a task's latency is at least ``e``, an end is then seen within
  about ``fraction`` of the task's own latency. Waiting tasks (``pending``/``queued``)
  are asked half as often as running ones.
- Tasks of the same provider and model have finished: their latencies give a window
  ``[lo, hi]`` where this one will most likely end. Before the window, ask on a sparse
  geometric schedule (see below); inside it, ask every ``fraction * e``
  seconds, and never later than just after ``hi``; past it, fall back to the plain rule.
  Polls before the window (a sparse geometric schedule) are spent only when tasks of
  that model have been seen ending early (failures, mostly).
  For a model with steady latencies the window is narrow and one request covers it.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field, replace

from .models import TaskStatus

__all__ = ["LatencyModel", "PollPolicy"]

_WAITING = frozenset({TaskStatus.PENDING, TaskStatus.QUEUED})


@dataclass(frozen=True)
class PollPolicy:
    """Tuning of the poll schedule (seconds). The defaults suit the real API."""

    running_fraction: float = 0.04
    """While running (or unknown), ask every ``running_fraction * elapsed`` seconds."""
    waiting_fraction: float = 0.09
    """While ``pending``/``queued``, ask every ``waiting_fraction * elapsed`` seconds."""
    min_interval: float = 0.8
    """Shortest gap between two polls of one task."""
    waiting_min_interval: float = 1.0
    """Shortest gap while the task is waiting."""
    max_interval: float = 30.0
    """Longest gap between two polls of one task."""
    jitter: float = 0.1
    """Each gap is shortened by a random 0..jitter fraction (spreads bursts)."""
    min_samples: int = 3
    """Finished tasks of a model needed before its latencies shape the schedule."""
    early_growth: float = 2.0
    """Before the window, the gap is ``early_growth * elapsed`` (catches early failures)."""
    early_threshold: float = 0.02
    """Ask before the window only if more than this share of tasks ended before it."""
    window_margin: float = 0.15
    """Seconds after the window's end at which the last in-window poll is placed."""
    error_backoff: float = 1.0
    """First backoff after a failed request; doubles per consecutive failure."""
    max_error_backoff: float = 60.0
    """Longest backoff after failed requests."""
    not_found_retries: int = 3
    """404 answers tolerated (a task may not be visible right after creation)."""
    not_found_interval: float = 1.0
    """Gap between those 404 retries."""

    def scaled(self, factor: float) -> PollPolicy:
        """This policy for a clock ``factor`` times faster: every duration divided by it."""
        if factor <= 0:
            raise ValueError(f"time scale must be > 0, got {factor!r}")
        if factor == 1:
            return self
        return replace(self, **{name: getattr(self, name) / factor for name in _DURATIONS})

    def interval(self, status: TaskStatus | None, elapsed: float) -> float:
        """The plain gap for a task in ``status`` created ``elapsed`` seconds ago."""
        if status in _WAITING:
            gap = max(self.waiting_min_interval, self.waiting_fraction * elapsed)
        else:
            gap = max(self.min_interval, self.running_fraction * elapsed)
        return min(gap, self.max_interval)

    def next_delay(
        self,
        status: TaskStatus | None,
        elapsed: float,
        window: tuple[float, float] | None,
        rng: random.Random,
        early_share: float = 1.0,
        early_until: float | None = None,
    ) -> float:
        """Seconds until the next poll; ``window`` is the learned ``(lo, hi)`` latency.

        ``early_share`` is how often tasks of this kind ended before the window; below
        ``early_threshold`` nothing is asked before the window opens. Otherwise, until
        ``early_until`` (how late such early ends came) the plain schedule runs, so an
        early end is seen as promptly as any; after it, a sparse geometric one.
        """
        shrink = 1.0 - self.jitter * rng.random()
        if window is None:
            return self.interval(status, elapsed) * shrink
        lo, hi = window
        last = hi + self.window_margin
        if elapsed < lo:
            first = min(lo + 0.5 * self.interval(None, lo) * shrink, last)
            if early_share < self.early_threshold:
                return first - elapsed
            if early_until is not None and elapsed < early_until * 1.2:  # where early ends come
                return min(first - elapsed, self.interval(status, elapsed) * shrink)
            early = max(self.min_interval, self.early_growth * elapsed)  # sparse, geometric
            return min(first - elapsed, early * shrink)
        if elapsed < last:
            return max(0.05, min(self.interval(None, elapsed) * shrink, last - elapsed))
        return self.interval(status, elapsed) * shrink

    def error_delay(self, consecutive_errors: int, rng: random.Random) -> float:
        """Backoff after ``consecutive_errors`` failed requests in a row (with jitter)."""
        base = self.error_backoff * 2 ** max(0, consecutive_errors - 1)
        return float(min(self.max_error_backoff, base) * (0.5 + 0.5 * rng.random()))


_DURATIONS = (
    "min_interval",
    "waiting_min_interval",
    "max_interval",
    "window_margin",
    "error_backoff",
    "max_error_backoff",
    "not_found_interval",
)
"""The fields of :class:`PollPolicy` that are durations (scaled by :meth:`PollPolicy.scaled`)."""

_T98 = (
    (1, 15.9),
    (2, 4.85),
    (3, 3.48),
    (4, 3.0),
    (5, 2.76),
    (6, 2.61),
    (8, 2.45),
    (10, 2.36),
    (15, 2.25),
    (20, 2.2),
    (30, 2.15),
)


def _t98(df: int) -> float:
    """The 98th percentile of Student's t with ``df`` degrees of freedom (table, rounded)."""
    for limit, value in _T98:
        if df <= limit:
            return value
    return 2.06


@dataclass
class LatencyModel:
    """Latencies (``completed_at - created_at``, server seconds) of ended tasks, per provider/model.

    ``window(key)`` gives the ``(lo, hi)`` range a new task of that key most likely ends
    in: a log-normal fit of the succeeded ones, recent samples weighing most (half-life
    ``half_life`` samples), so that a provider that slows down or speeds up is followed
    within a few tasks; widened while few samples are known. ``predict(key)`` is its
    middle. Ends before the window (failures, mostly: moderation rejects in seconds) are
    a model of their own: ``early_share`` says how often they happen and ``early_until``
    how late they come.
    """

    min_samples: int = 3
    keep: int = 200
    half_life: float = 4.0
    """Samples after which an older latency weighs half as much."""
    _ends: dict[tuple[str, str], deque[tuple[float, bool]]] = field(default_factory=dict)

    def add(self, key: tuple[str, str], latency: float, succeeded: bool = True) -> None:
        """Record one ended task's latency in seconds."""
        if latency >= 0 and math.isfinite(latency):
            self._ends.setdefault(key, deque(maxlen=self.keep)).append((latency, succeeded))

    def count(self, key: tuple[str, str]) -> int:
        """How many succeeded latencies are known for ``key``."""
        return sum(ok for _, ok in self._ends.get(key, ()))

    def _recent(self, key: tuple[str, str], succeeded_only: bool) -> list[float]:
        """The samples that still weigh (the last few half-lives), oldest first."""
        ends = self._ends.get(key, ())
        values = [max(lat, 1e-3) for lat, ok in ends if ok or not succeeded_only]
        return values[-int(4 * self.half_life) :]

    def _fit(self, samples: list[float]) -> tuple[float, float, float]:
        """Weighted mean and deviation of the logs, and the effective sample count."""
        n = len(samples)
        weights = [0.5 ** ((n - 1 - i) / self.half_life) for i in range(n)]
        total = sum(weights)
        n_eff = total * total / sum(w * w for w in weights)
        logs = [math.log(s) for s in samples]
        mu = sum(w * x for w, x in zip(weights, logs, strict=True)) / total
        var = sum(w * (x - mu) ** 2 for w, x in zip(weights, logs, strict=True)) / total
        var *= n_eff / max(n_eff - 1.0, 1e-9)  # unbiased for the effective count
        return mu, max(0.004, math.sqrt(var)), n_eff

    def window(self, key: tuple[str, str]) -> tuple[float, float] | None:
        """The learned ``(lo, hi)`` latency window, or ``None`` with too few samples."""
        samples = self._recent(key, succeeded_only=True)
        if len(samples) < self.min_samples:
            return None
        mu, sd, n_eff = self._fit(samples)
        # a ~96% prediction interval for the next latency (Student t: few samples, wider)
        spread = _t98(max(1, round(n_eff) - 1)) * sd * math.sqrt(1.0 + 1.0 / n_eff)
        latest = samples[-int(2 * self.half_life) :]  # a regime change moves the bounds at once
        return min(min(latest), math.exp(mu - spread)), max(max(latest), math.exp(mu + spread))

    def predict(self, key: tuple[str, str]) -> float | None:
        """The most likely latency of the next task of ``key`` (``None`` with too few samples)."""
        samples = self._recent(key, succeeded_only=True)
        if len(samples) < self.min_samples:
            return None
        return math.exp(self._fit(samples)[0])

    def _early(self, key: tuple[str, str], lo: float) -> tuple[list[float], int]:
        """Recent failures and cancellations before ``lo``, and how many recent ends there were.

        Successes below ``lo`` are the success model's own tail, not early ends: counting
        them would poll every task of a steady model from its start.
        """
        ends = list(self._ends.get(key, ()))[-int(4 * self.half_life) :]
        return [lat for lat, ok in ends if not ok and lat < lo], len(ends)

    def early_share(self, key: tuple[str, str], lo: float) -> float:
        """Share of recent ended tasks of ``key`` that failed before ``lo`` seconds."""
        early, n = self._early(key, lo)
        return len(early) / n if n else 1.0

    def early_until(self, key: tuple[str, str], lo: float) -> float | None:
        """How late recent early ends (before ``lo``) came (``None`` if there were none)."""
        early, _ = self._early(key, lo)
        return max(early) if early else None
