"""The engine: one per API (base URL and key) per process, shared by every watcher of it.

:mod:`.core` holds :class:`Engine` and its registry, :mod:`.writes` the journal write
queue, :mod:`.journalling` what the engine reads from and makes for a journal, and
:mod:`.boundary` the two typed sides of the engine/watcher boundary.
"""

from .account import AccountFollower, Follow, FollowSettings
from .boundary import Kind, Observation, Subscriber, SubscriberSpec, TaskState, WatcherEngine
from .core import Engine, engine_for, running_engines
from .writes import JOURNAL_WAIT, STOP_WAIT, Quarantined, UnwrittenWarning

__all__ = [
    "JOURNAL_WAIT",
    "STOP_WAIT",
    "AccountFollower",
    "Engine",
    "Follow",
    "FollowSettings",
    "Kind",
    "Observation",
    "Quarantined",
    "Subscriber",
    "SubscriberSpec",
    "TaskState",
    "UnwrittenWarning",
    "WatcherEngine",
    "engine_for",
    "running_engines",
]
