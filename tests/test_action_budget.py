"""A watcher's own requests (submit, cancel, retry, balance) in the request budget, over real HTTP.

Promises guarded here (issue 17, leftovers; README: ``rate_limit=`` is "a ceiling, never
exceeded", one budget per API and key):

- a loop of actions, with polls going on, never sends more than the token bucket allows:
  at most ``burst + rate_limit * T`` requests of any kind reach the server in any window of
  ``T`` seconds (counted at the simulator, from its arrival times);
- a server limit's 429 to an action pauses every request, polls too, for its
  ``Retry-After``, and the action is then sent; a pause longer than the request's timeout
  is a ``RateLimitedError`` at once, with nothing sent;
- an action is not stuck behind a backlog of due polls: at most a couple of polls reach the
  server between the call and the action.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from aiohttp import web

from mh_notebook import PollPolicy, RateLimitedError, TaskWatcher
from mh_notebook.polling.budget import AdaptiveRate
from mh_notebook.sim import Simulator
from mh_notebook.sim.faults import rate_limited

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LATE = 100_000.0
"""A latency no test outlives: the tasks stay running."""
SLACK = 2
"""Requests allowed above the bucket's bound in a window: one request held up on its way to
the server (a loaded machine) shortens the window it starts by up to its delay."""


class LoggingSim(Simulator):
    """The simulator with every ``/api/v1`` request logged at arrival (monotonic time, call,
    status), and the next ``refuse`` actions (cancel, balance) answered 429 with
    ``Retry-After: retry_after``."""

    def __init__(self, **kwargs: float) -> None:
        super().__init__(seed=0, **kwargs)
        self.arrivals: list[tuple[float, str, int]] = []
        self.refuse, self.retry_after = 0, 1
        self._log_lock = threading.Lock()

    def _app(self) -> web.Application:
        app = super()._app()

        @web.middleware
        async def log(request: web.Request, handler: Handler) -> web.StreamResponse:
            arrived, call = time.monotonic(), _call(request)
            if call in ("cancel", "balance") and self.refuse > 0:
                self.refuse -= 1
                response: web.StreamResponse = rate_limited(self.retry_after)
            else:
                response = await handler(request)
            if call:
                with self._log_lock:
                    self.arrivals.append((arrived, call, response.status))
            return response

        app.middlewares.append(log)
        return app

    def log(self, calls: tuple[str, ...] = ()) -> list[tuple[float, str, int]]:
        """The arrivals so far (of these calls, all if none), in order."""
        with self._log_lock:
            return [a for a in sorted(self.arrivals) if not calls or a[1] in calls]


def _call(request: web.Request) -> str:
    parts = request.path.strip("/").split("/")
    if parts[:2] != ["api", "v1"]:
        return ""
    rest = parts[2:]
    if rest == ["balance"]:
        return "balance"
    if rest[:1] == ["tasks"]:
        return {1: "list", 2: "get"}.get(len(rest), rest[-1])  # .../cancel, .../retry
    return "create"


@pytest.fixture
def lsim() -> Iterator[LoggingSim]:
    with LoggingSim(speed=1.0) as s:
        yield s


def _worst_excess(times: list[float], rate: float, burst: float) -> float:
    """The most requests in any window [t_i, t_j] above ``burst + rate * (t_j - t_i)``."""
    return max(
        (j - i + 1) - (burst + rate * (times[j] - times[i]))
        for i in range(len(times))
        for j in range(i, len(times))
    )


def _teach_a_limit(w: TaskWatcher) -> None:
    """The budget learns that the server's limit is about 0.5 req/s, as 429s rising with the
    rate would show it (tests/test_budget.py covers how), and its rate is set back to the
    ceiling: from now on a 429 to a request sent at that rate or above shows the limit."""
    done = threading.Event()

    def teach() -> None:
        import asyncio

        budget: AdaptiveRate = w.engine.poller.budget
        now = asyncio.get_running_loop().time()
        for _ in range(60):
            budget.on_answer(now, 0.25)
        for i in range(20):
            budget.on_answer(now, 0.5)
            if i % 2:
                budget.on_limited(now, 0.0, 0.5)
        budget.rate = budget.ceiling
        done.set()

    w.engine.call_soon(teach)
    assert done.wait(30)


def test_a_loop_of_actions_stays_within_the_budget(lsim: LoggingSim) -> None:
    rate, burst = 2.0, 1.0
    running = [lsim.submit(model="veo-3.1", latency=LATE) for _ in range(12)]
    with TaskWatcher(lsim.api_key, lsim.url, store=None, display="none", rate_limit=rate, burst=burst) as w:
        w.watch(running[:3])  # polls go on meanwhile, in the same budget
        for task_id in running[3:]:
            assert w.cancel(task_id).status == "cancelled"
            assert w.balance() > 0
    arrivals = lsim.log()
    actions = [a for a in arrivals if a[1] in ("cancel", "balance")]
    assert len(actions) == 18 and any(a[1] == "get" for a in arrivals)
    excess = _worst_excess([a[0] for a in arrivals], rate, burst)
    assert excess <= SLACK, f"{excess:.1f} requests above the bucket's bound in some window"


def test_a_limits_429_to_an_action_pauses_every_request(lsim: LoggingSim) -> None:
    running = [lsim.submit(model="veo-3.1", latency=LATE) for _ in range(5)]
    with TaskWatcher(lsim.api_key, lsim.url, store=None, display="none", rate_limit=20) as w:
        w.watch(running)
        _wait_for(lambda: len(lsim.log(("get",))) >= 5)
        _teach_a_limit(w)
        lsim.refuse, lsim.retry_after = 1, 2
        assert w.balance() > 0
        refused = next(a for a in lsim.log() if a[2] == 429)
        _wait_for(lambda: any(a[1] in ("get", "list") and a[0] > refused[0] + 2 for a in lsim.log()))
    arrivals = lsim.log()
    during = [a for a in arrivals if refused[0] < a[0] < refused[0] + 2 - 0.01]
    assert during == [], "requests reached the server during the limit's pause"
    after = [a[1:] for a in arrivals if a[0] > refused[0]]
    # the action before any poll once the pause ended (a list page shares its lane: under
    # load one came first, ci22)
    assert ("balance", 200) in after, after
    assert all(call != "get" for call, _ in after[: after.index(("balance", 200))]), after


def test_a_pause_longer_than_the_timeout_fails_at_once_sending_nothing(lsim: LoggingSim) -> None:
    with TaskWatcher(lsim.api_key, lsim.url, store=None, display="none", timeout=5) as w:
        assert w.balance() > 0  # the engine's loop is up
        _teach_a_limit(w)
        lsim.refuse, lsim.retry_after = 1, 120
        with pytest.raises(RateLimitedError):
            w.balance()  # the server's 429: its Retry-After is past the client's retry time
        sent = len(lsim.log())
        with pytest.raises(RateLimitedError, match="pauses every request") as caught:
            w.balance()
        assert caught.value.retry_after is not None and caught.value.retry_after > 30
        assert len(lsim.log()) == sent


def test_an_action_is_not_stuck_behind_due_polls(lsim: LoggingSim) -> None:
    tasks = [lsim.submit(model="veo-3.1", latency=LATE) for _ in range(200)]
    policy = PollPolicy(list_polling=False)  # one GET per poll: a real backlog of polls
    with (
        concurrent.futures.ThreadPoolExecutor(1) as pool,  # shut down after the watcher stops
        TaskWatcher(
            lsim.api_key, lsim.url, store=None, display="none", rate_limit=4, burst=1, policy=policy
        ) as w,
    ):
        w.watch(tasks)
        _wait_for(lambda: len(lsim.log(("get",))) >= 8)  # the budget is what holds polls back
        called = time.monotonic()
        never_polled = sum(1 for s in w.engine.states(tasks) if s.polls == 0)
        balance = pool.submit(w.balance)
        polls_since = lambda: sum(1 for a in lsim.log(("get",)) if a[0] > called)  # noqa: E731
        _wait_for(lambda: balance.done() or polls_since() > 20)  # stuck: 20 polls went first
        assert balance.done(), f"{polls_since()} polls went while the action waited"
        assert balance.result() > 0
        arrived = next(a[0] for a in lsim.log(("balance",)))
    polls_before = [a for a in lsim.log(("get",)) if called < a[0] < arrived]
    assert never_polled >= 100, "no backlog to be stuck behind"
    assert len(polls_before) <= 2, f"{len(polls_before)} polls went before the action"


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
