"""A watcher's presenter: the live panel redrawn at most every ``refresh_interval`` seconds
(in the engine's thread), its static twin for saved notebooks (at most every
``static_interval``, at once when all is done), and the notebook's display hooks."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..view.render import MediaEntry, static_html, static_text
from .keeping import Keeping
from .tracked import TrackedSet
from .viewmodel import ViewModel

if TYPE_CHECKING:
    from ..view.panel import Panel, StaticView

__all__ = ["PanelActions", "Presenter"]

log = logging.getLogger("mh_notebook.watcher")


class PanelActions:
    """What the panel's buttons do."""

    def __init__(
        self,
        pause: Callable[[], None],
        resume: Callable[[], None],
        stop: Callable[[], None],
        cancel: Callable[[str], object],
    ) -> None:
        self.pause, self.resume, self.stop, self.cancel = pause, resume, stop, cancel


class Presenter:
    """Draws one watcher: the panel, the static view, the mimebundle."""

    def __init__(
        self,
        tracked: TrackedSet,
        view: ViewModel,
        keeping: Keeping,
        buttons: PanelActions,
        *,
        refresh_interval: float,
        static_interval: float,
    ) -> None:
        self._tracked, self._view, self._keeping, self._buttons = tracked, view, keeping, buttons
        self._flags = tracked.flags
        self.refresh_interval, self.static_interval = refresh_interval, static_interval
        self._draw_lock = threading.RLock()
        self._last_draw = 0.0
        self._panel: Panel | None = None
        self._static: StaticView | None = None
        self._static_at = 0.0

    @property
    def panel(self) -> Panel:
        """The live ipywidgets panel (created on first use)."""
        if self._panel is None:
            from ..view.panel import Panel

            buttons = self._buttons
            panel = Panel(
                on_pause=buttons.pause,
                on_resume=buttons.resume,
                on_stop=buttons.stop,
                on_cancel=buttons.cancel,
                gallery_limit=self._keeping.gallery_limit,
                static_class=self._static_view().css_class,
            )
            panel.draw(self._view.snapshot())
            with self._tracked.lock:  # what was kept before the panel existed; the engine adds the rest
                for kept, caption in self._keeping.kept.values():
                    panel.add_result(kept, caption, self._keeping.detail(kept))
                self._keeping.gallery_queue.clear()
            self._panel, self._flags.mode = panel, "widget"
        return self._panel

    def _static_view(self) -> StaticView:
        if self._static is None:
            from ..view.panel import StaticView

            self._static = StaticView()
        return self._static

    def redraw(self, force: bool = False) -> None:
        """Engine thread, every tick: draw if something changed, at most every ``refresh_interval``;
        the static view at most every ``static_interval`` (at once when all is done).

        One draw at a time: a forced redraw from another thread returns once the gallery holds
        every result kept before it (not while the engine's thread is still adding tiles)."""
        self.publish_static()
        panel = self._panel
        if panel is None:
            return
        with self._draw_lock:
            since = time.monotonic() - self._last_draw
            ticking = since >= 1.0 and bool(self._tracked.pending)  # elapsed times move on
            if not force and (not (self._flags.dirty or ticking) or since < self.refresh_interval):
                return
            self._flags.dirty, self._last_draw = False, time.monotonic()
            panel.draw(self._view.snapshot())
            for kept, caption in self._keeping.take_queue():
                panel.add_result(kept, caption, self._keeping.detail(kept))

    def mimebundle(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The live widget, plus static ``text/html`` and ``text/plain`` for saved notebooks."""
        bundle: dict[str, Any] = {}
        if self._flags.gallery_on:
            bundle.update(self.panel.widget._repr_mimebundle_(include=include, exclude=exclude))
        bundle.update(self.static_bundle())
        return bundle

    def display(self) -> None:
        """In a notebook: the live panel, then its static twin under a display id (kept
        current by ``redraw()``, ``wait()`` and ``stop()``) for saved notebooks."""
        live = self.panel.widget if self._flags.gallery_on else None
        self._flags.static_dirty = False
        self._static_at = time.monotonic()
        self._static_view().show(self.static_bundle(), live)

    def static_bundle(self) -> dict[str, str]:
        """``text/html`` and ``text/plain`` of the same snapshot and results: tasks, counts,
        thumbnails of images and labelled entries for the rest."""
        snapshot = self._view.snapshot()
        with self._tracked.lock:
            kept = list(self._keeping.kept.values())
        detail = self._keeping.detail
        entries = [MediaEntry(k.kind, caption, detail(k), k.thumbnail) for k, caption in kept]
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        note = f"Static view as of {stamp} (for saved notebooks; the live panel hides it)."
        css_class = f"mh-static {self._static.css_class}" if self._static is not None else "mh-static"
        return {
            "text/html": static_html(snapshot, entries, css_class, note),
            "text/plain": static_text(snapshot, entries, note),
        }

    def publish_static(self, force: bool = False) -> None:
        """Update the static view if it changed: at most every ``static_interval`` seconds,
        at once with ``force`` or when every task is done."""
        view = self._static
        if view is None or not view.shown or not self._flags.static_dirty:
            return
        settled = not self._keeping.keeping and all(s.ended for s in self._tracked.states())
        if not (force or settled) and time.monotonic() - self._static_at < self.static_interval:
            return
        self._flags.static_dirty, self._static_at = False, time.monotonic()
        try:
            view.update(self.static_bundle())
        except Exception:
            log.exception("the static view could not be updated")

    def final(self) -> None:
        """``stop()``: draw once more, and the static view says "stopped"."""
        self.redraw(force=True)
        self._flags.static_dirty = True
        self.publish_static(force=True)
