"""A user's requests (create, cancel, retry, balance) in the poller's request budget.

They are not polls, but they count against the same limit (the API's, per key):
``rate_limit=`` is a ceiling for everything the process sends. So each attempt of one takes
a token and a slot of the poller's :class:`~.gate.RequestGate`, ahead of every poll, even
one already waiting for one (a click must not wait behind a backlog of due polls); waits out a
server limit's pause (up to the request's timeout: a longer pause is a
:class:`~mh_notebook.errors.RateLimitedError` that the client's retry policy treats as a 429,
waiting it out within its 30 s or giving up); and feeds its own 429s to the gate as a poll's
are (a limit's 429 pauses every request, polls too).

They are sent on the poller's loop by an :class:`~mh_notebook.client.AsyncClient` of their
own, with the client's usual retries: a creation or retry is never resent blindly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from ..client import AsyncClient, _Secret
from ..errors import RateLimitedError
from .gate import RequestGate

__all__ = ["ActionTurns", "UserRequests"]

T = TypeVar("T")


class Host(Protocol):
    """What the user's requests use of their :class:`~.poller.Poller` (no import: no circle)."""

    _gate: RequestGate
    clock: Any
    policy: Any

    def spawn(self, make: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]: ...


class ActionTurns:
    """The turns of a user's requests in ``gate`` (a :class:`~mh_notebook.client.Turns`; on
    the gate's loop). ``wait`` bounds the wait for a limit's pause (``None``: none);
    ``fallback`` is the pause of a limit's 429 that sends no ``Retry-After``."""

    def __init__(self, gate: RequestGate, *, wait: float | None, fallback: float) -> None:
        self._gate, self._wait, self._fallback = gate, wait, fallback

    async def take(self) -> float:
        """Wait out a limit's pause, then a token and a slot, before any poll (even one
        waiting already); the rate this request is sent at."""
        gate = self._gate
        while True:
            left = gate.pause_left()
            if left > 0:
                if self._wait is not None and left > self._wait:
                    raise RateLimitedError(
                        f"the server's rate limit pauses every request for {left:.1f} s more, longer "
                        f"than this request's timeout ({self._wait:g} s); try again then",
                        status_code=429,
                        code="RATE_LIMITED",
                        retry_after=left,
                    )
                await asyncio.sleep(left)
                continue
            await gate.acquire(first=True)
            if not gate.paused():
                return gate.count_send()
            gate.release()  # a limit's 429 came while it waited for the token

    def done(self, taken: float, error: BaseException | None) -> None:
        """Free the slot; an answer tells the budget the rate was fine, a 429 what it shows."""
        try:
            self._gate.answered(taken, error, self._fallback)
        finally:
            self._gate.release()


class UserRequests:
    """The user's requests of one engine, sent on its poller's loop in its budget.

    ``send(lambda client: client.cancel_task(task_id))`` is a future of the answer; the
    client is made on first use and closed when the poller stops.
    """

    def __init__(self, poller: Host, api_key: str, base_url: str, *, timeout: float | None) -> None:
        self._poller, self._key, self._base_url, self._timeout = poller, _Secret(api_key), base_url, timeout
        self._client: AsyncClient | None = None

    def __repr__(self) -> str:
        return f"UserRequests(base_url={self._base_url!r}, api_key=<redacted>)"

    def send(self, request: Callable[[AsyncClient], Awaitable[T]]) -> concurrent.futures.Future[T]:
        """Run ``request(client)`` on the poller's loop (``RuntimeError`` once it stopped)."""
        return self._poller.spawn(lambda: self._run(request))

    async def _run(self, request: Callable[[AsyncClient], Awaitable[T]]) -> T:
        if self._client is None:
            self._client = self._make_client()
            self._poller.spawn(self._close_at_the_end)
        return await request(self._client)

    def _make_client(self) -> AsyncClient:
        poller = self._poller
        turns = ActionTurns(poller._gate, wait=self._timeout, fallback=poller.policy.error_backoff)
        return AsyncClient(
            self._key.value,
            self._base_url,
            timeout=self._timeout,
            allow_insecure_http=True,  # the watcher checked the URL
            on_response=poller.clock.observe_date,
            turns=turns,
        )

    async def _close_at_the_end(self) -> None:
        """Held open as a background job: the poller cancels it when it stops."""
        try:
            await asyncio.Event().wait()
        finally:
            client, self._client = self._client, None
            if client is not None:
                await client.aclose()
