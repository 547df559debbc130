"""Writes notebooks/*.ipynb from the cell sources below (committed without outputs).

.venv/bin/python scripts/make_notebooks.py
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

QUICKSTART = [
    (
        "md",
        """# mh_notebook quickstart

Watch ModelHunter.AI generations live, see each video, image and audio inline the moment it
is ready, and get the history as a pandas DataFrame. This notebook runs against the
**embedded simulator**: no account, no key, no network.""",
    ),
    (
        "md",
        "Start the simulator: a real HTTP server on 127.0.0.1 that speaks the ModelHunter task API, ten times faster than life.",
    ),
    (
        "code",
        """from mh_notebook import TaskWatcher
from mh_notebook.sim import Simulator

sim = Simulator(speed=10, url_lifetime=900).start()
sim""",
    ),
    (
        "md",
        "Start a mix of generations. With the real API these ids come from the creation endpoints; here the simulator creates them.",
    ),
    (
        "code",
        """jobs = [
    ("viduq3-turbo", "a red fox running through fresh snow"),
    ("kling-v3.0", "timelapse of a city at night"),
    ("veo-3.1-fast", "waves breaking on black sand"),
    ("seedream-4.5", "a watercolor map of an imaginary island"),
    ("nano-banana-2", "a banana wearing sunglasses"),
    ("eleven-v3", "Welcome to the ModelHunter demo."),
]
ids = [sim.submit(model=model, prompt=prompt) for model, prompt in jobs]
ids.append(
    sim.submit(
        model="seedance-1.0-lite",
        prompt="a forbidden prompt",
        outcome="failed",
        error_code="PROVIDER_ERROR",
        error_message="Content moderation: prompt contains restricted content",
    )
)""",
    ),
    (
        "md",
        "Watch them. The panel below updates from a background thread: the notebook stays free, and finished media appear in the gallery as they arrive. "
        "`store=None` keeps this demo's journal in memory (pass a file path to keep a history across kernel restarts). "
        "Re-running this cell adds no thread and no requests: every watcher of one API shares one poller and one request budget.",
    ),
    (
        "code",
        """watcher = TaskWatcher(api_key=sim.api_key, base_url=sim.url, time_scale=10, store=None)
watcher.watch(ids)
watcher""",
    ),
    ("md", "Block until every task has ended (`await watcher.wait_async()` does the same without blocking)."),
    (
        "code",
        """final = watcher.wait(timeout=180)
{task_id: str(task.status) for task_id, task in final.items()}""",
    ),
    (
        "md",
        "Show one result inline. `embed=True` stores the bytes in the notebook, so it survives the 15-minute URL expiry.",
    ),
    (
        "code",
        """video = next(t for t in final.values() if t.type == "video" and t.status == "succeeded")
watcher.show(video.id, embed=True)""",
    ),
    (
        "md",
        "Every task, one row each: server timestamps, latency, how quickly the watcher noticed the end, and how many requests it cost.",
    ),
    (
        "code",
        """history = watcher.history()
history[["task_id", "model", "status", "latency_s", "detection_delay_s", "polls", "format", "error_code"]]""",
    ),
    ("md", "Latency and success per provider and model:"),
    ("code", "watcher.latency_summary()"),
    ("md", "Stop polling and the simulator when you are done."),
    (
        "code",
        """watcher.stop()
sim.stop()""",
    ),
]

LATENCY = [
    (
        "md",
        """# Latency analysis across providers and models

A larger simulated workload (about a hundred tasks across every model of the catalogue),
journalled to a SQLite file, then analysed with pandas: latency distributions, queue and
run phases, failures, and the journal read back without a watcher.""",
    ),
    (
        "code",
        """import tempfile
from pathlib import Path

from mh_notebook import TaskWatcher, read_history
from mh_notebook.sim import CATALOGUE, Simulator

sim = Simulator(seed=3, speed=60).start()
journal = Path(tempfile.mkdtemp()) / "latency-journal.sqlite\"""",
    ),
    ("md", "Four tasks of each model, all at once."),
    (
        "code",
        """ids = [sim.submit(model=model) for model in CATALOGUE for _ in range(4)]
watcher = TaskWatcher(sim.api_key, sim.url, store=journal, time_scale=60, rate_limit=20)
watcher.watch(ids)
watcher""",
    ),
    (
        "code",
        """final = watcher.wait(timeout=300)
len(final)""",
    ),
    ("md", "The history: one row per task, with typed columns (UTC datetimes, float seconds, categoricals)."),
    (
        "code",
        """history = watcher.history()
history.dtypes""",
    ),
    (
        "md",
        "Latency percentiles, success rate and common errors per provider and model (simulated seconds divided by the speed of 60).",
    ),
    ("code", 'watcher.latency_summary().sort_values("latency_p50_s")'),
    ("md", "The distribution per model:"),
    ("code", "watcher.plot_latency();"),
    ("md", "Queue and run phases of the most recent tasks:"),
    ("code", "watcher.plot_timeline(limit=40);"),
    ("md", "Failures by code and model:"),
    (
        "code",
        """failed = history[history["status"] == "failed"]
failed.groupby(["error_code", "model"], observed=True).size().rename("tasks").reset_index()""",
    ),
    ("md", "How quickly the watcher saw each end, and what it cost in requests:"),
    (
        "code",
        """history.groupby("type", observed=True)[["detection_delay_s", "polls"]].describe().round(2)""",
    ),
    ("md", "The journal holds everything: read it back in a fresh process, with no watcher and no key."),
    (
        "code",
        """watcher.stop()
offline = read_history(journal)
offline.equals(history), len(offline)""",
    ),
    ("code", "sim.stop()"),
]


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = new_notebook(
        cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells]
    )
    for index, cell in enumerate(nb.cells):  # stable ids: regenerating changes only what changed
        cell.id = f"cell-{index:02d}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "notebooks"
    out.mkdir(exist_ok=True)
    for name, cells in {"quickstart": QUICKSTART, "latency_analysis": LATENCY}.items():
        nbformat.write(build(cells), out / f"{name}.ipynb")
        print(f"wrote notebooks/{name}.ipynb")


if __name__ == "__main__":
    main()
