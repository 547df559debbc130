"""The poller's thread: one daemon thread running one asyncio loop, started and stopped once.

It runs a main coroutine until that returns, runs callbacks and coroutines handed to it
from any thread, and keeps the background jobs it was given so they can be cancelled
when the main coroutine ends. What the main coroutine does is the poller's business.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import TypeVar

__all__ = ["LoopThread"]

log = logging.getLogger("mh_notebook.poller")

T = TypeVar("T")


class LoopThread:
    """A daemon thread owning one asyncio loop (:attr:`loop`); thread-safe to call from anywhere."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.stopping = False
        """True from :meth:`stop` (or the main coroutine's end) on."""
        self._jobs: set[asyncio.Task[object]] = set()
        self._started = threading.Event()
        self._startup_error: BaseException | None = None
        self._main: Callable[[], Awaitable[None]] | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self, main: Callable[[], Awaitable[None]]) -> None:
        """Run ``main()`` in the thread; return once it calls :meth:`ready`. If it fails
        before that, its error is raised here."""
        self._main = main
        self._thread.start()
        self._started.wait()
        if self._startup_error is not None:
            self._thread.join(10)
            raise self._startup_error

    def ready(self) -> None:
        """Called by the main coroutine once it is set up: :meth:`start` returns."""
        self._started.set()

    @property
    def running(self) -> bool:
        """True until :meth:`stop` has finished."""
        return self._thread.is_alive() and not self.stopping

    @property
    def in_thread(self) -> bool:
        """True when called from this thread (a callback, a tick)."""
        return threading.current_thread() is self._thread

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` in the thread, soon (thread-safe)."""
        if self.loop.is_closed():
            raise RuntimeError("the poller has been stopped")
        self.loop.call_soon_threadsafe(fn, *args)

    def submit(self, make: Callable[[], Coroutine[object, object, T]]) -> concurrent.futures.Future[T]:
        """Run the coroutine ``make()`` on the loop; a future of its result."""
        if self.loop.is_closed():
            raise RuntimeError("the poller has been stopped")
        return asyncio.run_coroutine_threadsafe(make(), self.loop)

    def spawn(self, make: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        """Run ``make()`` as a background job on the loop, cancelled when the main coroutine
        ends; a future of its result."""
        if self.loop.is_closed() or self.stopping:
            raise RuntimeError("the poller has been stopped")
        return asyncio.run_coroutine_threadsafe(self._job(make), self.loop)

    def jobs(self) -> list[asyncio.Task[object]]:
        """The background jobs still running (loop thread)."""
        return list(self._jobs)

    def stop(self, timeout: float, wake: Callable[[], None]) -> None:
        """Ask the main coroutine to end (``wake`` runs in the thread to tell it), and wait
        up to ``timeout`` seconds for the thread to end (no wait from the thread itself)."""
        if not self._thread.is_alive():
            return
        self.stopping = True
        with contextlib.suppress(RuntimeError):
            self.call_soon(wake)
        if not self.in_thread:
            self._thread.join(timeout)

    async def _job(self, make: Callable[[], Awaitable[T]]) -> T:
        job = asyncio.current_task()
        assert job is not None  # a coroutine run by the loop
        self._jobs.add(job)
        try:
            return await make()
        finally:
            self._jobs.discard(job)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            assert self._main is not None  # set by start()
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # a failed start is raised in start()
            if not self._started.is_set():
                self._startup_error = exc
            else:
                log.exception("the poller thread failed")
        finally:
            self._started.set()
            self.stopping = True
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()
