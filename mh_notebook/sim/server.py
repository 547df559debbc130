"""The embedded ModelHunter simulator: a real HTTP server (aiohttp) on 127.0.0.1.

It speaks the documented API (``../shared/reference/modelhunter-api.md``):

- ``GET /api/v1/tasks/{id}``; ``GET /api/v1/tasks`` (``status``, ``provider``,
  ``modelId``, ``startDate``, ``endDate``, ``limit`` 1-100, ``cursor``; newest first;
  ``pagination: {cursor, hasMore, total}``; items without ``result``, with ``progress``,
  ``cost``, ``started_at`` and ``metadata``);
- ``POST /api/v1/{provider}/{capability}`` for the documented catalogue
  (:data:`~mh_notebook.sim.catalogue.API_ENDPOINTS`; the simulator's earlier model ids
  are served too, under their own providers): validated (``MISSING_PARAMETER`` with
  ``details.field``, ``INVALID_PARAMETER``, ``MODEL_NOT_FOUND``, ``PROVIDER_NOT_FOUND``),
  priced, the balance charged (402 ``INSUFFICIENT_BALANCE`` when too low), answering 202
  with ``estimated_seconds``;
- ``POST /api/v1/tasks/{id}/cancel`` (409 once ended; the docs did not show this request's
  form: assumed) and ``POST /api/v1/tasks/{id}/retry`` (failed or expired only: a new,
  charged task with ``original_task_id``; 409 otherwise); ``GET /api/v1/balance``;
- the documented auth errors: ``AUTH_REQUIRED``, ``AUTH_INVALID_TOKEN``, and the key
  states of :data:`KEY_STATES` set with ``sim.key_state``.

Switches for tests of clients: ``get_has_list_fields`` (default on, or off for every
simulator with ``MH_SIM_GET_HAS_LIST_FIELDS=0``: the docs do not say whether GET carries
the list's fields, so the package is tested both ways); ``drop_creations`` (create the task,
then close the connection) and ``creation_delay``; ``inject_error(status, code)`` (the next
``/api/v1`` request answers that error); ``calls`` counts requests per call.

The account, for list polling: ``others`` (:class:`~.others.Others`, ``MH_SIM_OTHERS``):
someone else creates tasks at a set rate, so pages hold tasks nobody watches;
``list_mode`` (``MH_SIM_LIST``: ``ok``, ``missing``, ``forbidden``, ``garbage``) and
``list_lag`` (``MH_SIM_LIST_LAG``: seconds the list runs behind GET); see
:mod:`.listing`. ``calls`` counts requests by call (``list`` pages, ``get``...), and
``requests_per_task(n)`` turns them into the benchmarks' figure.

Its own endpoints, **not** part of the ModelHunter API:

- ``POST /sim/v1/tasks`` with ``{"model": ..., "type": ..., "prompt": ...}`` (and the
  optional test knobs ``outcome``, ``latency``, ``error_code``, ``error_message``)
  creates a task and answers the task envelope with HTTP 201;
- ``GET /media/{id}/{n}.{format}?expires=..&signature=..`` serves result files.

Time: every duration of the catalogue is divided by ``speed``. Timestamps are real
wall-clock UTC with millisecond precision unless the options below say otherwise.

Real-service conditions (for benchmarks and tests of clients; all off by default, all
constructor arguments that are also plain attributes, settable while serving, and flags of
``mh-notebook sim``):

- ``clock_skew`` (``--clock-skew``): the server's clock runs this many seconds ahead of
  the real one (negative: behind), as a real service's clock is not the client's. It
  shifts every timestamp reported (``created_at``, ``completed_at``) and the HTTP ``Date``
  header of every response. The true timeline (phases, URL expiry, ``timeline()``'s epoch
  floats) stays on the real clock.
- ``whole_seconds`` (``--whole-seconds``): timestamps are reported floored to whole
  seconds (``2025-01-15T10:00:00Z``), like the API documentation's example bodies.
- ``rate_limit``, ``rate_burst`` (``--rate-limit``, ``--rate-burst``): ``GET
  /api/v1/tasks/{id}`` is limited per API key (the ``Authorization`` header) by a token
  bucket of ``rate_limit`` requests per real second (regardless of ``speed``) and
  ``rate_burst`` tokens (default ``max(1, rate_limit)``). Over the limit the answer is 429
  with the ``RATE_LIMITED`` error envelope and ``Retry-After`` in whole seconds (the
  ceiling of the wait for the next token, at least 1); rejected requests take no token.
  List pages (``GET /api/v1/tasks``) take tokens from the same bucket.

Every response the application answers carries a ``Date`` header (HTTP-date, 1 s
resolution) from the server's clock, skew included.

Expiry: a result URL is valid for ``900 / speed`` seconds from when it was issued
(at completion, then at each re-issue). After that the media URL answers 403, and the
next ``GET`` of the task answers ``status: "expired"`` (no ``result``) and re-issues the
URL; the ``GET`` after that answers ``succeeded`` with the fresh URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import hmac
import json
import math
import os
import random
import secrets
import threading
import time
import urllib.parse
from collections import Counter, deque
from dataclasses import replace
from typing import Any, Self

from aiohttp import web

from .api import SimError, envelope, parse_creation, parse_list_query
from .catalogue import ERRORS, SIM_ENDPOINTS, ModelSpec, endpoint_of
from .faults import HTML_PAGE, KEY_STATES, Faults, TokenBucket, envelope_error, rate_limited
from .listing import LIST_LAG_ENV, check_list_mode, list_body, list_refusal
from .media import MediaFile, media_for
from .others import Others, drive_others
from .task import Knobs, SimTask, iso

__all__ = ["KEY_STATES", "Faults", "SimError", "SimTask", "Simulator"]

URL_LIFETIME = 900.0
_OUTCOMES = ("succeeded", "failed", "cancelled")
GET_LIST_FIELDS_ENV = "MH_SIM_GET_HAS_LIST_FIELDS"
"""Set to ``0`` to make every simulator's GET leave out the list-only fields by default
(``progress``, ``cost``, ``started_at``, ``metadata``): runs a whole test suite that way."""


def _error(exc: SimError) -> web.Response:
    return web.json_response(envelope(exc), status=exc.status)


class Simulator:
    """A ModelHunter API simulator on 127.0.0.1, for tests, demos and benchmarks.

    ``with Simulator(seed=0, speed=50) as sim:`` starts it in a background thread on a
    free port; ``sim.url`` and ``sim.api_key`` are what a client needs, and
    ``sim.submit(model="viduq3-turbo")`` creates a task.

    Real-service conditions (see the module docstring), all settable after construction:

    - ``clock_skew``: seconds the server's clock runs ahead of the real one (negative:
      behind); shifts ``created_at``, ``completed_at`` and every ``Date`` header.
    - ``whole_seconds``: report timestamps floored to whole seconds instead of milliseconds.
    - ``rate_limit``: requests per real second allowed on ``GET /api/v1/tasks/{id}`` per API
      key (``None``: unlimited); over it, 429 ``RATE_LIMITED`` with ``Retry-After``.
    - ``rate_burst``: the token bucket's size (``None``: ``max(1, rate_limit)``).

    The account: ``balance`` (USD, default 10,000 so long test runs never run dry; each
    creation and retry takes its price), ``key_state`` (see :data:`KEY_STATES`),
    ``get_has_list_fields`` (default ``True``: GET carries ``progress``, ``cost``,
    ``started_at`` and ``metadata`` as list items do, so demos show cost and progress;
    ``False``, or ``MH_SIM_GET_HAS_LIST_FIELDS=0`` for every simulator, is the other
    reading of the docs), and ``drop_creations``/``creation_delay``/``inject_error`` for
    tests of clients. :meth:`add_key` accepts more keys (accounts); ``requests_by_key``
    counts each key's requests.

    For list polling: ``others`` (someone else's tasks at a set rate; :meth:`spawn_others`
    makes some at once, ``other_ids`` lists them), ``list_mode``, ``list_lag`` and ``list_end_lag`` (see
    :mod:`.listing`), and the counts by call: ``calls``, ``calls_by_key``,
    :meth:`requests_per_task`, :meth:`reset_counts`.
    """

    def __init__(
        self,
        *,
        seed: int | None = 0,
        speed: float = 1.0,
        port: int = 0,
        api_key: str | None = None,
        faults: Faults | None = None,
        fail_rate: float | None = None,
        url_lifetime: float | None = None,
        host: str = "127.0.0.1",
        clock_skew: float = 0.0,
        whole_seconds: bool = False,
        rate_limit: float | None = None,
        rate_burst: float | None = None,
        balance: float = 10_000.0,
        get_has_list_fields: bool | None = None,
        others: Others | None = None,
        list_mode: str | None = None,
        list_lag: float | None = None,
        list_end_lag: float = 0.0,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self.clock_skew = float(clock_skew)
        """Seconds the server's clock runs ahead of the real one (negative: behind)."""
        self.whole_seconds = bool(whole_seconds)
        """Report timestamps floored to whole seconds (else milliseconds)."""
        self._rate_limit: float | None = None
        self._rate_burst: float | None = None
        self.rate_limit = rate_limit
        self.rate_burst = rate_burst
        self._buckets: dict[str, TokenBucket] = {}
        self.speed = float(speed)
        self.url_lifetime = URL_LIFETIME / self.speed if url_lifetime is None else float(url_lifetime)
        """Seconds a result URL stays valid (default 15 minutes divided by ``speed``)."""
        self.api_key = api_key or "river_test_sim" + secrets.token_hex(12)
        self.faults = faults or Faults()
        self.fail_rate = fail_rate
        self._host, self._port = host, port
        self._rng = random.Random(seed)
        self._fault_rng = random.Random(None if seed is None else seed + 1)
        self._secret = secrets.token_bytes(16)
        self._tasks: dict[str, SimTask] = {}
        self._script: deque[str] = deque()
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        """Status requests received per task id (faulted answers included)."""
        self.request_log: deque[tuple[float, str, int]] = deque(maxlen=500_000)
        """``(time, task_id, http_status)`` of recent status requests; 0 = dropped."""
        self._extra_keys: list[str] = []
        self.requests_by_key: Counter[tuple[str, str | None]] = Counter()
        """Status requests per ``(task_id, key)``: the accepted key the request carried, or
        ``None`` for any other ``Authorization`` (a refused key is never stored)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.balance = float(balance)
        """The account's balance in USD; each creation (and retry) takes its price."""
        if get_has_list_fields is None:
            get_has_list_fields = os.environ.get(GET_LIST_FIELDS_ENV, "1") != "0"
        self.get_has_list_fields = get_has_list_fields
        """Whether ``GET /api/v1/tasks/{id}`` carries ``progress``, ``cost``, ``started_at``
        and ``metadata`` as list items do (the docs do not say)."""
        self.key_state: str | None = None
        """``None`` (the key works) or a :data:`KEY_STATES` name: its error answers."""
        self.drop_creations = 0
        """How many coming creation/retry requests create their task, then close the
        connection without answering (a lost answer, for tests of clients)."""
        self.creation_delay = 0.0
        """Seconds a creation/retry answer is held back after the task exists."""
        self._errors: deque[SimError] = deque()
        self.calls: Counter[str] = Counter()
        """Requests received per documented call: ``get``, ``list``, ``create``, ``cancel``,
        ``retry``, ``balance`` (refused and dropped ones included)."""
        self.calls_by_key: Counter[tuple[str, str | None]] = Counter()
        """Requests per ``(call, key)``, as :attr:`requests_by_key` counts them."""
        self.others = others if others is not None else Others.from_environment()
        """Tasks someone else creates on the account while serving (see :mod:`.others`)."""
        self.other_ids: list[str] = []
        """Ids of the tasks created as someone else's, oldest first."""
        self._others_rng = random.Random(None if seed is None else seed + 2)
        self._others_task: asyncio.Task[None] | None = None
        self._list_mode = check_list_mode(list_mode)
        self.list_lag = float(os.environ.get(LIST_LAG_ENV, "0") if list_lag is None else list_lag)
        """Seconds the list runs behind the tasks' own GET (see :mod:`.listing`)."""
        self.list_end_lag = float(list_end_lag)
        """Seconds after its end the list still shows a task as before it (see :mod:`.listing`)."""
        self._order: list[SimTask] = []
        self._created_at: list[float] = []

    @property
    def rate_limit(self) -> float | None:
        """Status requests per real second allowed per API key; ``None``: unlimited."""
        return self._rate_limit

    @rate_limit.setter
    def rate_limit(self, value: float | None) -> None:
        if value is not None and not value > 0:
            raise ValueError(f"rate_limit must be > 0 or None, got {value!r}")
        self._rate_limit = None if value is None else float(value)

    @property
    def rate_burst(self) -> float | None:
        """Size of each API key's token bucket; ``None``: ``max(1, rate_limit)``."""
        return self._rate_burst

    @rate_burst.setter
    def rate_burst(self, value: float | None) -> None:
        if value is not None and not value >= 1:
            raise ValueError(f"rate_burst must be >= 1 or None, got {value!r}")
        self._rate_burst = None if value is None else float(value)

    def server_time(self) -> float:
        """The server's clock: real time plus ``clock_skew`` (epoch seconds)."""
        return time.time() + self.clock_skew

    def stamp(self, t: float) -> str:
        """How the server reports the real instant ``t``: skewed, in ms or whole seconds."""
        return iso(t + self.clock_skew, self.whole_seconds)

    def add_key(self, key: str | None = None) -> str:
        """Accept another API key besides ``api_key`` (another account on the same API);
        returns it."""
        key = key or "river_test_sim" + secrets.token_hex(12)
        self._extra_keys.append(key)
        return key

    def __repr__(self) -> str:
        return f"Simulator(url={self.url!r}, speed={self.speed:g}, tasks={len(self._tasks)})"

    # ----------------------------------------------------------------- tasks
    def submit(
        self,
        model: str = "viduq3-turbo",
        type: str | None = None,  # noqa: A002 - the API's own name
        prompt: str = "",
        *,
        outcome: str | None = None,
        latency: float | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        input: dict[str, Any] | None = None,  # noqa: A002 - the API's own name
        metadata: dict[str, Any] | None = None,
        endpoint: str | None = None,
    ) -> str:
        """Create a task through the documented creation call's rules and return its id.

        The task is created as ``POST /api/v1/{endpoint}`` would (validated, priced, the
        balance charged); ``endpoint`` defaults to the model's (an earlier simulator id
        keeps its own provider). ``input`` and ``metadata`` are the body's; an empty
        ``prompt`` becomes a placeholder. Simulator extras: ``outcome`` forces
        ``succeeded``/``failed``/``cancelled``; ``latency`` forces the total seconds at
        ``speed=1``; ``error_code``/``error_message`` force the failure. Raises
        :class:`SimError` (a ``ValueError``) for what the API would refuse, an unknown
        model, or a type that does not match it.
        """
        if outcome is not None and outcome not in _OUTCOMES:
            raise ValueError(f"outcome must be one of {_OUTCOMES}, got {outcome!r}")
        try:
            endpoint = endpoint or endpoint_of(model)
        except StopIteration:
            known = ", ".join(dict.fromkeys(m for models in SIM_ENDPOINTS.values() for m in models))
            message = f"unknown model {model!r}; known models: {known}"
            raise SimError(400, "INVALID_REQUEST", message) from None
        spec = SIM_ENDPOINTS.get(endpoint, {}).get(model)
        if spec is not None and type is not None and type != spec.spec.type:
            raise SimError(400, "INVALID_REQUEST", f"model {model!r} makes {spec.spec.type}, not {type!r}")
        inputs = {"prompt": prompt or "a simulated task", **(input or {})}
        if endpoint.split("/", 1)[1].startswith("image-to-"):
            inputs.setdefault("image", "https://cdn.modelhunter.ai/files/sim-input.jpg")
        body = {"model": model, "input": inputs, "metadata": metadata}
        knobs = Knobs(outcome, latency, error_code, error_message)
        return self.create(endpoint, body, knobs).id

    def create(
        self, endpoint: str, body: object, knobs: Knobs | None = None, original: str | None = None
    ) -> SimTask:
        """Validate, price and charge a creation body and create its task (what ``POST
        /api/v1/{endpoint}`` does). Raises :class:`SimError` with the API's answer."""
        request = parse_creation(endpoint, body)
        cost = request.model.cost(request.inputs)
        knobs = knobs or Knobs()
        with self._lock:
            if cost > self.balance + 1e-9:
                raise SimError(
                    402,
                    "INSUFFICIENT_BALANCE",
                    f"Insufficient balance: this task costs ${cost:.4f}, the balance is ${self.balance:.4f}",
                    {"balance": round(self.balance, 4), "required": cost},
                )
            self.balance -= cost
            task = self._new_task(request.model.spec, str(request.inputs["prompt"]), knobs)
            task.seq, task.endpoint, task.cost = len(self._tasks) + 1, endpoint, cost
            task.inputs, task.metadata = request.inputs, request.metadata
            task.webhook_url = request.webhook_url
            task.original_task_id = original
            self._tasks[task.id] = task
            self._order.append(task)
            self._created_at.append(task.created)
        return task

    def _new_task(self, spec: ModelSpec, prompt: str, knobs: Knobs) -> SimTask:
        outcome, latency, error_code, error_message = knobs
        rng = self._rng
        fail_rate = spec.fail_rate if self.fail_rate is None else self.fail_rate
        outcome = outcome or ("failed" if rng.random() < fail_rate else "succeeded")
        total = latency if latency is not None else self._draw_latency(spec)
        pending = min(total * 0.1, rng.uniform(0.2, 1.5))
        queued = pending + (total - pending) * rng.uniform(0.05, 0.2)
        code, message = ERRORS[rng.randrange(len(ERRORS))]
        if outcome == "failed" and latency is None:
            if code == "PROVIDER_ERROR" and message.startswith("Content moderation"):
                total = pending = queued = rng.uniform(0.5, 3.0)  # rejected before it is queued
            else:
                total = queued + (total - queued) * rng.uniform(0.1, 1.0)  # fails while running
        now = max(time.time(), self._created_at[-1] if self._created_at else 0.0)  # never backwards
        error = None
        if outcome == "failed":
            error = (error_code or code, error_message if error_message is not None else message)
        task = SimTask(
            id=f"task_{secrets.token_hex(6)}",  # unique across runs: journals outlive simulators
            spec=spec,
            prompt=prompt,
            created=now,
            queued=now + pending / self.speed,
            running=now + queued / self.speed,
            end=now + total / self.speed,
            outcome=outcome,
            error=error,
            media=media_for(spec.format, rng.randrange(1 << 16)),
        )
        if outcome == "cancelled":
            task.cancelled_at = task.running + (task.end - task.running) / 2
        task.url_issued = task.end
        return task

    def _draw_latency(self, spec: ModelSpec) -> float:
        for _ in range(100):  # a truncated log-normal: redraw what falls outside the range
            value = spec.median * math.exp(self._rng.gauss(0.0, spec.sigma))
            if spec.low <= value <= spec.high:
                return value
        return spec.median

    def cancel(self, task_id: str) -> bool:
        """Cancel a task that has not ended; return whether it was cancelled."""
        task = self._tasks[task_id]
        now = time.time()
        if now >= task.end or task.cancelled_at is not None:
            return False
        task.cancelled_at = now
        return True

    def timeline(self, task_id: str) -> dict[str, Any]:
        """The true timeline of a task: real wall-clock seconds of each phase and the
        outcome, with ``created_at``/``completed_at`` as the server reports them (skewed
        by ``clock_skew``, whole seconds if ``whole_seconds``)."""
        t = self._tasks[task_id]
        end = t.cancelled_at if t.cancelled_at is not None and t.cancelled_at < t.end else t.end
        outcome = "cancelled" if end != t.end else t.outcome
        return {
            "id": t.id,
            "model": t.spec.model,
            "provider": t.spec.provider,
            "type": t.spec.type,
            "created": t.created,
            "queued": t.queued,
            "running": t.running,
            "end": end,
            "outcome": outcome,
            "created_at": self.stamp(t.created),
            "completed_at": self.stamp(end),
        }

    def ordered(self) -> tuple[list[SimTask], list[float]]:
        """Every task in creation order and their creation times (copies)."""
        with self._lock:
            return self._order[:], self._created_at[:]

    def spawn_others(self, n: int = 1, others: Others | None = None) -> list[str]:
        """Create ``n`` tasks as someone else would (``others``: default :attr:`others`)."""
        for _ in range(n):
            self._spawn_other(others or self.others)
        return self.other_ids[-n:] if n else []

    def _spawn_other(self, others: Others) -> None:
        model, outcome = others.draw(self._others_rng)
        with contextlib.suppress(SimError):  # e.g. the balance ran out: they stop too
            self.other_ids.append(self.submit(model=model, outcome=outcome, prompt="someone else's"))

    @property
    def list_mode(self) -> str:
        """``ok``, or the list switched off: ``missing`` (404), ``forbidden`` (403),
        ``garbage`` (a 200 that is not a page); see :mod:`.listing`."""
        return self._list_mode

    @list_mode.setter
    def list_mode(self, mode: str) -> None:
        self._list_mode = check_list_mode(mode)

    def request_counts(self) -> dict[str, int]:
        """Requests received so far by call: ``list`` (pages), ``get``, ``create``..."""
        return dict(self.calls)

    def requests_per_task(self, tasks: int, *, calls: tuple[str, ...] = ("list", "get")) -> float:
        """Requests of these calls (list pages and GETs by default) per watched task."""
        return sum(self.calls[c] for c in calls) / max(1, tasks)

    def reset_counts(self) -> None:
        """Zero every request counter (``calls``, ``requests``, the per-key ones)."""
        for counter in (self.calls, self.requests, self.calls_by_key, self.requests_by_key):
            counter.clear()

    @property
    def task_ids(self) -> list[str]:
        """Ids of every task created so far, oldest first."""
        return list(self._tasks)

    def set_status(self, task_id: str, status: str | None) -> None:
        """Force the status the API reports for a task (e.g. a new one, ``"paused"``);
        ``None`` goes back to the timeline. For tests of forward compatibility."""
        self._tasks[task_id].extra["status"] = status

    def expire_now(self, task_id: str) -> None:
        """Make a succeeded task's result URL expire at once (for tests)."""
        task = self._tasks[task_id]
        task.url_issued = min(task.url_issued, time.time() - self.url_lifetime - 1)

    # ------------------------------------------------------------ rendering
    def data(self, task: SimTask, now: float, *, view: str = "get") -> dict[str, Any]:
        """The ``data`` object the API would answer for ``task`` at ``now``.

        ``view``: ``"get"`` (the task's own GET: ``result``, and the list's fields if
        ``get_has_list_fields``), ``"list"`` (a list item: no ``result``, never re-issues
        an expired URL).
        """
        spec = task.spec
        data: dict[str, Any] = {
            "id": task.id,
            "type": spec.type,
            "status": "pending",
            "provider": spec.provider,
            "model": spec.model,
        }
        cancelled = (
            task.cancelled_at is not None and task.cancelled_at <= now and task.cancelled_at < task.end
        )
        if cancelled:
            data["status"] = "cancelled"
            data["completed_at"] = self.stamp(task.cancelled_at or now)
        elif now >= task.end:
            data["completed_at"] = self.stamp(task.end)
            self._render_end(task, now, data, reissue=view == "get")
        elif now >= task.running:
            data["status"] = "running"
        elif now >= task.queued:
            data["status"] = "queued"
        data["created_at"] = self.stamp(task.created)
        if task.extra.get("status"):
            data["status"] = task.extra["status"]
            data.pop("completed_at", None)
            data.pop("result", None)
        if task.original_task_id is not None:
            data["original_task_id"] = task.original_task_id
        if view == "list":
            data.pop("result", None)
        if view == "list" or self.get_has_list_fields:
            data.update(self._list_fields(task, now, data["status"]))
        return data

    def _list_fields(self, task: SimTask, now: float, status: str) -> dict[str, Any]:
        """``progress`` (0-100), ``cost``, ``started_at`` and ``metadata`` of a task."""
        stop = min(now, task.end, task.cancelled_at if task.cancelled_at is not None else task.end)
        ran = task.running < task.end and stop >= task.running
        if status in ("succeeded", "expired"):
            progress = 100
        elif ran and task.end > task.running:
            progress = min(99, int(100 * (stop - task.running) / (task.end - task.running)))
        else:
            progress = 0
        return {
            "progress": progress,
            "cost": task.cost,
            "started_at": self.stamp(task.running) if ran else None,
            "metadata": task.metadata,
        }

    def _render_end(self, task: SimTask, now: float, data: dict[str, Any], *, reissue: bool = True) -> None:
        if task.outcome == "failed":
            code, message = task.error or ("PROVIDER_ERROR", "failed")
            data.update(status="failed", error={"code": code, "message": message})
            return
        if now >= task.url_issued + self.url_lifetime:
            data["status"] = "expired"
            if reissue:
                task.url_issued, task.url_version = now, task.url_version + 1
            return
        data["status"] = "succeeded"
        expires = int((task.url_issued + self.url_lifetime) * 1000)
        item: dict[str, Any] = {
            "url": self._media_url(task, expires),
            "format": task.media.format,
            "size_bytes": len(task.media.data),
        }
        if task.media.duration is not None:
            item["duration"] = task.media.duration
        data["result"] = [item]

    def _sign(self, task_id: str, expires: int) -> str:
        msg = f"{task_id}/0/{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:32]

    def _media_url(self, task: SimTask, expires: int) -> str:
        sig = self._sign(task.id, expires)
        path = urllib.parse.quote(task.id, safe="")
        return f"{self.url}/media/{path}/0.{task.media.format}?expires={expires}&signature={sig}"

    # ------------------------------------------------------------ handlers
    def _authorised(self, request: web.Request) -> bool:
        return self._key_of(request) is not None

    def _key_of(self, request: web.Request) -> str | None:
        """The accepted key the request's ``Authorization`` carries, else ``None``."""
        sent = request.headers.get("Authorization", "").encode()
        keys = (self.api_key, *self._extra_keys)
        return next((k for k in keys if hmac.compare_digest(sent, f"Bearer {k}".encode())), None)

    def _refusal(self, request: web.Request, *, creates: bool = False) -> SimError | None:
        """The documented auth error for this request, or ``None`` if it may go on."""
        if self._errors:
            with self._lock:
                if self._errors:
                    return self._errors.popleft()
        header = request.headers.get("Authorization", "")
        if not header:
            return SimError(401, "AUTH_REQUIRED", "Missing API key: send Authorization: Bearer <key>")
        if not self._authorised(request):
            return SimError(401, "AUTH_INVALID_TOKEN", "Invalid or missing API key")
        state = self.key_state
        if state is None or (state == "permission_denied" and not creates):
            return None
        if state not in KEY_STATES:
            raise ValueError(f"unknown key_state {state!r}; known: {sorted(KEY_STATES)}")
        return SimError(*KEY_STATES[state])

    async def _get_task(self, request: web.Request) -> web.StreamResponse:
        task_id = request.match_info["id"]
        self.requests[task_id] += 1
        self.calls["get"] += 1
        self.requests_by_key[(task_id, self._key_of(request))] += 1
        self.calls_by_key[("get", self._key_of(request))] += 1
        wait = self._rate_wait(request)
        if wait > 0:
            self._log(task_id, 429)
            return rate_limited(wait)
        fault = self._script.popleft() if self._script else self.faults.pick(self._fault_rng.random())
        if fault is not None and fault not in ("slow", "ok"):
            return await self._fault(request, task_id, fault)
        if fault == "slow":
            await asyncio.sleep(self.faults.slow_seconds)
        return self._answer(request, task_id)

    def _rate_wait(self, request: web.Request) -> float:
        """0 if the request is within the API key's limit (and takes a token), else the
        seconds until a token is available."""
        rate = self._rate_limit
        if rate is None:
            return 0.0
        burst = self._rate_burst if self._rate_burst is not None else max(1.0, rate)
        key = request.headers.get("Authorization", "")
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(burst, now)
        return bucket.take(rate, burst, now)

    async def _date_header(self, request: web.Request, response: web.StreamResponse) -> None:
        """aiohttp dates responses from the local clock; date them from the server's."""
        response.headers["Date"] = email.utils.formatdate(self.server_time(), usegmt=True)

    def _answer(self, request: web.Request, task_id: str) -> web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            self._log(task_id, refusal.status)
            return _error(refusal)
        task = self._tasks.get(task_id)
        if task is None:
            self._log(task_id, 404)
            return envelope_error(404, "TASK_NOT_FOUND", f"Task {task_id} not found")
        self._log(task_id, 200)
        body = {"success": True, "data": self.data(task, time.time())}
        return web.Response(text=json.dumps(body), content_type="application/json")

    def _log(self, task_id: str, status: int) -> None:
        self.request_log.append((time.time(), task_id, status))

    async def _fault(self, request: web.Request, task_id: str, fault: str) -> web.StreamResponse:
        if fault == "429":
            self._log(task_id, 429)
            wait = self.faults.retry_after
            header = f"{wait:g}"
            if self.faults.retry_after_date:
                header = email.utils.formatdate(self.server_time() + wait, usegmt=True)
            return envelope_error(429, "RATE_LIMITED", "Too many requests", **{"Retry-After": header})
        if fault in ("5xx", "500", "502", "503", "504"):
            status = self._fault_rng.choice((500, 502, 503, 504)) if fault == "5xx" else int(fault)
            self._log(task_id, status)
            if self._fault_rng.random() < 0.5:
                return envelope_error(status, "INTERNAL_ERROR", "Upstream failure")
            return web.Response(
                status=status, text=HTML_PAGE.format(f"{status} Bad Gateway"), content_type="text/html"
            )
        if fault == "html":
            self._log(task_id, 200)
            return web.Response(text=HTML_PAGE.format("Please wait..."), content_type="text/html")
        if fault == "truncated":
            full = self._answer(request, task_id)
            text = full.text or ""
            return web.Response(
                status=full.status, text=text[: len(text) // 2], content_type="application/json"
            )
        self._log(task_id, 0)  # drop
        if request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError  # aiohttp drops the request without answering

    async def _sim_create(self, request: web.Request) -> web.Response:
        """``POST /sim/v1/tasks``: a creation with the simulator's extras (201)."""
        if not self._authorised(request):
            return envelope_error(401, "AUTH_INVALID_TOKEN", "Invalid or missing API key")
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            task_id = self.submit(
                model=str(body.get("model", "")),
                type=body.get("type"),
                prompt=str(body.get("prompt", "")),
                outcome=body.get("outcome"),
                latency=body.get("latency"),
                error_code=body.get("error_code"),
                error_message=body.get("error_message"),
                input=body.get("input"),
                metadata=body.get("metadata"),
            )
        except SimError as exc:
            return _error(exc)
        except (ValueError, TypeError) as exc:
            return envelope_error(400, "INVALID_REQUEST", str(exc))
        data = self.data(self._tasks[task_id], time.time())
        return web.json_response({"success": True, "data": data}, status=201)

    async def _create(self, request: web.Request) -> web.Response:
        """``POST /api/v1/{provider}/{capability}``: the documented creation (202)."""
        self.calls["create"] += 1
        endpoint = f"{request.match_info['provider']}/{request.match_info['capability']}"
        try:
            self._check(request, creates=True)
            try:
                body = await request.json()
            except ValueError:
                raise SimError(400, "VALIDATION_ERROR", "The request body is not JSON") from None
            task = self.create(endpoint, body)
        except SimError as exc:
            return _error(exc)
        data = {
            "id": task.id,
            "status": "pending",
            "type": endpoint.split("/", 1)[1],  # the capability, as documented
            "provider": task.spec.provider,
            "model": task.spec.model,
            "created_at": self.stamp(task.created),
            "estimated_seconds": self._estimate(task),
        }
        return await self._created(request, data)

    def _estimate(self, task: SimTask) -> float:
        return round(task.spec.median / self.speed, 3)

    async def _created(self, request: web.Request, data: dict[str, Any]) -> web.Response:
        """Answer a creation, or lose the answer (``drop_creations``, ``creation_delay``)."""
        if self.creation_delay > 0:
            await asyncio.sleep(self.creation_delay)
        with self._lock:
            drop, self.drop_creations = self.drop_creations > 0, max(0, self.drop_creations - 1)
        if drop:
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError  # the task exists; its answer is lost
        return web.json_response({"success": True, "data": data}, status=202)

    def _check(self, request: web.Request, *, creates: bool = False) -> None:
        refusal = self._refusal(request, creates=creates)
        if refusal is not None:
            raise refusal

    def _task(self, request: web.Request) -> SimTask:
        task_id = request.match_info["id"]
        task = self._tasks.get(task_id)
        if task is None:
            raise SimError(404, "TASK_NOT_FOUND", f"Task {task_id} not found")
        return task

    async def _cancel(self, request: web.Request) -> web.Response:
        """``POST /api/v1/tasks/{id}/cancel``: 409 once the task has ended."""
        self.calls["cancel"] += 1
        try:
            self._check(request)
            task = self._task(request)
            if not self.cancel(task.id):
                status = self.data(task, time.time(), view="list")["status"]
                raise SimError(409, "TASK_ALREADY_ENDED", f"Task {task.id} has already ended ({status})")
        except SimError as exc:
            return _error(exc)
        return web.json_response({"success": True, "data": self.data(task, time.time())})

    async def _retry(self, request: web.Request) -> web.Response:
        """``POST /api/v1/tasks/{id}/retry``: a new task (charged again) for a failed or
        expired one; 409 for any other status."""
        self.calls["retry"] += 1
        try:
            self._check(request, creates=True)
            old = self._task(request)
            status = self.data(old, time.time(), view="list")["status"]
            if status not in ("failed", "expired"):
                raise SimError(
                    409,
                    "TASK_NOT_RETRYABLE",
                    f"Only failed or expired tasks can be retried; task {old.id} is {status}",
                )
            body = {"model": old.spec.model, "input": old.inputs, "metadata": old.metadata}
            task = self.create(old.endpoint, body, original=old.id)
        except SimError as exc:
            return _error(exc)
        data = self.data(task, time.time()) | {"estimated_seconds": self._estimate(task)}
        return await self._created(request, data)

    async def _list(self, request: web.Request) -> web.Response:
        """``GET /api/v1/tasks``: filters, newest first, cursor pagination (:mod:`.listing`).
        Pages share the key's rate limit with GETs."""
        self.calls["list"] += 1
        self.calls_by_key[("list", self._key_of(request))] += 1
        try:
            self._check(request)
            refusal = list_refusal(self._list_mode)
            if refusal is not None:
                return refusal
            wait = self._rate_wait(request)
            if wait > 0:
                self.calls["list limited"] += 1
                return rate_limited(wait)
            query = parse_list_query(dict(request.query))
        except SimError as exc:
            return _error(exc)
        return web.json_response(list_body(self, query, time.time()))

    async def _balance(self, request: web.Request) -> web.Response:
        """``GET /api/v1/balance``."""
        self.calls["balance"] += 1
        try:
            self._check(request)
        except SimError as exc:
            return _error(exc)
        data = {
            "balance": round(self.balance, 4),
            "billingMode": "prepaid",
            "monthlySpendLimit": None,
            "autoTopUpEnabled": False,
            "autoTopUpThreshold": None,
            "autoTopUpAmount": None,
        }
        return web.json_response({"success": True, "data": data})

    async def _media(self, request: web.Request) -> web.StreamResponse:
        task = self._tasks.get(request.match_info["id"])
        try:
            expires = int(request.query.get("expires", ""))
        except ValueError:
            expires = -1
        sig = request.query.get("signature", "")
        if task is None or not hmac.compare_digest(sig, self._sign(task.id, expires)):
            return web.Response(status=403, text="invalid signature")
        current = int((task.url_issued + self.url_lifetime) * 1000)
        if time.time() * 1000 >= expires or expires > current:
            return web.Response(status=403, text="URL expired")
        return _serve_bytes(request, task.media)

    def _app(self) -> web.Application:
        app = web.Application()
        app.on_response_prepare.append(self._date_header)
        app.router.add_get("/api/v1/tasks", self._list)
        app.router.add_get("/api/v1/tasks/{id}", self._get_task)
        app.router.add_post("/api/v1/tasks/{id}/cancel", self._cancel)
        app.router.add_post("/api/v1/tasks/{id}/retry", self._retry)
        app.router.add_get("/api/v1/balance", self._balance)
        app.router.add_post("/api/v1/{provider}/{capability}", self._create)
        app.router.add_post("/sim/v1/tasks", self._sim_create)
        app.router.add_get("/media/{id}/{name}", self._media)
        return app

    # ------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Start serving in a daemon thread; returns once the port is bound."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(ready, errors), name="mh-sim", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            self._thread = None
            raise errors[0]
        return self

    def _serve(self, ready: threading.Event, errors: list[BaseException]) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._start_site())
        except BaseException as exc:  # noqa: BLE001 - handed to start()
            errors.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        if self._others_task is not None:
            self._others_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._others_task)
        loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
        loop.close()

    async def _start_site(self) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self._host}:{port}"
        self._others_task = asyncio.ensure_future(
            drive_others(lambda: self.others, lambda: self.speed, self._spawn_other)
        )

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (for the command line)."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, *faults: str) -> None:
        """Answer the next status requests with these faults, in order, then as usual.

        Names: ``429``, ``5xx``, ``500``, ``502``, ``503``, ``504``, ``html``,
        ``truncated``, ``drop``, ``slow``; ``ok`` answers normally.
        """
        known = {"429", "5xx", "500", "502", "503", "504", "html", "truncated", "drop", "slow", "ok"}
        unknown = [f for f in faults if f not in known]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {sorted(known)}")
        self._script.extend(faults)

    def inject_error(
        self, status: int, code: str, message: str = "injected error", details: dict[str, Any] | None = None
    ) -> None:
        """Answer the next ``/api/v1`` request (any call) with this error envelope, once."""
        with self._lock:
            self._errors.append(SimError(status, code, message, details))

    def with_faults(self, **rates: Any) -> Faults:
        """Set new fault rates (keyword arguments of :class:`Faults`); returns them."""
        self.faults = replace(Faults(), **rates)
        return self.faults


def _serve_bytes(request: web.Request, media: MediaFile) -> web.Response:
    """Serve ``media`` with single-range support (browsers seek video with Range)."""
    data, size = media.data, len(media.data)
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-store"}
    rng = request.http_range
    if rng.start is None and rng.stop is None:
        return web.Response(body=data, content_type=media.content_type, headers=headers)
    start, stop, _ = rng.indices(size)
    if start >= size or stop <= start:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    return web.Response(status=206, body=data[start:stop], content_type=media.content_type, headers=headers)
