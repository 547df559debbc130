"""The synchronous :class:`Client`: a thin sender of the calls :class:`~.core._Core` describes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Self, TypeVar

import httpx
from tenacity import Retrying

from ..errors import InsufficientBalanceError, ModelHunterError
from .answers import with_balance
from .core import _Call, _Core, http_timeout
from .methods import Spec, _Blocking
from .retries import RetryPolicy

__all__ = ["Client"]

T = TypeVar("T")


class Client(_Blocking):
    """Synchronous client: ``Client(api_key=None, base_url=None).get_task(task_id)``.

    The key comes from ``api_key``, then ``MODELHUNTER_KEY``, then ``MODELHUNTER_API_KEY``;
    the base URL from ``base_url`` or ``MODELHUNTER_BASE_URL`` (default
    ``https://api.modelhunter.ai``).
    ``timeout`` is per request in seconds (``None``: no limit but 5 s to connect);
    ``retry`` bounds how long transient failures (network errors, 429, 502/503/504,
    non-JSON bodies) are ridden out. A plain ``http://`` URL is refused except to this
    machine, unless ``allow_insecure_http=True``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        self._core = _Core(api_key, base_url, retry or RetryPolicy(), allow_insecure_http)
        self._http = httpx.Client(timeout=http_timeout(timeout), transport=transport)

    _returns = ("{}", "Iterator[{}]")

    @classmethod
    def _sender(cls, spec: Spec, paged: bool) -> Callable[..., object]:
        """A blocking method sending ``spec``'s call, or a generator of its pages."""

        def send(self: Client, /, *args: object, **kwargs: object) -> object:
            return self._run(spec(self._core, *args, **kwargs))

        def pages(self: Client, /, *args: object, **kwargs: object) -> Iterator[object]:
            call: _Call[object] | None = spec(self._core, *args, **kwargs)
            while call is not None:
                page = self._run(call)
                yield page
                call = call.after(page)

        return cls._signed(pages if paged else send, spec, paged)

    def _run(self, call: _Call[T]) -> T:
        """``call`` with its retries; a creation refused for the balance says the balance."""
        try:
            result: T = Retrying(**self._core.plan.kwargs(call.retry, resend=call.resend))(self._once, call)
            return result
        except InsufficientBalanceError as exc:
            balance = exc.balance
            if balance is None and call.creates:
                with contextlib.suppress(ModelHunterError):
                    balance = self.balance(retry=False).balance
            if balance is None or exc.balance is not None:
                raise
            raise with_balance(exc, balance) from None

    def _once(self, call: _Call[T]) -> T:
        sent_at = datetime.now(UTC)
        try:
            response = self._http.request(call.method, call.url, **self._core.request(call))
        except httpx.TransportError as exc:
            raise self._core.transport_error(call, exc, sent_at) from None
        return self._core.read(call, response, sent_at)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
