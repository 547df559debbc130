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

import functools
import math
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import ParamSpec, TypeVar, cast

from ..records import TaskStatus

__all__ = ["LatencyModel", "PollPolicy"]

_WAITING = frozenset({TaskStatus.PENDING, TaskStatus.QUEUED})


@dataclass(frozen=True)
class PollPolicy:
    """Tuning of the poll schedule (seconds). The defaults suit the real API."""

    running_fraction: float = 0.05
    """While running (or unknown), ask every ``running_fraction * elapsed`` seconds: an end
    is then seen within 5% of the task's latency (its age is at most its latency); the
    jitter keeps gaps a little shorter, room for the request's own travel."""
    waiting_fraction: float = 0.09
    """While ``pending``/``queued``, ask every ``waiting_fraction * elapsed`` seconds."""
    min_interval: float = 0.9
    """Shortest gap between two polls of one task (an end within about a second)."""
    waiting_min_interval: float = 2.0
    """Shortest gap while the task is waiting (``pending``/``queued`` tasks rarely end)."""
    max_interval: float = 30.0
    """Longest gap between two polls of one task."""
    jitter: float = 0.05
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
    list_polling: bool = True
    """Let list pages observe this task when they cost less than its GETs (False: GETs only)."""
    list_retry: float = 30.0
    """After the list failed (404, 403, garbage), poll per task this long before trying it
    again (doubling per failure in a row)."""

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

    def remaining_polls(self, elapsed: float, window: tuple[float, float] | None) -> float:
        """About how many more polls a task ``elapsed`` seconds old needs until its end is
        most likely seen (through ``window``'s end; without one, until three times its age:
        with nothing known, a poll of a task of age ``e`` finds its end about as often as
        one inside a window does): what keeping its promise still costs.
        Budget-aware scheduling serves the cheapest first."""
        if window is None:
            return self._polls_between(elapsed, max(3.0 * elapsed, elapsed + 3.0 * self.min_interval))
        lo, hi = window
        return 1.0 + self._polls_between(max(elapsed, lo), max(hi, elapsed))

    def _polls_between(self, start: float, end: float) -> float:
        """Polls of the running schedule from age ``start`` to ``end`` (jitter aside)."""
        knee = self.min_interval / self.running_fraction  # where the gap stops being the floor
        floor = max(0.0, min(end, knee) - start) / self.min_interval
        growth = max(0.0, math.log(max(end, knee) / max(start, knee)))
        return floor + growth / math.log1p(self.running_fraction)

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
    "list_retry",
)
"""The fields of :class:`PollPolicy` that are durations (scaled by :meth:`PollPolicy.scaled`)."""

_T96 = (
    (1, 7.92),
    (2, 3.32),
    (3, 2.61),
    (4, 2.33),
    (5, 2.19),
    (6, 2.1),
    (8, 2.0),
    (10, 1.95),
    (15, 1.88),
    (20, 1.84),
    (30, 1.81),
)


def _t96(df: int) -> float:
    """The 96th percentile of Student's t with ``df`` degrees of freedom (table, rounded):
    where a window ends, and how much wider than a normal one a window learned from few
    samples is."""
    for limit, value in _T96:
        if df <= limit:
            return value
    return 1.75


_Z96 = 1.75
"""The 96th percentile of the standard normal."""
_POLLS_PER_END = 125.0
"""What an on-time end is worth in polls when placing a window's start: a start one poll
earlier must catch at least 1/125 of the model's ends (the 2nd percentile at log-sd 0.3)."""


def _lower_z(scale: float) -> float:
    """How many standard deviations (of log latency) below the centre a window starts.

    Moving the start down by ``dz`` costs every task about ``scale * dz / log(1.05)``
    polls (in-window gaps keep the 5% promise) and catches ``phi(z) * dz`` more ends on
    time; the start is where the two are
    worth the same (:data:`_POLLS_PER_END`): 2.05 at a log-sd of 0.3, 2.5 for a narrow
    window (0.1), 1.8 for a wide one (0.5), never less than 1.64 (the 5th percentile).
    """
    ratio = math.log1p(0.05) * _POLLS_PER_END / (max(scale, 1e-3) * math.sqrt(2.0 * math.pi))
    return max(1.64, math.sqrt(2.0 * math.log(max(ratio, 1.0))))


def _width(fit: tuple[float, float, int]) -> float:
    """How wide a prediction is (its scale, widened for few degrees of freedom)."""
    return _t96(fit[2]) * fit[1]


@dataclass(frozen=True)
class _Pool:
    """Log-latency scatter within the models of one kind, and between their means."""

    sd: float
    df: int
    mean: float
    between: float | None

    @classmethod
    def of(cls, groups: list[list[float]]) -> _Pool | None:
        """From each model's recent log-latencies; ``None`` with too few degrees of freedom."""
        df = sum(len(g) - 1 for g in groups)
        if df < 3:
            return None
        means = [sum(g) / len(g) for g in groups]
        within = sum((x - m) ** 2 for g, m in zip(groups, means, strict=True) for x in g) / df
        centre = sum(means) / len(means)
        between = None
        if len(groups) >= 2:
            spread = sum((m - centre) ** 2 for m in means) / (len(means) - 1)
            noise = sum(within / len(g) for g in groups) / len(groups)
            between = max(0.01, spread - noise)
        return cls(max(0.004, math.sqrt(within)), df, centre, between)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _locked(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run a :class:`LatencyModel` method under the model's lock: the engine thread adds
    ends while the user's thread predicts (``snapshot()``), and a read must see no
    half-added end nor cache a kind's scatter computed from one."""

    @functools.wraps(method)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with cast(LatencyModel, args[0])._lock:
            return method(*args, **kwargs)

    return run


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

    Keys added with a ``kind`` (the task type) borrow strength from the other models of
    that kind (partial pooling): how much latencies of one model scatter is estimated
    from all of them together, and a model's first latencies are pulled towards the
    kind's typical model. So a window exists after one end instead of three, and is not
    made wide by a Student t with one or two degrees of freedom while a model is new.
    A model whose own scatter is clearly larger than its kind's keeps its own window.
    """

    min_samples: int = 3
    keep: int = 200
    half_life: float = 4.0
    """Samples after which an older latency weighs half as much."""
    _ends: dict[tuple[str, str], deque[tuple[float, bool]]] = field(default_factory=dict)
    _kinds: dict[tuple[str, str], str] = field(default_factory=dict)
    _pools: dict[str, _Pool | None] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @_locked
    def add(
        self, key: tuple[str, str], latency: float, succeeded: bool = True, kind: str | None = None
    ) -> None:
        """Record one ended task's latency in seconds; ``kind`` (its type) enables pooling."""
        if latency >= 0 and math.isfinite(latency):
            self._ends.setdefault(key, deque(maxlen=self.keep)).append((latency, succeeded))
            if kind is not None:
                self._kinds[key] = kind
                self._pools.pop(kind, None)

    @_locked
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

    @_locked
    def window(self, key: tuple[str, str]) -> tuple[float, float] | None:
        """The learned ``(lo, hi)`` latency window, or ``None`` with too few samples.

        ``hi`` is the 96th percentile of the prediction (ends after it are still seen by
        the plain schedule). ``lo`` is where polls begin: each poll before the window
        costs every task of the model, and buys only the few that end that early, so
        ``lo`` sits further out for a narrow window (cheap) than for a wide one (see
        :func:`_lower_z`): the 2nd percentile for a typical model.
        """
        samples = self._recent(key, succeeded_only=True)
        fit = self._log_interval(key, samples)
        if fit is None:
            return None
        mu, scale, df = fit
        widen = _t96(df) / _Z96  # Student t: few samples, wider
        lo, hi = mu - widen * _lower_z(scale) * scale, mu + widen * _Z96 * scale
        latest = samples[-int(2 * self.half_life) :]  # a regime change moves the bounds at once
        return min(min(latest), math.exp(lo)), max(max(latest), math.exp(hi))

    @_locked
    def predict(self, key: tuple[str, str]) -> float | None:
        """The most likely latency of the next task of ``key`` (``None`` with too few samples)."""
        fit = self._log_interval(key, self._recent(key, succeeded_only=True))
        return None if fit is None else math.exp(fit[0])

    def _log_interval(self, key: tuple[str, str], samples: list[float]) -> tuple[float, float, int] | None:
        """Centre, scale (the prediction's standard deviation) and degrees of freedom, in
        logs, of the next latency of ``key``."""
        pooled = self._pooled(key, samples)
        if len(samples) < self.min_samples:
            return pooled
        mu, sd, n_eff = self._fit(samples)
        own = (mu, sd * math.sqrt(1.0 + 1.0 / n_eff), max(1, round(n_eff) - 1))
        pool = self._pool(self._kinds.get(key))
        if pooled is None or pool is None or sd > 1.5 * pool.sd or _width(pooled) >= _width(own):
            return own  # its own evidence is narrower, or says it scatters more than its kind
        return pooled

    def _pooled(self, key: tuple[str, str], samples: list[float]) -> tuple[float, float, int] | None:
        """The prediction from the model's own latencies and its kind's scatter (``None``
        without a kind, a sample, or enough ends of the kind)."""
        pool = self._pool(self._kinds.get(key))
        if pool is None or not samples:
            return None
        if len(samples) >= self.min_samples:
            mean, _, n = self._fit(samples)
        else:
            n, mean = float(len(samples)), sum(map(math.log, samples)) / len(samples)
        var = pool.sd**2
        if pool.between is None:  # one model of the kind so far: no shrinkage
            post_var = var / n
        else:  # the model's mean is pulled towards its kind's typical model
            post_var = 1.0 / (1.0 / pool.between + n / var)
            mean = post_var * (pool.mean / pool.between + n * mean / var)
        return mean, math.sqrt(var + post_var), pool.df

    def _pool(self, kind: str | None) -> _Pool | None:
        """Scatter of one model's latencies and of models' typical latencies, for ``kind``."""
        if kind is None:
            return None
        if kind not in self._pools:
            groups = [
                [math.log(x) for x in self._recent(k, succeeded_only=True)]
                for k, v in self._kinds.items()
                if v == kind
            ]
            self._pools[kind] = _Pool.of([g for g in groups if g])
        return self._pools[kind]

    def _early(self, key: tuple[str, str], lo: float) -> tuple[list[float], int]:
        """Recent failures and cancellations before ``lo``, and how many recent ends there were.

        Successes below ``lo`` are the success model's own tail, not early ends: counting
        them would poll every task of a steady model from its start.
        """
        ends = list(self._ends.get(key, ()))[-int(4 * self.half_life) :]
        return [lat for lat, ok in ends if not ok and lat < lo], len(ends)

    @_locked
    def early_share(self, key: tuple[str, str], lo: float) -> float:
        """Share of recent ended tasks of ``key`` that failed before ``lo`` seconds."""
        early, n = self._early(key, lo)
        return len(early) / n if n else 1.0

    @_locked
    def early_until(self, key: tuple[str, str], lo: float) -> float | None:
        """How late recent early ends (before ``lo``) came (``None`` if there were none)."""
        early, _ = self._early(key, lo)
        return max(early) if early else None
