"""The watcher: :class:`TaskWatcher`, a facade over parts with one job each.

:mod:`.tracked` (the watched set, its states, callbacks, pause and lifecycle: what the
engine sees), :mod:`.waiters` (waits and feeds), :mod:`.intake` (what comes in: watch,
and the engine's changes), :mod:`.keeping` (the results kept for the gallery),
:mod:`.viewmodel` (rows, snapshot), :mod:`.presenter` (panel, static twin), :mod:`.analysis`
(history), :mod:`.media_io` (show, download) and :mod:`.actions` (submit, cancel, retry,
balance). :mod:`.delegate` makes the facade's one-line forwards (typed, with the part's
docstring).
"""

from .facade import TaskWatcher

__all__ = ["TaskWatcher"]
