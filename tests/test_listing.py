"""List polling: the planner's properties, and the simulator's account over real HTTP.

The planner (``mh_notebook.polling.listing``) is pure: Hypothesis drives it with made-up
accounts. The simulator's list features (someone else's tasks, a cursor stable under
concurrent creation, the switches, the request counts) are tested over HTTP, and a small
poll loop drives the planner against the simulator end to end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mh_notebook import Client
from mh_notebook.errors import APIError, MalformedResponseError, ModelHunterError
from mh_notebook.polling.learning import after_failure, after_walk, walk_outcome
from mh_notebook.polling.listing import (
    ListFailure,
    ListState,
    PageWalk,
    Plan,
    Sighting,
    Source,
    Watched,
    _Estimator,  # the planner's own page estimate
    merge,
    plan,
    status_rank,
)
from mh_notebook.records import ENDED, TaskStatus
from mh_notebook.sim import Others, Simulator
from mh_notebook.sim.process import SimulatorProcess

NOW = 100_000.0
STATUSES = [*(s.value for s in TaskStatus), "not_found", "paused"]
MODELS = [("seedream", "seedream-4-5"), ("vidu", "viduq3-turbo"), ("kling", "kling-v3"), (None, None)]


# ------------------------------------------------------------------ strategies
@st.composite
def watched(draw: st.DrawFn, index: int) -> Watched:
    provider, model = draw(st.sampled_from(MODELS))
    return Watched(
        id=f"t{index}",
        created=NOW - draw(st.floats(0, 20_000)),
        due=NOW + draw(st.floats(-100, 100)),
        status=draw(st.sampled_from(STATUSES)),
        provider=provider,
        model=model,
        needs_result=draw(st.booleans()),
    )


@st.composite
def tasks(draw: st.DrawFn) -> list[Watched]:
    n = draw(st.integers(0, 60))
    return [draw(watched(i)) for i in range(n)]


@st.composite
def states(draw: st.DrawFn) -> ListState:
    n = draw(st.integers(0, 150))
    spread = draw(st.floats(1, 20_000))
    others = {f"o{i}": (NOW - draw(st.floats(0, spread)), *draw(st.sampled_from(MODELS))) for i in range(n)}
    since = NOW - draw(st.floats(0, 20_000)) if n or draw(st.booleans()) else None
    return ListState(
        others=others,
        observed_since=since,
        observed_until=None if since is None else NOW - draw(st.floats(0, 60)),
    )


def pages_only_cost(state: ListState, ws: list[Watched], now: float) -> int:
    """One unfiltered walk from the oldest due task, plus the result GETs."""
    due = _due(ws)
    results = len({w.id for w in ws if w.needs_result})
    if not due:
        return results
    polled = [w for w in ws if not w.needs_result and w.status not in ENDED]
    since = min(w.created for w in due) - state.settings.margin
    return _Estimator(state, polled, now).pages(since, None, None) + results


def _due(ws: list[Watched]) -> list[Watched]:
    return [w for w in ws if w.due <= NOW and not w.needs_result and w.status not in ENDED]


# ------------------------------------------------------------------ planner properties
@settings(max_examples=150, deadline=None)
@given(state=states(), ws=tasks())
def test_every_due_task_is_covered_once_by_a_walk_or_a_get(state: ListState, ws: list[Watched]) -> None:
    p = plan(state, ws, NOW)
    by_id = {w.id: w for w in ws}
    covered = set().union(*(w.covers for w in p.walks)) if p.walks else set()
    for walk in p.walks:
        assert all(walk.shows(by_id[i]) for i in walk.covers)
        assert walk.max_pages >= walk.est_pages >= 1 and walk.limit == 100
    for w in _due(ws):
        assert (w.id in p.gets) != (w.id in covered), w
    assert len(set(p.gets)) == len(p.gets)
    results = [w.id for w in ws if w.needs_result]
    assert sorted(p.result_gets) == sorted(results)  # exactly one GET per result
    assert not set(p.result_gets) & (set(p.gets) | covered)
    assert all(by_id[i].status not in ENDED and not by_id[i].needs_result for i in p.gets)


@settings(max_examples=150, deadline=None)
@given(state=states(), ws=tasks())
def test_plan_costs_no_more_than_all_gets_or_pages_only(state: ListState, ws: list[Watched]) -> None:
    # riders: a walk may grow by that many pages to observe every watched task
    for riders in (0, state.settings.riders):
        st_ = replace(state, settings=replace(state.settings, riders=riders))
        p = plan(st_, ws, NOW)
        all_gets = len(_due(ws)) + len([w for w in ws if w.needs_result])
        assert p.est_requests <= all_gets + riders
        assert p.est_requests <= pages_only_cost(st_, ws, NOW) + riders


def _sighting(data: st.DataObject, source: Source) -> Sighting:
    draw = data.draw
    return Sighting(
        id="t",
        status=draw(st.sampled_from(STATUSES)),
        seen_at=draw(st.floats(0, 100)),
        source=source,
        progress=draw(st.none() | st.floats(0, 100)),
        cost=draw(st.none() | st.floats(0, 5)),
    )


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_merge_never_regresses_and_trusts_the_newest(data: st.DataObject) -> None:
    page = _sighting(data, Source.PAGE)
    get = _sighting(data, Source.GET)
    for merged in (merge(page, get), merge(get, page)):
        assert status_rank(merged.status) == max(status_rank(page.status), status_rank(get.status))
        newer, older = (get, page) if get.seen_at >= page.seen_at else (page, get)  # a tie: GET
        assert merged.seen_at == newer.seen_at
        if status_rank(newer.status) >= status_rank(older.status):
            assert merged.status == newer.status  # a page older than a GET loses
        assert merged.cost == (newer.cost if newer.cost is not None else older.cost)
    assert merge(None, page) == page


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.integers(0, 30), max_size=120), size=st.integers(1, 10))
def test_a_cursor_walk_counts_each_task_once(ids: list[int], size: int) -> None:
    items = [Sighting(f"t{i}", "running", float(n), Source.PAGE) for n, i in enumerate(ids)]
    pages = [items[k : k + size] for k in range(0, len(items), size)]
    covers = frozenset(f"t{i}" for i in range(0, 40, 3))
    out = walk_outcome(PageWalk(0.0, covers=covers), pages)
    assert set(out.seen) == {f"t{i}" for i in ids} and out.items == len(ids)
    assert out.missing == covers - set(out.seen)


@settings(max_examples=100, deadline=None)
@given(ws=tasks(), failure=st.sampled_from(list(ListFailure)), times=st.integers(1, 12))
def test_fallback_polls_each_task_and_retries_the_list_with_backoff(
    ws: list[Watched], failure: ListFailure, times: int
) -> None:
    state, waits = ListState(), []
    for _ in range(times):
        state = after_failure(state, failure, NOW)
        waits.append(state.health.retry_at - NOW)
    assert waits == sorted(waits) and waits[-1] <= state.settings.backoff_cap
    assert state.health.reason is not None and failure.value in str(list(ListFailure)).lower()
    due = {w.id for w in _due(ws)}
    waiting = plan(state, ws, NOW)
    assert waiting.per_task and not waiting.walks and set(waiting.gets) == due
    later = state.health.retry_at
    probing = plan(state, ws, later)
    assert probing.per_task and len(probing.walks) == 1
    probe = probing.walks[0]
    assert probe.probe and probe.limit == 1 and not probe.covers
    assert set(probing.gets) == {w.id for w in ws if w.due <= later} & {
        w.id for w in ws if not w.needs_result and w.status not in ENDED
    }
    recovered = after_walk(state, probe, walk_outcome(probe, [[]]), [], later)
    assert recovered.health.available and recovered.health.reason is None
    assert not plan(recovered, ws, later).per_task


# ------------------------------------------------------------------ planner cases
def _batch(n: int, created: float, model: str = "seedream-4-5", provider: str = "seedream") -> list[Watched]:
    return [Watched(f"b{i}", created + i * 0.01, NOW, provider=provider, model=model) for i in range(n)]


def test_many_new_tasks_walk_pages_and_one_old_task_is_a_get() -> None:
    old = Watched("old", NOW - 3 * 3600, NOW, provider="kling", model="kling-v3")
    p = plan(ListState(), [*_batch(300, NOW - 30), old], NOW)
    assert p.gets == ("old",)
    assert len(p.walks) == 1 and len(p.walks[0].covers) == 300
    assert p.est_requests <= 5
    assert plan(ListState(), [old], NOW) == Plan(gets=("old",))


def test_an_account_full_of_unwatched_tasks_makes_gets_cheaper() -> None:
    others = {f"o{i}": (NOW - 60 + i * 0.01, "seedream", "seedream-4-5") for i in range(5000)}
    state = ListState(others=others, observed_since=NOW - 61, observed_until=NOW - 1)
    p = plan(state, _batch(10, NOW - 50), NOW)
    assert not p.walks and len(p.gets) == 10


def test_a_model_filter_skips_a_teammates_batch_of_another_model() -> None:
    others = {f"o{i}": (NOW - 60 + i * 0.05, "seedream", "seedream-4-5") for i in range(1000)}
    state = ListState(others=others, observed_since=NOW - 61, observed_until=NOW - 1)
    p = plan(state, _batch(150, NOW - 50, model="viduq3-turbo", provider="vidu"), NOW)
    assert [(w.provider, w.model) for w in p.walks] in ([("vidu", None)], [(None, "viduq3-turbo")])
    assert p.est_requests == 2 and not p.gets
    assert p.describe() == "2 list pages"


def test_a_succeeded_task_gets_exactly_one_result_get() -> None:
    done = Watched("done", NOW - 10, NOW + 50, status="succeeded", needs_result=True)
    p = plan(ListState(), [done, done], NOW)
    assert p == Plan(result_gets=("done",)) and p.describe() == "1 result GET"


def test_a_group_due_within_the_round_joins_it() -> None:
    # issue 19: image and video rounds alternated, each waiting for the other's end
    images = _batch(300, NOW - 8)
    videos = [
        replace(w, id=f"v{i}", due=NOW + 0.3)
        for i, w in enumerate(_batch(250, NOW - 8, "viduq3-turbo", "vidu"))
    ]
    ws = [*images, *videos]

    def covered(p: Plan) -> set[str]:
        return set().union(*(w.covers for w in p.walks))

    alone, joined = plan(ListState(), ws, NOW), plan(ListState(), ws, NOW, ahead=0.5)
    assert covered(alone) == {w.id for w in images}  # the videos are not due yet: a round of their own
    assert covered(joined) == {w.id for w in ws} and not joined.gets
    assert plan(ListState(), ws, NOW, ahead=0.2) == alone  # due after the round: not pulled in


def test_what_the_pages_held_teaches_the_estimate() -> None:
    walk = PageWalk(NOW - 100, covers=frozenset({"b0"}))
    page = [
        Sighting(f"o{i}", "running", NOW, Source.PAGE, NOW - 100 + i * 0.05, "seedream", "seedream-4-5")
        for i in range(2000)
    ]
    state = after_walk(ListState(), walk, walk_outcome(walk, [page]), ["b0"], NOW)
    assert len(state.others) == 2000 and state.other_rate() > 10
    assert not plan(state, _batch(5, NOW - 90), NOW).walks  # 20 pages > 5 GETs


# ------------------------------------------------------------------ the simulator's account
def _headers(sim: Simulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {sim.api_key}"}


@pytest.fixture
def busy() -> Iterator[Simulator]:
    """An account where someone else creates 50 tasks per real second."""
    with Simulator(seed=4, speed=100, others=Others(rate=0.5)) as sim:
        yield sim


def test_someone_else_creates_tasks_at_the_set_rate(busy: Simulator) -> None:
    time.sleep(1.0)
    made = len(busy.other_ids)
    assert 35 <= made <= 65
    kinds = {busy.timeline(i)["type"] for i in busy.other_ids}
    assert kinds == {"image", "video"}
    busy.others = Others(rate=0)
    time.sleep(0.2)
    settled = len(busy.other_ids)
    time.sleep(0.3)
    assert len(busy.other_ids) == settled


def test_others_parse_and_fail_rate() -> None:
    spec = Others.parse("rate=2; models=seedream-4-5:3,viduq3-turbo; fail_rate=1; count=7")
    assert spec == Others(2.0, (("seedream-4-5", 3.0), ("viduq3-turbo", 1.0)), 1.0, 7)
    sim = Simulator(seed=1, speed=100, others=spec)
    ids = sim.spawn_others(20)
    assert [sim.timeline(i)["outcome"] for i in ids] == ["failed"] * 20
    with pytest.raises(ValueError, match="bad part"):
        Others.parse("speed=3")
    with pytest.raises(ValueError, match="list_mode"):
        Simulator(list_mode="sometimes")


def test_the_cursor_is_stable_while_tasks_are_created(busy: Simulator) -> None:
    time.sleep(0.5)
    with Client(busy.api_key, busy.url) as client:
        started = client.list_tasks(limit=1).tasks[0].created_at
        assert started is not None
        seen: list[str] = []
        for page in client.iter_pages(limit=7, until=started.isoformat()):
            seen += [t.id for t in page.tasks]
            time.sleep(0.02)  # someone else keeps creating meanwhile
        newest_first = [t.id for t in client.list_tasks(limit=100).tasks]
    assert len(seen) == len(set(seen))  # nothing twice
    created_before = [i for i in busy.task_ids if busy.timeline(i)["created"] < started.timestamp()]
    assert set(created_before) <= set(seen)  # nothing missed
    order = [busy.timeline(i)["created"] for i in newest_first]
    assert order == sorted(order, reverse=True)


def test_list_items_carry_the_list_fields_but_no_result() -> None:
    with Simulator(seed=0, speed=100) as sim:
        done = sim.submit(model="seedream-4-5", outcome="succeeded", latency=1)
        time.sleep(0.05)
        item = httpx.get(f"{sim.url}/api/v1/tasks", headers=_headers(sim)).json()["data"][0]
    assert item["id"] == done and item["status"] == "succeeded" and "result" not in item
    assert item["progress"] == 100 and item["cost"] == 0.04
    assert item["started_at"] and item["completed_at"] and item["created_at"]


@pytest.mark.parametrize(
    ("mode", "status", "error"),
    [("missing", 404, APIError), ("forbidden", 403, APIError), ("garbage", 200, MalformedResponseError)],
)
def test_list_switches(mode: str, status: int, error: type[ModelHunterError]) -> None:
    with Simulator(seed=0, speed=100, list_mode=mode) as sim, Client(sim.api_key, sim.url) as client:
        answer = httpx.get(f"{sim.url}/api/v1/tasks", headers=_headers(sim))
        assert answer.status_code == status
        if mode == "forbidden":
            assert answer.json() == {
                "success": False,
                "error": {"code": "KEY_PERMISSION_DENIED", "message": answer.json()["error"]["message"]},
            }
        with pytest.raises(error):
            client.list_tasks(retry=False)
        task_id = sim.submit(model="seedream-4-5")
        assert client.get_task(task_id).id == task_id  # GETs still work
        sim.list_mode = "ok"
        assert [t.id for t in client.list_tasks().tasks] == [task_id]


def test_list_lag_shows_each_task_as_it_was() -> None:
    with Simulator(seed=0, speed=100, list_lag=0.3) as sim, Client(sim.api_key, sim.url) as client:
        task_id = sim.submit(model="seedream-4-5", outcome="succeeded", latency=50)  # ends at 0.5 s
        time.sleep(0.1)
        assert client.list_tasks().tasks == []  # not listed yet
        time.sleep(0.5)
        assert client.get_task(task_id).status == "succeeded"
        listed = client.list_tasks().tasks[0]
        assert (listed.id, listed.status) == (task_id, "running")  # 0.3 s behind the GET
        time.sleep(0.3)
        assert client.list_tasks().tasks[0].status == "succeeded"


def test_requests_are_counted_by_kind() -> None:
    with Simulator(seed=0, speed=100, rate_limit=5, rate_burst=5) as sim, Client(sim.api_key, sim.url) as c:
        ids = [sim.submit(model="seedream-4-5") for _ in range(4)]
        sim.spawn_others(3)
        c.list_tasks(limit=3)
        for task_id in ids[:2]:
            c.get_task(task_id)
        assert (sim.calls["list"], sim.calls["get"]) == (1, 2)
        assert sim.calls_by_key[("list", sim.api_key)] == 1
        assert sim.requests_per_task(len(ids)) == 0.75
        assert sim.request_counts() == {"list": 1, "get": 2}
        with httpx.Client(headers=_headers(sim)) as http:
            answers = [http.get(f"{sim.url}/api/v1/tasks") for _ in range(8)]
        assert 429 in {a.status_code for a in answers}  # pages share the key's rate limit
        sim.reset_counts()
        assert sim.request_counts() == {} and not sim.requests


def test_switches_from_the_environment() -> None:
    with SimulatorProcess(speed=100, others="rate=1;count=5", list_mode="forbidden") as proc:
        headers = {"Authorization": f"Bearer {proc.api_key}"}
        assert httpx.get(f"{proc.url}/api/v1/tasks", headers=headers).status_code == 403
    with SimulatorProcess(speed=100, others="rate=1;count=5", list_lag=0) as proc:
        headers = {"Authorization": f"Bearer {proc.api_key}"}
        time.sleep(0.3)
        assert len(httpx.get(f"{proc.url}/api/v1/tasks", headers=headers).json()["data"]) == 5


# ------------------------------------------------------------------ the planner against the simulator
def _poll_round(client: Client, state: ListState, ws: list[Watched], now: float) -> tuple[Plan, ListState]:
    """One tick of a minimal poller: plan, walk, GET; returns the plan and the new state."""
    p = plan(state, ws, now)
    for walk in p.walks:
        query = walk.query()
        try:
            pages, cursor = [], None
            for _ in range(walk.max_pages):
                page = client.list_tasks(
                    since=str(query["since"]),
                    provider=walk.provider,
                    model=walk.model,
                    limit=walk.limit,
                    cursor=cursor,
                    retry=False,
                )
                pages.append([Sighting.from_task(t, now, Source.PAGE) for t in page.tasks])
                if not page.has_more:
                    break
                cursor = page.cursor
        except MalformedResponseError:
            return p, after_failure(state, ListFailure.MALFORMED, now)
        except APIError as exc:
            failure = ListFailure.MISSING if exc.status == 404 else ListFailure.REFUSED
            return p, after_failure(state, failure, now)
        state = after_walk(state, walk, walk_outcome(walk, pages), [w.id for w in ws], now)
    for task_id in p.gets:
        client.get_task(task_id)
    return p, state


def test_the_planner_over_http_pages_then_fallback_then_recovery() -> None:
    with Simulator(seed=2, speed=100) as sim, Client(sim.api_key, sim.url) as client:
        old = sim.submit(model="kling-v3", latency=10_000)
        sim.spawn_others(150)
        time.sleep(0.05)
        ids = [sim.submit(model="seedream-4-5", latency=10_000) for _ in range(120)]
        now = sim.server_time()

        def mine(now: float) -> list[Watched]:
            old_created = sim.timeline(old)["created"] - 3600  # as if it were an hour old
            rows = [Watched(old, old_created, now, provider="kling", model="kling-v3")]
            for i in ids:
                rows.append(
                    Watched(i, sim.timeline(i)["created"], now, provider="seedream", model="seedream-4-5")
                )
            return rows

        state = ListState()
        sim.reset_counts()
        p, state = _poll_round(client, state, mine(now), now)
        assert p.gets == (old,) and len(p.walks) == 1 and len(p.walks[0].covers) == 120
        first = sim.request_counts()
        assert first["get"] == 1 and first["list"] <= 4  # 121 tasks for a handful of requests
        assert len(state.others) >= 1  # the pages showed someone else's tasks

        sim.list_mode = "missing"
        p, state = _poll_round(client, state, mine(now + 1), now + 1)
        assert not state.health.available and state.health.reason
        p, state = _poll_round(client, state, mine(now + 2), now + 2)
        assert p.per_task and not p.walks and len(p.gets) == 121  # per-task polling

        sim.list_mode = "ok"
        later = state.health.retry_at
        p, state = _poll_round(client, state, mine(later), later)
        assert p.walks[0].probe and state.health.available  # recovered
        p, state = _poll_round(client, state, mine(later + 1), later + 1)
        assert not p.per_task and p.walks
