"""The live status panel (ipywidgets) and its static twin. Both draw what they are given.

The panel: one ``HTML`` widget for the summary and one for the task table (bounded whatever
the number of tasks), pause/stop controls, and a gallery of result tiles. A tile shows a
result's bytes through ipywidgets' binary ``Image``/``Video``/``Audio`` widgets, so a page
reload or a second tab gets them from the kernel, never from the result's expiring URL.
The gallery is a flex box laid out by its own ``Layout`` and classes, the same in
JupyterLab, Notebook 7 and nbclassic.

The static view (:class:`StaticView`) is a separate output with only ``text/html`` and
``text/plain``, kept current by display id (``update_display``), for saved notebooks
(widget state is not saved by default; GitHub and nbviewer render no widgets). It is a
separate output because updating an output that holds the widget view makes JupyterLab
build a new view of the widget (a playing video would restart). While the panel is live,
its style hides the static twin.
"""

from __future__ import annotations

import base64
import html
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence

import ipywidgets as widgets

from .errors import ModelHunterError
from .formats import mime_subtype
from .results import KeptResult
from .view.render import Row, Snapshot, safe_text, summary_html, table_html

__all__ = ["CancelControl", "LiveResult", "Panel", "StaticView"]

_STYLE = """<style>
.mh-panel { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 10px; max-width: 1200px; }
.mh-panel .mh-table td { line-height: 1.35; }
.mh-panel .mh-gallery { display: flex !important; flex-flow: row wrap !important; align-items: flex-start; }
.mh-panel .mh-tile { flex: 0 0 auto; width: 264px; margin: 3px; overflow: hidden; }
.mh-panel .mh-tile img, .mh-panel .mh-tile video { max-width: 256px; height: auto; }
.mh-panel .mh-note { font-size: 12px; color: #57606a; line-height: 1.35; white-space: normal; }
</style>"""
_TILE_WIDTH = 256


class Panel:
    """The widget tree of one watcher; ``panel.widget`` is what a cell displays.

    ``static_class`` is the class of the watcher's static twin, hidden while this panel
    is on the page.
    """

    def __init__(
        self,
        *,
        on_pause: Callable[[], None],
        on_resume: Callable[[], None],
        on_stop: Callable[[], None],
        on_cancel: Callable[[str], object] | None = None,
        gallery_limit: int = 24,
        static_class: str = "",
    ) -> None:
        self.summary = widgets.HTML()
        self.table = widgets.HTML()
        self.pause_button = widgets.ToggleButton(description="Pause", icon="pause", tooltip="Pause polling")
        self.stop_button = widgets.Button(description="Stop", icon="stop", tooltip="Stop the watcher")
        self.style = widgets.HTML(_STYLE.replace("</style>", _hide(static_class) + "</style>"))
        self.gallery = widgets.Box(layout=widgets.Layout(display="flex", flex_flow="row wrap"))
        self.gallery.add_class("mh-gallery")
        self.gallery_limit = gallery_limit
        self.refreshes = 0
        """How many times :meth:`draw` changed a widget (for tests and benchmarks)."""
        self.cancel = CancelControl(on_cancel) if on_cancel is not None else None
        """Cancelling an active task, with a confirm step (``None`` without ``on_cancel``)."""
        buttons: list[widgets.Widget] = [self.pause_button, self.stop_button]
        controls = widgets.HBox(buttons + ([self.cancel.widget] if self.cancel is not None else []))
        self.widget = widgets.VBox([self.style, self.summary, self.table, controls, self.gallery])
        self.widget.add_class("mh-panel")

        def toggled(change: Mapping[str, object]) -> None:
            (on_pause if change["new"] else on_resume)()

        self.pause_button.observe(toggled, names="value")
        self.stop_button.on_click(lambda _: on_stop())

    def __repr__(self) -> str:
        return f"Panel(refreshes={self.refreshes}, media={len(self.gallery.children)})"

    def draw(self, snapshot: Snapshot) -> None:
        """Set the widgets' values from ``snapshot``; unchanged values send nothing."""
        summary = summary_html(snapshot)
        table = table_html(snapshot.rows, snapshot.total, snapshot.counts)
        changed = False
        if summary != self.summary.value:
            self.summary.value, changed = summary, True
        if table != self.table.value:
            self.table.value, changed = table, True
        paused_label = "Resume" if snapshot.paused else "Pause"
        if self.pause_button.description != paused_label:
            self.pause_button.description = paused_label
            self.pause_button.icon = "play" if snapshot.paused else "pause"
        if snapshot.stopped and not self.stop_button.disabled:
            self.stop_button.disabled = self.pause_button.disabled = True
        if self.cancel is not None:
            self.cancel.offer([] if snapshot.stopped else [r for r in snapshot.rows if not r.ended])
        self.refreshes += changed

    def add_result(self, kept: KeptResult, caption: str, detail: str) -> None:
        """Append one kept result as a tile; the oldest tiles beyond ``gallery_limit`` are closed."""
        tiles = [*self.gallery.children, result_tile(kept, caption, detail)]
        dropped, kept_tiles = tiles[: -self.gallery_limit], tiles[-self.gallery_limit :]
        self.gallery.children = tuple(kept_tiles)
        for tile in dropped:
            _close(tile)


class CancelControl:
    """Pick an active task, press "Cancel task…", then confirm: cancelling cannot be undone.

    ``on_cancel(task_id)`` does the cancelling; what it raises (the task had already ended,
    say) is shown beside the control, never raised into the front end.
    """

    def __init__(self, on_cancel: Callable[[str], object]) -> None:
        self._on_cancel = on_cancel
        self.choice = widgets.Dropdown(options=[], description="", layout=widgets.Layout(width="260px"))
        self.ask = widgets.Button(description="Cancel task…", icon="ban", tooltip="Cancel the chosen task")
        self.confirm = widgets.Button(description="Yes, cancel it", button_style="danger")
        self.keep = widgets.Button(description="Keep it")
        self.message = widgets.HTML()
        self.confirm.layout.display = self.keep.layout.display = "none"
        self.widget = widgets.HBox([self.choice, self.ask, self.confirm, self.keep, self.message])
        self.widget.add_class("mh-cancel")
        self.ask.on_click(lambda _: self._ask())
        self.keep.on_click(lambda _: self._settle(""))
        self.confirm.on_click(lambda _: self._do())

    def offer(self, rows: Sequence[Row]) -> None:
        """The active tasks to choose from (options change only when the set does)."""
        options = tuple((f"{r.task_id} · {r.model or r.type or '?'}", r.task_id) for r in rows)
        if options != tuple(self.choice.options):
            self.choice.options = options
        if self.choice.value is None and options:
            self.choice.value = options[0][1]
        self.ask.disabled = not options

    def _ask(self) -> None:
        if self.choice.value is None:
            return
        self.message.value = (
            f"<span>Cancel <code>{safe_text(self.choice.value, 80)}</code>? This cannot be undone.</span>"
        )
        self.confirm.layout.display = self.keep.layout.display = None
        self.ask.layout.display = "none"

    def _do(self) -> None:
        task_id = self.choice.value
        if task_id is None:
            self._settle("")
            return
        try:
            self._on_cancel(task_id)
        except ModelHunterError as exc:  # shown, never raised into the front end
            self._settle(f'<span style="color:#82071e">{safe_text(exc.message, 300)}</span>')
            return
        self._settle(f"<span>cancelled <code>{safe_text(task_id, 80)}</code></span>")

    def _settle(self, message: str) -> None:
        self.message.value = message
        self.confirm.layout.display = self.keep.layout.display = "none"
        self.ask.layout.display = None


def result_tile(kept: KeptResult, caption: str, detail: str) -> widgets.Widget:
    """A gallery tile: the result's bytes in a binary media widget (if kept), then a caption."""
    note = widgets.HTML(
        f'<div class="mh-note"><b>{safe_text(caption, 120)}</b><br>{safe_text(detail, 400)}</div>'
    )
    media = media_widget(kept)
    tile = widgets.VBox([media, note] if media is not None else [note])
    tile.add_class("mh-tile")
    return tile


def media_widget(kept: KeptResult, width: int | None = _TILE_WIDTH) -> widgets.Widget | None:
    """An ``Image``/``Video``/``Audio`` widget holding the kept bytes (``None`` if none); an
    image too large to keep inline shows its thumbnail. ``width`` in pixels (``None``: the
    media's own, at most the output's)."""
    if kept.data is None and kept.thumbnail is not None:
        jpeg = base64.b64decode(kept.thumbnail.split(",", 1)[1])
        return widgets.Image(value=jpeg, format="jpeg")
    if kept.data is None or kept.kind is None:
        return None
    fmt = mime_subtype(kept.format) or "octet-stream"  # the front end builds "<kind>/<format>"
    size = {"width": str(width)} if width is not None else {"layout": widgets.Layout(max_width="100%")}
    if kept.kind == "image":
        return widgets.Image(value=kept.data, format=fmt, **size)
    if kept.kind == "video":
        return widgets.Video(value=kept.data, format=fmt, autoplay=False, loop=False, controls=True, **size)
    wide = widgets.Layout(width=f"{width}px" if width is not None else None)
    return widgets.Audio(value=kept.data, format=fmt, autoplay=False, loop=False, controls=True, layout=wide)


class LiveResult:
    """One result as ``TaskWatcher.show()`` displays it: its bytes in a binary media widget,
    so a page reload or a second tab gets them from the kernel (as the gallery's), plus
    ``text/html`` and ``text/plain`` (a thumbnail or a label, no URL) for saved notebooks,
    where widgets do not render."""

    def __init__(self, kept: KeptResult, caption: str, detail: str) -> None:
        widget = media_widget(kept, width=None)
        if widget is None or kept.data is None:
            raise ValueError(f"no bytes of a {kept.format!r} result to show")
        self.widget: widgets.Widget = widget
        self.caption, self.detail, self.thumbnail = caption, detail, kept.thumbnail

    def __repr__(self) -> str:
        return f"LiveResult({self.caption!r})"

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, object]:
        bundle: dict[str, object] = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude))
        label = f"{self.caption} · {self.detail}"
        picture = f'<img src="{html.escape(self.thumbnail)}" alt=""><br>' if self.thumbnail else ""
        note = "shown live from the kernel; show(embed=True) keeps it in the notebook"
        bundle["text/html"] = f'<div class="mh-note">{picture}{safe_text(label, 400)}<br><i>{note}</i></div>'
        bundle["text/plain"] = f"{html.unescape(safe_text(label, 400))} ({note})"
        return bundle


def _close(widget: widgets.Widget) -> None:
    """Close a tile and its children (their bytes leave the kernel and the page)."""
    for child in getattr(widget, "children", ()):
        _close(child)
    widget.close()


def _hide(css_class: str) -> str:
    """CSS hiding the static twin (and, where ``:has`` is supported, its empty output area)."""
    if not css_class:
        return ""
    areas = f".jp-OutputArea-child:has(.{css_class}), .output_area:has(.{css_class})"
    return f".{css_class} {{ display: none !important; }}\n{areas} {{ display: none !important; }}\n"


class StaticView:
    """The static ``text/html`` + ``text/plain`` output of a watcher, updated by display id.

    Thread-safe: :meth:`update` may be called from the engine's thread (it sends an
    ``update_display_data`` message, which front ends match by display id).
    """

    def __init__(self) -> None:
        token = uuid.uuid4().hex
        self.display_id = f"mh-{token}"
        self.css_class = f"mh-static-{token[:16]}"
        """The class of the static HTML's outer ``div`` (the live panel hides it)."""
        self.shown = False
        self.updates = 0
        """``update_display`` messages sent (for tests)."""
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StaticView(display_id={self.display_id!r}, shown={self.shown}, updates={self.updates})"

    def show(self, bundle: Mapping[str, str], live: widgets.Widget | None = None) -> None:
        """Display the live widget (if any), then the static bundle under this display id."""
        from IPython.display import display

        if live is not None:  # the widget alone: its text/plain (a long repr) would only add noise
            view = {k: v for k, v in live._repr_mimebundle_().items() if k != "text/plain"}
            display(view, raw=True)
        with self._lock:
            display(dict(bundle), raw=True, display_id=self.display_id)
            self.shown = True

    def update(self, bundle: Mapping[str, str]) -> None:
        """Replace every output shown under this display id (nothing if never shown)."""
        from IPython.display import update_display

        with self._lock:
            if not self.shown:
                return
            update_display(dict(bundle), raw=True, display_id=self.display_id)
            self.updates += 1
