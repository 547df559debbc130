"""List polling, after the requests: what a walk saw, and what the planner learns from it.

Pure, like :mod:`.listing`: :func:`walk_outcome` (each task once across the cursor),
:func:`after_walk` (the account's other tasks remembered) and :func:`after_failure`
(per-task GETs for a while).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from .listing import Health, ListFailure, ListState, PageWalk
from .sightings import Sighting, merge

__all__ = ["WalkOutcome", "after_failure", "after_lag", "after_walk", "walk_outcome"]


@dataclass(frozen=True)
class WalkOutcome:
    """What one walk saw: each task once, and the covered tasks it did not show."""

    seen: Mapping[str, Sighting]
    missing: frozenset[str]
    """Covered tasks the walk did not show (a lagging list, or a walk cut at ``max_pages``):
    not observed, so their due times stand and the next plan GETs them when due."""
    items: int
    """Items received, repeats included."""


def walk_outcome(walk: PageWalk, pages: Sequence[Sequence[Sighting]]) -> WalkOutcome:
    """Deduplicate a cursor walk's pages (a task on two pages is merged, never counted twice)."""
    seen: dict[str, Sighting] = {}
    items = 0
    for page in pages:
        for sighting in page:
            items += 1
            seen[sighting.id] = merge(seen.get(sighting.id), sighting)
    missing = frozenset(walk.covers) - seen.keys()
    return WalkOutcome(seen, missing, items)


def after_walk(
    state: ListState, walk: PageWalk, outcome: WalkOutcome, watched_ids: Iterable[str], now: float
) -> ListState:
    """The state after a successful walk sent at ``now``: a probe finds the list working
    again (another walk keeps the health it has: a lag found during the walk stands); the
    account's unwatched tasks are remembered (for the next estimates), old ones forgotten."""
    mine = set(watched_ids)
    s = state.settings
    others = dict(state.others)
    for sighting in outcome.seen.values():
        if sighting.id not in mine and sighting.created is not None:
            others[sighting.id] = (sighting.created, sighting.provider, sighting.model)
    horizon = now - s.memory
    kept = sorted((v[0], k) for k, v in others.items() if v[0] >= horizon)[-s.max_remembered :]
    others = {k: others[k] for _, k in kept}
    known = state.observed_since
    since = (now if known is None else known) if walk.probe else min(known or walk.since, walk.since)
    return replace(
        state,
        health=Health() if walk.probe else state.health,
        others=others,
        observed_since=max(since, horizon),
        observed_until=now if state.observed_until is None else max(now, state.observed_until),
    )


_REASONS = {
    ListFailure.MISSING: "the API has no task list (404)",
    ListFailure.REFUSED: "this key may not list tasks (403)",
    ListFailure.MALFORMED: "the task list answered something unreadable",
}


def after_failure(state: ListState, failure: ListFailure, now: float) -> ListState:
    """Per-task polling from now on; the list is tried again after a doubling backoff."""
    s = state.settings
    failures = state.health.failures + 1
    wait = min(s.backoff_cap, s.backoff * 2 ** (failures - 1))
    reason = _REASONS[failure]
    return replace(state, health=Health(failures, now + wait, reason))


def after_lag(state: ListState, now: float, period: float, worst: float) -> ListState:
    """Per-task polling for ``period`` seconds from ``now``: the list was seen lagging behind
    the tasks' own GETs (by up to ``worst`` seconds); then it is tried again by a probe."""
    reason = f"the list lags behind task GETs (by up to {worst:.1f} s)"
    return replace(state, health=Health(state.health.failures + 1, now + period, reason))
