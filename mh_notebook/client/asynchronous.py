"""The :class:`AsyncClient`: a thin asyncio sender of the calls :class:`~.core._Core` describes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Protocol, Self, TypeVar

import httpx
from tenacity import AsyncRetrying

from ..errors import InsufficientBalanceError, ModelHunterError
from .answers import with_balance
from .core import _Call, _Core, http_timeout, whole_answer_deadline
from .methods import Spec, _Awaiting
from .retries import RetryPolicy

__all__ = ["AsyncClient", "Turns"]

T = TypeVar("T")


class Turns(Protocol):
    """A request budget that each attempt of an :class:`AsyncClient` takes its turn in
    (the engine's: a watcher's ``submit``, ``cancel``, ``retry`` and ``balance``)."""

    async def take(self) -> float:
        """Wait for this attempt's turn; a number :meth:`done` gets back (its sending rate)."""
        ...

    def done(self, taken: float, error: BaseException | None) -> None:
        """The attempt taken with ``taken`` ended (``error``: how it failed, ``None``: answered)."""
        ...


class AsyncClient(_Awaiting):
    """Asynchronous twin of :class:`Client`: ``await client.get_task(task_id)``.

    Same arguments and behaviour; use it with ``async with`` or call ``aclose()``.
    ``on_response(sent_at, received_at, date_header)`` is called for every answer (error
    answers too), with local wall-clock times: the poller learns the server's clock from it.
    With ``turns``, every attempt (retries too) first waits for its turn there (:class:`Turns`).
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
        allow_insecure_http: bool = False,
        on_response: Callable[[float, float, str | None], None] | None = None,
        turns: Turns | None = None,
    ) -> None:
        self._core = _Core(api_key, base_url, retry or RetryPolicy(), allow_insecure_http)
        self._on_response, self._turns = on_response, turns
        self._deadline = whole_answer_deadline(timeout)
        """The longest one whole answer may take (``None``: no limit)."""
        self._http = httpx.AsyncClient(
            timeout=http_timeout(timeout), transport=transport, limits=limits or httpx.Limits()
        )

    _returns = ("{}", "AsyncIterator[{}]")

    @classmethod
    def _sender(cls, spec: Spec, paged: bool) -> Callable[..., object]:
        """A coroutine method sending ``spec``'s call, or an async generator of its pages."""

        async def send(self: AsyncClient, /, *args: object, **kwargs: object) -> object:
            return await self._run(spec(self._core, *args, **kwargs))

        async def pages(self: AsyncClient, /, *args: object, **kwargs: object) -> AsyncIterator[object]:
            call: _Call[object] | None = spec(self._core, *args, **kwargs)
            while call is not None:
                page = await self._run(call)
                yield page
                call = call.after(page)

        return cls._signed(pages if paged else send, spec, paged)

    async def _run(self, call: _Call[T]) -> T:
        """``call`` with its retries; a creation refused for the balance says the balance."""
        try:
            return await AsyncRetrying(**self._core.plan.kwargs(call.retry, resend=call.resend))(
                self._once, call
            )
        except InsufficientBalanceError as exc:
            balance = exc.balance
            if balance is None and call.creates:
                with contextlib.suppress(ModelHunterError):
                    balance = (await self.balance(retry=False)).balance
            if balance is None or exc.balance is not None:
                raise
            raise with_balance(exc, balance) from None

    async def _once(self, call: _Call[T]) -> T:
        if self._turns is None:
            return await self._send(call)
        taken = await self._turns.take()
        try:
            result = await self._send(call)
        except BaseException as exc:
            self._turns.done(taken, exc)
            raise
        self._turns.done(taken, None)
        return result

    async def _send(self, call: _Call[T]) -> T:
        sent_at, sent = datetime.now(UTC), time.time()
        try:
            async with asyncio.timeout(self._deadline):  # httpx bounds each read, not the whole answer
                response = await self._http.request(call.method, call.url, **self._core.request(call))
        except TimeoutError:
            slow = httpx.ReadTimeout(f"no whole answer within {self._deadline:g} s (a body that trickles in)")
            raise self._core.transport_error(call, slow, sent_at) from None
        except httpx.TransportError as exc:
            raise self._core.transport_error(call, exc, sent_at) from None
        if self._on_response is not None:
            self._on_response(sent, time.time(), response.headers.get("date"))
        return self._core.read(call, response, sent_at)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
