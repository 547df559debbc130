"""The key and the base URL: where they come from, what is refused, and the ids that go into paths."""

from __future__ import annotations

import ipaddress
import os
import re

import httpx

from ..errors import ConfigurationError

__all__ = [
    "API_PREFIX",
    "DEFAULT_BASE_URL",
    "KEY_ENV",
    "KEY_ENVS",
    "URL_ENV",
    "check_endpoint",
    "check_task_id",
    "is_sandbox_key",
    "resolve_settings",
]

DEFAULT_BASE_URL = "https://api.modelhunter.ai"
"""The documented API host; every path is under ``/api/v1/``."""
KEY_ENVS = ("MODELHUNTER_KEY", "MODELHUNTER_API_KEY")
"""Where the key is looked for, in order: the docs' own name first, 0.2's second."""
KEY_ENV = KEY_ENVS[0]
URL_ENV = "MODELHUNTER_BASE_URL"
API_PREFIX = "/api/v1"
_BAD_ID = re.compile(r"[/\\?#%\s\x00-\x1f\x7f]")
_ENDPOINT = re.compile(r"^[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*$")


class _Secret:
    """Holds the API key; its repr and str never show it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


def resolve_settings(
    api_key: str | None, base_url: str | None, *, allow_insecure_http: bool = False
) -> tuple[str, str]:
    """Return ``(api_key, base_url)`` from the arguments or the environment.

    Raises :class:`ConfigurationError` saying how to set a key when there is none, and
    for a plain ``http://`` URL to anything but this machine (the key would travel in
    clear text) unless ``allow_insecure_http`` is set.
    """
    key = api_key if api_key is not None else _key_from_environment()
    if not key or not key.strip():
        raise ConfigurationError(
            f"no ModelHunter API key: pass api_key=... or set the {KEY_ENV} environment "
            f"variable ({' or '.join(KEY_ENVS[1:])} is read too; for the embedded simulator use "
            "sim.api_key)"
        )
    _check_key(key.strip())
    url = base_url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL
    if not url.lower().startswith(("http://", "https://")):
        raise ConfigurationError(f"base_url must start with http:// or https://, got {url!r}")
    if url.lower().startswith("http://") and not allow_insecure_http and not _is_loopback(url):
        raise ConfigurationError(
            f"refusing plain http to {url!r}: the API key would be sent unencrypted; use https://, "
            "or pass allow_insecure_http=True if you really mean it"
        )
    return key.strip(), _canonical(url)


def _canonical(url: str) -> str:
    """One spelling per API (one engine, one budget, one journal key): the scheme and host
    in lower case, no default port, no trailing ``/`` or ``/api/v1``. A query, a fragment or
    a user and password in the URL are refused (the journal would keep them)."""
    try:
        parts = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigurationError(f"base_url {url!r} is not a URL: {exc}") from None
    if parts.query or parts.fragment or parts.userinfo or not parts.host:
        raise ConfigurationError(
            "base_url must be scheme://host[:port][/path], with no query, fragment, user or "
            f"password (got {parts.copy_with(userinfo=None)!s:.200})"
        )
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = f":{parts.port}" if parts.port is not None and parts.port != default else ""
    host = f"[{parts.host}]" if ":" in parts.host else parts.host
    path = parts.path.rstrip("/")
    if path.endswith(API_PREFIX):  # the docs write the API's address with its prefix
        path = path[: -len(API_PREFIX)]
    return f"{parts.scheme}://{host.lower()}{port}{path}"


def _check_key(key: str) -> None:
    """``ConfigurationError`` for a key no Bearer header can carry (it is never echoed)."""
    for at, char in enumerate(key):
        if not 33 <= ord(char) <= 126:
            what = "a space or line break" if char.isspace() else f"the character U+{ord(char):04X}"
            raise ConfigurationError(
                f"the API key has {what} at position {at} (of {len(key)}): keys are printable ASCII "
                "with no spaces; copy it again (a two-line secrets file or a web page can add one)"
            )


def _key_from_environment() -> str | None:
    """The first non-empty key of :data:`KEY_ENVS`."""
    for name in KEY_ENVS:
        value = os.environ.get(name)
        if value and value.strip():
            return value
    return None


def is_sandbox_key(api_key: str) -> bool:
    """True for a ``river_test_`` key: ModelHunter's sandbox, which charges nothing."""
    return api_key.strip().startswith("river_test_")


def _is_loopback(url: str) -> bool:
    host = httpx.URL(url).host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_task_id(task_id: object) -> str:
    """Return ``task_id`` if it is a usable task id, else raise ``ValueError``."""
    if not isinstance(task_id, str) or task_id in ("", ".", "..") or _BAD_ID.search(task_id):
        raise ValueError(
            f"invalid task id {task_id!r}: must be a non-empty string, not '.' or '..', without "
            "'/', '\\', '?', '#', '%', whitespace or control characters (it becomes part of a URL path)"
        )
    return task_id


def check_endpoint(endpoint: str) -> str:
    """``provider/capability`` (e.g. ``vidu/text-to-video``); a leading ``/api/v1/`` is
    accepted. Raises ``ValueError`` for anything else."""
    path = endpoint.strip().lstrip("/")
    path = path[len("api/v1/") :] if path.startswith("api/v1/") else path
    if not _ENDPOINT.match(path):
        raise ValueError(
            f"endpoint must be 'provider/capability' such as 'vidu/text-to-video', got {endpoint!r}"
        )
    return path
