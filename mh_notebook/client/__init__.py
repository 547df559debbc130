"""HTTP clients for the task status API: :class:`Client` (sync) and :class:`AsyncClient`.

The logic lives once in :mod:`.core` (every call described, every answer read); the two
clients only differ in how they send. The parts, one job each:

- :mod:`.settings`: the key and the base URL (from arguments or the environment), ids and endpoints checked;
- :mod:`.core`: the calls and the reading of answers, shared by both clients;
- :mod:`.answers`: an error answer as an exception of the tree, with what to do about it;
- :mod:`.retries`: what is retried and when (tenacity; never a blind POST resend);
- :mod:`.sync` and :mod:`.asynchronous`: the two senders.
"""

from .asynchronous import AsyncClient
from .asynchronous import Turns as Turns
from .core import CANCEL_PATH
from .core import RETRY_PATH as RETRY_PATH
from .retries import RetryPolicy, is_transient
from .retries import parse_retry_after as parse_retry_after
from .settings import DEFAULT_BASE_URL as DEFAULT_BASE_URL
from .settings import KEY_ENV as KEY_ENV
from .settings import KEY_ENVS as KEY_ENVS
from .settings import URL_ENV as URL_ENV
from .settings import _Secret as _Secret
from .settings import check_endpoint, is_sandbox_key, resolve_settings
from .settings import check_task_id as check_task_id
from .sync import Client

__all__ = [
    "CANCEL_PATH",
    "AsyncClient",
    "Client",
    "RetryPolicy",
    "check_endpoint",
    "is_sandbox_key",
    "is_transient",
    "resolve_settings",
]
