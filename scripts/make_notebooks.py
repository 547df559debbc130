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
        "Create a watcher and show its panel. It polls from a background thread: the notebook stays free, and finished media appear in the gallery as they arrive. "
        "`store=None` keeps this demo's journal in memory (pass a file path to keep a history across kernel restarts). "
        "Re-running this cell adds no thread and no requests: every watcher of one API shares one poller and one request budget. "
        "The key is a `river_test_` one, so the panel says *sandbox*. With the real API, `TaskWatcher()` alone reads `MODELHUNTER_KEY`.",
    ),
    (
        "code",
        """watcher = TaskWatcher(api_key=sim.api_key, base_url=sim.url, time_scale=10, store=None)
watcher""",
    ),
    (
        "md",
        "Start a mix of generations exactly as with the real API: `watcher.submit(endpoint, model=..., input=...)` creates each task "
        "(`POST /api/v1/{provider}/{capability}`) and watches it. `metadata` tags come back as `metadata.<key>` columns of the history.",
    ),
    (
        "code",
        """jobs = [
    ("vidu/text-to-video", "viduq3-turbo", {"prompt": "a red fox running through fresh snow", "duration": 4}),
    ("kling/text-to-video", "kling-v3", {"prompt": "timelapse of a city at night", "duration": 5}),
    ("seedance/text-to-video", "seedance-1-0-pro-fast", {"prompt": "waves breaking on black sand"}),
    ("seedream/text-to-image", "seedream-4-5", {"prompt": "a watercolor map of an imaginary island"}),
    ("seedream/text-to-image", "seedream-5-0-lite", {"prompt": "a banana wearing sunglasses"}),
    ("elevenlabs/text-to-speech", "eleven-v3", {"prompt": "Welcome to the ModelHunter demo."}),  # a simulator model
]
ids = [
    watcher.submit(endpoint, model=model, input=inputs, metadata={"notebook": "quickstart"})
    for endpoint, model, inputs in jobs
]
# A task the simulator makes fail (moderation), watched by id as you would a task started elsewhere:
ids.append(
    sim.submit(
        model="seedance-1.0-lite",
        prompt="a forbidden prompt",
        outcome="failed",
        error_code="PROVIDER_ERROR",
        error_message="Content moderation: prompt contains restricted content",
    )
)
watcher.watch(ids)
print(f"balance: ${watcher.balance():,.2f}")""",
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
history[["task_id", "model", "status", "latency_s", "detection_delay_s", "polls", "cost", "metadata.notebook", "error_code"]]""",
    ),
    (
        "md",
        "A failed task can be retried (`watcher.retry(task_id)`: a new task, charged again, whose history row names the original). "
        "`watcher.cancel(task_id)` stops one still running; the panel has a Cancel control too, with a confirm step.",
    ),
    (
        "code",
        """failed = next(t.id for t in final.values() if t.status == "failed")
again = watcher.retry(failed)
watcher.wait(timeout=180)
watcher.history().set_index("task_id").loc[[failed, again], ["status", "original_task_id", "cost"]]""",
    ),
    ("md", "Latency, success and cost per provider and model:"),
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
from mh_notebook.sim import Simulator
from mh_notebook.sim.catalogue import SIM_ENDPOINTS

sim = Simulator(seed=3, speed=60).start()
journal = Path(tempfile.mkdtemp()) / "latency-journal.sqlite\"""",
    ),
    (
        "md",
        "Four tasks of each documented text-to-video and text-to-image model, all at once, created through the documented endpoints.",
    ),
    (
        "code",
        """watcher = TaskWatcher(sim.api_key, sim.url, store=journal, time_scale=60, rate_limit=20)
jobs = [  # every documented endpoint and model of the simulator
    (endpoint, model)
    for endpoint, models in SIM_ENDPOINTS.items()
    for model, spec in models.items()
    if spec.documented and "image-to" not in endpoint
]
ids = [
    watcher.submit(endpoint, model=model, input={"prompt": f"test {i}"}, metadata={"wave": i % 2})
    for endpoint, model in jobs
    for i in range(4)
]
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
    ("md", "What each model cost (USD, as the API reports it), per success and per second of video:"),
    (
        "code",
        """watcher.latency_summary()[["tasks", "succeeded", "total_cost_usd", "cost_per_success_usd", "cost_per_output_s_usd"]].sort_values("total_cost_usd", ascending=False)""",
    ),
    ("md", "Cost against latency, one point per succeeded task:"),
    (
        "code",
        """ok = history[history["status"] == "succeeded"]
ax = ok.plot.scatter(x="latency_s", y="cost", c=ok["type"].cat.codes, colormap="viridis", figsize=(7, 4))
ax.set_xlabel("latency (s)"); ax.set_ylabel("cost (USD)");""",
    ),
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
