"""How likely a task is to end soon at its age: ends per unit of log-age, per model and type.

When more polls are due than the budget allows, a due poll is worth the chance that its
task ended in the part of the time since its last poll where seeing the end now is still on
time (within ``max(min_interval, 5% of its age)``). That chance is the task's hazard, which
:class:`HazardModel` learns from everything the poller saw: a task seen alive at age ``a``
is evidence that tasks of its model and type do not end before ``a`` (its exposure), an end
at ``L`` is one end at ``L``. So before any video has ended, twenty videos seen running for
20 s say that a video of 5 s will not end in the next second, while images seen ending at
3-8 s say that an image of 5 s may; the budget goes to the image.

Counted in bins of log-age (a quarter of a doubling each), read over a band of a doubling
around the age asked about; a model's hazard leans on its type's until its own exposure
outweighs it, a type's on a flat prior (one end per ``log 3`` of age: with nothing known, a
task of age ``e`` ends before ``3e`` about as often as not). Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

__all__ = ["HazardModel", "Key"]

Key = tuple[str, str]
"""A model's ``(provider, model)`` or a type's ``("*", type)``."""

_PER_DOUBLING = 4
_BAND = 2
"""Bins each side of an age's own that its hazard is read over (half a doubling)."""


def _bin(age: float) -> int:
    return math.floor(math.log2(age) * _PER_DOUBLING)


def _edge(index: int) -> float:
    return float(2.0 ** (index / _PER_DOUBLING))


@dataclass
class HazardModel:
    """Ends and exposure (log-age lived without ending) of watched tasks, per model and type."""

    floor: float = 0.1
    """Ages below this (seconds) count as this (log-age has no bottom)."""
    prior: float = 1.0 / math.log(3.0)
    """Ends per unit of log-age of a type nothing is known about."""
    prior_weight: float = 0.5
    """Log-age units of exposure the prior is worth (a type's own outweighs it quickly)."""
    model_weight: float = 1.0
    """Log-age units of exposure a model's type is worth in the model's hazard."""
    _bins: dict[Key, dict[int, list[float]]] = field(default_factory=dict)
    _alive: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def seen(self, task_id: str, keys: tuple[Key, ...], age: float, ended: bool) -> None:
        """Task ``task_id`` of these model and type ``keys`` was seen at ``age`` (its
        latency if ``ended``): it lived from its last sighting (or its creation) to then."""
        with self._lock:
            start = self._alive.pop(task_id, 0.0)
            if not ended:
                self._alive[task_id] = max(start, age)
            for key in keys:
                self._add(key, start, age, ended)

    def learn(self, keys: tuple[Key, ...], latency: float) -> None:
        """An end known from elsewhere (a journal): lived from 0 to ``latency``, then ended."""
        with self._lock:
            for key in keys:
                self._add(key, 0.0, latency, True)

    def forget(self, task_id: str) -> None:
        """No longer watched: its last sighting is dropped."""
        with self._lock:
            self._alive.pop(task_id, None)

    def last_seen(self, task_id: str) -> float | None:
        """The age the task was last seen alive at (``None``: not seen alive)."""
        with self._lock:
            return self._alive.get(task_id)

    def rate(self, model: Key, kind: Key, age: float) -> float:
        """Ends per unit of log-age near ``age`` for a task of ``model`` and ``kind``."""
        with self._lock:
            ends, exposure = self._band(kind, age)
            typed = (ends + self.prior * self.prior_weight) / (exposure + self.prior_weight)
            ends, exposure = self._band(model, age)
            return (ends + typed * self.model_weight) / (exposure + self.model_weight)

    def worth(self, model: Key, kind: Key, age: float, since: float, allow: float) -> float:
        """The chance a poll at ``age`` sees an end on time (within ``allow``) that the poll
        at age ``since`` did not: the hazard over ``[max(since, age - allow), age]``."""
        low = max(since, age - allow, self.floor)
        if not age > low:
            return 0.0
        return self.rate(model, kind, age) * math.log(age / low)

    def _add(self, key: Key, start: float, end: float, ended: bool) -> None:
        start, end = max(start, self.floor), max(end, self.floor)
        bins = self._bins.setdefault(key, {})
        index = _bin(start)
        while end > start:  # exposure, bin by bin
            upper = min(end, _edge(index + 1))
            if upper > start:
                bins.setdefault(index, [0.0, 0.0])[0] += math.log(upper / start)
            start, index = max(start, upper), index + 1
        if ended:
            bins.setdefault(_bin(end), [0.0, 0.0])[1] += 1.0

    def _band(self, key: Key, age: float) -> tuple[float, float]:
        bins = self._bins.get(key)
        if not bins:
            return 0.0, 0.0
        centre, ends, exposure = _bin(max(age, self.floor)), 0.0, 0.0
        for index in range(centre - _BAND, centre + _BAND + 1):
            cell = bins.get(index)
            if cell is not None:
                exposure, ends = exposure + cell[0], ends + cell[1]
        return ends, exposure
