"""Whether the task list lags behind the tasks' own GETs, told from evidence already received,
and which paged-only task is worth a verification GET (the guard that reveals a lag pages hide).

A page is **stale** if it showed a task not ended although this process had seen the task's
end (by its GET, or an earlier page) more than ``margin`` before the page was sent: an
honest list cannot show a task running after its end was served. Both times are this
machine's (the end's observation and the page's send time): neither the server's clock nor
what ``completed_at`` means enters (a server may stamp ``completed_at`` before the status
turns, or stamp bodies on another clock than its ``Date`` header: neither is a lag).
Stale pages at two different send times within ``memory`` make the list **lagging** (a
one-off, one page of a bad replica, does not). The lister then polls each task for a
while, as after a missing list, and tries the list again.

Pages alone never reveal the lag when every task is only paged: :func:`pick_verification`
chooses, at most once per ``gap`` (the lister's clock), one task to GET:

- a task of a learned window ``(lo, hi)`` once its age passes ``overdue * hi`` (it has most
  likely ended), then again at each doubling of that age;
- of a model with no window, its oldest paged task once its age passes the model's
  threshold (``base`` at first); the threshold doubles with each verification that found
  the task running, and stays after one that found an end (the next-oldest is then likely
  ended too). So a steady honest list costs a few GETs a model per session, whatever the
  number of tasks.

The thresholds are rungs of a fixed ladder (``start * 2**k``): a verification that went
late (a loaded loop) moves the next one to the next rung above the age it was made at,
not to twice that age, so lateness never compounds. Tasks of one creation time (a batch
submitted at once: equal ``created_at`` to the millisecond, or to the second) are told
apart by the order pages listed them: newest first, so the one listed last was created
first (:attr:`Candidate.listed`).

Pure: no I/O, no clock of its own. :class:`LagWatch` takes local times (a page's send
time, an end's observation); the verification thresholds take ages on the server's clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Candidate", "LagWatch", "Verifications", "pick_verification"]


def _rung(start: float, age: float) -> float:
    """The first rung of the ladder ``start * 2**k`` (k >= 0) above ``age``."""
    if start <= 0.0 or age < start:
        return max(start, 0.0)
    rung = start * 2.0 ** (math.floor(math.log2(age / start)) + 1)
    if rung <= age:  # (log2 rounded down at a power of two)
        rung *= 2.0
    if rung / 2.0 > age:  # (log2 rounded up just below one)
        rung /= 2.0
    return rung


@dataclass
class LagWatch:
    """Stale pages seen lately, and the latest page that showed each task not ended."""

    margin: float = 2.0
    """Seconds an end must have been seen before a page that showed the task running to
    make the page stale."""
    memory: float = 300.0
    """Seconds a stale page is remembered."""
    running: dict[str, float] = field(default_factory=dict)
    """Task id -> the local send time of the latest page that showed it not ended."""
    listed: dict[str, int] = field(default_factory=dict)
    """Task id (of ``running``) -> its place in the order pages first listed the tasks:
    pages list newest first, so of two tasks of one creation time the higher was created
    first."""
    _count: int = field(default=0, repr=False)
    ended: dict[str, float] = field(default_factory=dict)
    """Task id -> local time its end was first seen (by its GET or a page)."""
    stale: dict[float, float] = field(default_factory=dict)
    """Local send time of each stale page remembered -> how far it lagged (seconds)."""
    episodes: int = 0
    """Lagging episodes in a row (each within ``memory`` of the one before)."""
    last_episode: float = -math.inf

    def shown_running(self, task_id: str, page_at: float) -> None:
        """A page sent at local time ``page_at`` showed ``task_id`` not ended (call
        in the order of the page's items)."""
        if page_at > self.running.get(task_id, -math.inf):
            self.running[task_id] = page_at
        if task_id not in self.listed:
            self._count += 1
            self.listed[task_id] = self._count

    def end_seen(self, task_id: str, at: float) -> None:
        """``task_id``'s end was seen at local time ``at`` (by its GET or a page; a later
        time than the first sight only makes the judgement stricter)."""
        self.ended[task_id] = min(at, self.ended.get(task_id, math.inf))
        self.running.pop(task_id, None)
        self.listed.pop(task_id, None)

    def page_after_end(self, task_id: str, sent: float, now: float) -> bool:
        """A page sent at local time ``sent`` showed ``task_id`` not ended; True if that
        makes the list lagging (two stale pages within ``memory``)."""
        seen = self.ended.get(task_id)
        if seen is None:
            return False
        lag = sent - seen
        if lag <= self.margin:
            return False  # an honest page sent about when the end was served
        self.stale[sent] = max(lag, self.stale.get(sent, 0.0))
        for at in [at for at in self.stale if at < now - self.memory]:
            del self.stale[at]
        return len(self.stale) >= 2

    @property
    def worst(self) -> float:
        """The largest lag remembered (seconds; 0 if none)."""
        return max(self.stale.values(), default=0.0)

    def episode(self, now: float, period: float, cap: float) -> float:
        """The list is found lagging at ``now``: seconds of per-task polling (``period``,
        doubling per episode in a row, at most ``cap``). Forgets the evidence: the list is
        judged afresh when it is tried again."""
        in_a_row = now - self.last_episode <= self.memory + period * 2**self.episodes
        self.episodes = self.episodes + 1 if in_a_row else 1
        self.last_episode = now
        self.stale.clear()
        self.running.clear()
        self.listed.clear()
        return float(min(cap, period * 2 ** (self.episodes - 1)))

    def drop(self, task_id: str) -> None:
        """Forget ``task_id`` (no longer watched)."""
        self.running.pop(task_id, None)
        self.listed.pop(task_id, None)
        self.ended.pop(task_id, None)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop what is remembered of tasks not in ``keep``."""
        kept = set(keep)
        self.running = {k: v for k, v in self.running.items() if k in kept}
        self.listed = {k: v for k, v in self.listed.items() if k in kept}
        self.ended = {k: v for k, v in self.ended.items() if k in kept}


@dataclass(frozen=True)
class Candidate:
    """A task only pages have observed lately, as the guard needs it."""

    id: str
    age: float
    """Seconds since its creation (server clock)."""
    key: tuple[str, str]
    """Its latency key (provider, model)."""
    window: tuple[float, float] | None
    """Its learned latency window, if any."""
    listed: int = 0
    """Its place in the order pages listed tasks (:attr:`LagWatch.listed`): of two of one
    age, the higher was created first."""


@dataclass
class Verifications:
    """What the guard has verified: per task the age at its last verification, per model
    with no window the age its oldest task must reach (rungs of ``base * 2**k``)."""

    overdue: float = 1.5
    """A task of a learned window is verified past ``overdue`` times its end."""
    base: float = 18.0
    """First threshold (seconds of age) for a model with no window."""
    verified: dict[str, float] = field(default_factory=dict)
    thresholds: dict[tuple[str, str], float] = field(default_factory=dict)

    def threshold(self, c: Candidate) -> float:
        """The age from which ``c`` may be verified: the first rung of its ladder (from
        ``overdue`` times its window's end, or from ``base``) above the age of its last
        verification, and for a model with no window the model's threshold at least."""
        start = self.overdue * c.window[1] if c.window is not None else self.base
        at = _rung(start, self.verified[c.id]) if c.id in self.verified else start
        return at if c.window is not None else max(self.thresholds.get(c.key, self.base), at)

    def done(self, c: Candidate, ended: bool) -> None:
        """``c`` was verified: ``ended`` if its GET showed an end. Found running, its model
        (with no window) waits for the rung above ``c.age``, however late the GET went."""
        self.verified[c.id] = c.age
        if c.window is None and not ended:
            self.thresholds[c.key] = _rung(self.thresholds.get(c.key, self.base), c.age)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the tasks not in ``keep``."""
        kept = set(keep)
        self.verified = {k: v for k, v in self.verified.items() if k in kept}


def pick_verification(v: Verifications, candidates: Iterable[Candidate]) -> Candidate | None:
    """The paged-only task most worth a GET now, or ``None``: a learned one past its
    threshold first (the furthest past), else of each model with no window only its oldest,
    if past the model's threshold. Of equal ages, the one created first (listed last)."""
    best: tuple[tuple[float, int], Candidate] | None = None
    oldest: dict[tuple[str, str], Candidate] = {}
    for c in candidates:
        if c.window is None:
            if c.key not in oldest or (c.age, c.listed) > (oldest[c.key].age, oldest[c.key].listed):
                oldest[c.key] = c
            continue
        score = (c.age / max(v.threshold(c), 1e-9), c.listed)
        if score[0] >= 1.0 and (best is None or score > best[0]):
            best = (score, c)
    if best is not None:
        return best[1]
    due = [((c.age / max(v.threshold(c), 1e-9), c.listed), c) for c in oldest.values()]
    due = [d for d in due if d[0][0] >= 1.0]
    return max(due, key=lambda d: d[0])[1] if due else None
