"""Faults a real service shows, for tests of clients: error answers, rate limits, key states."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from aiohttp import web

__all__ = ["HTML_PAGE", "KEY_STATES", "Faults", "TokenBucket", "envelope_error", "rate_limited"]

KEY_STATES: dict[str, tuple[int, str, str]] = {
    "revoked": (403, "KEY_REVOKED", "This API key has been revoked"),
    "expired": (403, "KEY_EXPIRED", "This API key has expired"),
    "forbidden": (403, "FORBIDDEN", "This API key may not access this resource"),
    "permission_denied": (403, "KEY_PERMISSION_DENIED", "This API key lacks the permission to create tasks"),
    "token_expired": (401, "AUTH_TOKEN_EXPIRED", "The authentication token has expired"),
}
"""``Simulator.key_state`` values and the error each gives (``permission_denied`` refuses
creations and retries only; the others refuse every ``/api/v1`` request)."""


@dataclass(frozen=True)
class Faults:
    """Rates (0..1, per status request) of injected faults; they add up to at most 1."""

    rate_429: float = 0.0
    """429 with the error envelope and ``Retry-After: retry_after``."""
    retry_after: float = 1.0
    retry_after_date: bool = False
    """Send that ``Retry-After`` as an HTTP date on the server's clock (skew included)."""
    rate_5xx: float = 0.0
    """500/502/503/504, half with the JSON envelope and half with an HTML page."""
    rate_html: float = 0.0
    """200 with a proxy's HTML page instead of JSON."""
    rate_truncated: float = 0.0
    """200 with the JSON body cut in half."""
    rate_drop: float = 0.0
    """The connection is closed without an answer."""
    rate_slow: float = 0.0
    """The right answer, after ``slow_seconds``."""
    slow_seconds: float = 2.0

    def pick(self, r: float) -> str | None:
        """The fault for a uniform draw ``r`` in [0, 1), or ``None``."""
        for name in ("429", "5xx", "html", "truncated", "drop", "slow"):
            rate = getattr(self, f"rate_{name}")
            if r < rate:
                return name
            r -= rate
        return None


class TokenBucket:
    """A token bucket on real (monotonic) time; a refused request takes no token."""

    __slots__ = ("last", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens, self.last = tokens, now

    def take(self, rate: float, burst: float, now: float) -> float:
        """Take a token and return 0, or return the seconds until one is available."""
        self.tokens = min(burst, self.tokens + max(0.0, now - self.last) * rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate


def envelope_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    """An answer with the documented error envelope (and these headers)."""
    body = json.dumps({"success": False, "error": {"code": code, "message": message}})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


HTML_PAGE = "<html><head><title>{0}</title></head><body><h1>{0}</h1><hr>nginx</body></html>"
"""A proxy's HTML page (``{0}``: its title), answered instead of JSON."""


def rate_limited(wait: float) -> web.Response:
    """429 ``RATE_LIMITED`` with ``Retry-After``: the wait for the next token, in whole
    seconds (at least 1)."""
    return envelope_error(
        429,
        "RATE_LIMITED",
        "Rate limit exceeded; retry after the Retry-After delay",
        **{"Retry-After": str(max(1, math.ceil(wait)))},
    )
