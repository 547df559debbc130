"""A probe of the budget: is it a server limit, or noise? A controlled experiment, A-B-A.

At one steady rate, a limit's 429s and a flaky proxy's look alike. A probe sends lower for
a while (the low phase), then at the rate before again (the back phase), and compares the
share of 429s among the answers to each phase's requests with the share just before it.
A limit's 429s fall in the low phase and come back in the back phase; noise's stay the
same in all three. Noise whose share comes and goes may fall by chance in the low phase
(it ended just then: attack s24), but it does not also come back right after it.

The requests are told apart by the rate they were sent at (measured over a second or so,
it lags): the low phase counts those sent well under the rate before, the back phase those
sent well above the low one. Pure: every method takes the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Probe", "rise"]

_APART = 1.25
"""How far apart (a factor) a request's sending rate must be from the other phase's rate."""


def rise(n_lo: float, k_lo: float, n_hi: float, k_hi: float) -> float:
    """One-sided two-proportion z: how clearly the share of 429s among ``n_hi`` answers
    (``k_hi`` of them 429) is above the share among ``n_lo`` (``k_lo``)."""
    p = (k_lo + k_hi) / (n_lo + n_hi)
    se = math.sqrt(max(p * (1.0 - p), 1e-12) * (1.0 / n_lo + 1.0 / n_hi))
    return (k_hi / n_hi - k_lo / n_lo) / se


@dataclass
class Probe:
    """One probe: from ``high`` (the rate before) down to ``low`` until ``low_until``,
    then back at ``high`` until ``back_until``. ``before``: (answers, 429s) sent at about
    ``high`` before it."""

    high: float
    low: float
    low_until: float
    back_until: float
    before: tuple[float, float]
    counted_from: float = -math.inf
    """The low phase's answers count from then on: a limit over a window (40 per 10 s)
    refuses on for as long as the window remembers the rate before (its ``Retry-After``)."""
    seen_low: list[float] = field(default_factory=lambda: [0.0, 0.0])
    seen_back: list[float] = field(default_factory=lambda: [0.0, 0.0])
    back: bool = False
    """In the back phase."""

    def settled(self, now: float) -> None:
        """The window forgot sooner (no 429 lately): count from ``now``, the phases as long."""
        early = max(0.0, self.counted_from - now)
        self.counted_from, self.low_until, self.back_until = (
            now,
            self.low_until - early,
            self.back_until - early,
        )

    def count(self, now: float, sent_rate: float, limited: bool) -> None:
        """An answer (``limited``: a 429) to a request sent at ``sent_rate``."""
        if self.counted_from <= now < self.low_until + 1.0 and sent_rate < self.high / _APART:
            seen = self.seen_low  # (answers coming in up to a second after the low phase)
        elif now >= self.low_until and sent_rate >= self.low * _APART:
            seen = self.seen_back
        else:
            return
        seen[0] += 1.0
        seen[1] += 1.0 if limited else 0.0

    def verdict(self, min_answers: float, evidence: float) -> Literal["limit", "noise", "unclear"]:
        """After the back phase. ``"limit"``: the 429s fell in the low phase to at most half
        their share both before and after it, each fall clearly (z >= ``evidence``).
        ``"noise"``: they did not fall by half (at least 2 429s in the low phase).
        ``"unclear"``: too few answers, or a fall that is not clear."""
        (n_hi, k_hi), (n_lo, k_lo), (n_bk, k_bk) = self.before, self.seen_low, self.seen_back
        if n_lo < min_answers or n_hi <= 0:
            return "unclear"
        if k_lo >= 2.0 and k_lo / n_lo > k_hi / n_hi / 2:
            return "noise"
        if n_bk < min_answers or k_lo / n_lo > k_bk / n_bk / 2:
            return "unclear"
        if min(rise(n_lo, k_lo, n_hi, k_hi), rise(n_lo, k_lo, n_bk, k_bk)) >= evidence:
            return "limit"
        return "unclear"

    def share_back(self) -> float:
        """The share of 429s in the back phase (0 with no answers)."""
        n, k = self.seen_back
        return k / n if n > 0 else 0.0
