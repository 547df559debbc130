"""The server's clock, learned: how far it runs ahead of (or behind) this machine's.

Server timestamps (``created_at``, ``completed_at``) and local time only meet through
``offset = server clock - local clock``. Two kinds of evidence bound it, and both are kept
as an interval ``[lo, hi]`` that only narrows:

- a ``Date`` header (1 s resolution, floored) on a response to a request sent at local
  ``t0`` and received at ``t1``: the server wrote it at some server time in
  ``[date, date + 1)``, which was local time in ``[t0, t1]``, so
  ``date - t1 <= offset < date + 1 - t0``;
- any server timestamp ``ts`` in a body received at ``t1`` lies in the server's past:
  ``offset >= ts - t1``. A task first seen right after it was created makes this tight.

``offset`` is the middle of the interval and ``error`` its half-width: the true offset is
within ``offset ± error`` as long as neither clock jumps. A ``Date`` header that contradicts
the estimate (a clock was stepped) restarts it from that header; a body timestamp that does
is ignored (a task created before the server's clock was stepped back keeps its stamp: it
would contradict every header from then on). Pure: no I/O,
no clock of its own; every method takes the local times it needs.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from ..formats import http_date

__all__ = ["ClockOffset"]

_SLACK = 0.002
"""Rounding of timestamps (ms) and of local time readings, in seconds."""


@dataclass
class ClockOffset:
    """An interval estimate of ``server clock - local clock`` in seconds (thread-safe)."""

    lo: float = -math.inf
    """The offset is at least this."""
    hi: float = math.inf
    """The offset is at most this."""
    samples: int = 0
    """Pieces of evidence taken into account."""
    steps: int = 0
    """Times the evidence contradicted itself (a clock was stepped) and the estimate restarted:
    an estimate from before a step says nothing of the local times from before it."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def known(self) -> bool:
        """True once any evidence has been seen."""
        return self.samples > 0

    @property
    def offset(self) -> float:
        """Best estimate in seconds: the middle of the interval once it is bounded on both
        sides; before that, the nearest offset to 0 that the evidence allows (a body
        timestamp alone only proves the server is not further behind than it says)."""
        lo, hi = self.lo, self.hi
        if math.isinf(lo) or math.isinf(hi):
            return min(max(0.0, lo), hi)
        return (lo + hi) / 2

    @property
    def error(self) -> float:
        """Half-width of the interval: the most the estimate can be off (``inf`` if unbounded)."""
        return (self.hi - self.lo) / 2

    def server_now(self, local_now: float) -> float:
        """The server's clock at local time ``local_now``."""
        return local_now + self.offset

    def server_at_least(self, local_now: float) -> float:
        """The earliest the server's clock can read at local time ``local_now`` (the
        estimate while the interval is unbounded on either side): a task's age taken from
        it is never more than its true age."""
        return local_now + (self.lo if math.isfinite(self.error) else self.offset)

    def observe_date(self, sent_at: float, received_at: float, date: str | None) -> None:
        """Take a response's ``Date`` header into account (ignored if absent or unparsable)."""
        server = http_date(date)
        if server is None:
            return
        self._narrow(server - received_at - _SLACK, server + 1.0 - sent_at + _SLACK)

    def observe_timestamp(self, server_ts: float, received_at: float) -> None:
        """Take a server timestamp from a body received at local ``received_at`` into account
        (ignored if it contradicts the estimate: a task's stored stamp from before the
        server's clock was stepped back says nothing of the clock now)."""
        self._narrow(server_ts - received_at - _SLACK, math.inf, restart=False)

    def _narrow(self, lo: float, hi: float, *, restart: bool = True) -> None:
        with self._lock:
            new_lo, new_hi = max(self.lo, lo), min(self.hi, hi)
            if new_lo > new_hi:  # contradiction: a clock was stepped
                if not restart:
                    return
                new_lo, new_hi = lo, hi  # a Date header: trust the newest evidence
                self.steps += 1
            self.lo, self.hi = new_lo, new_hi
            self.samples += 1

    def __repr__(self) -> str:
        if not self.known:
            return "ClockOffset(unknown)"
        return f"ClockOffset({self.offset:+.3f} s ± {self.error:.3f} s, {self.samples} samples)"
