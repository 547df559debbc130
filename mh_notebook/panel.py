"""The live status panel (ipywidgets). It draws what it is given and never polls.

One ``HTML`` widget for the summary and one for the task table (bounded whatever the
number of tasks), pause/stop controls, and a gallery ``Output`` to which finished media
are appended with ``append_display_data`` (never ``with output:`` from a thread).
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets
from IPython.display import HTML

from .render import Snapshot, summary_html, table_html

__all__ = ["Panel"]

_STYLE = """<style>
.mh-panel { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 10px; max-width: 1200px; }
.mh-panel .mh-table td { line-height: 1.35; }
.mh-panel .mh-gallery .jp-OutputArea { display: flex; flex-flow: row wrap; gap: 4px; }
.mh-panel .mh-gallery .jp-OutputArea-child { display: block; flex: 0 0 auto; width: auto; }
.mh-panel .mh-gallery .jp-OutputArea-prompt { display: none; }
.mh-panel .mh-gallery figure { margin: 2px; }
</style>"""


class Panel:
    """The widget tree of one watcher; ``panel.widget`` is what a cell displays."""

    def __init__(
        self,
        *,
        on_pause: Callable[[], None],
        on_resume: Callable[[], None],
        on_stop: Callable[[], None],
        gallery_limit: int = 24,
    ) -> None:
        self.summary = widgets.HTML()
        self.table = widgets.HTML()
        self.pause_button = widgets.ToggleButton(description="Pause", icon="pause", tooltip="Pause polling")
        self.stop_button = widgets.Button(description="Stop", icon="stop", tooltip="Stop the watcher")
        self.style = widgets.HTML(_STYLE)
        self.gallery = widgets.Output()
        self.gallery.add_class("mh-gallery")
        self.gallery_limit = gallery_limit
        self.refreshes = 0
        """How many times :meth:`draw` changed a widget (for tests and benchmarks)."""
        controls = widgets.HBox([self.pause_button, self.stop_button])
        self.widget = widgets.VBox([self.style, self.summary, self.table, controls, self.gallery])
        self.widget.add_class("mh-panel")

        def toggled(change: dict[str, object]) -> None:
            (on_pause if change["new"] else on_resume)()

        self.pause_button.observe(toggled, names="value")
        self.stop_button.on_click(lambda _: on_stop())

    def __repr__(self) -> str:
        return f"Panel(refreshes={self.refreshes}, media={len(self.gallery.outputs)})"

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
        self.refreshes += changed

    def add_media(self, figure_html: str) -> None:
        """Append one finished result to the gallery (keeps the newest ``gallery_limit``)."""
        self.gallery.append_display_data(HTML(figure_html))
        if len(self.gallery.outputs) > self.gallery_limit:
            self.gallery.outputs = self.gallery.outputs[-self.gallery_limit :]
