"""Results in real kernels: a saved notebook shows the truth; saved files survive a kernel restart."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from test_kernel import run

from mh_notebook.formats import safe_filename
from mh_notebook.history import read_history
from mh_notebook.journal.sqlite import SQLiteStore
from mh_notebook.sim import Simulator

pytestmark = pytest.mark.kernel

UNFINISHED = re.compile(r"\b(pending|queued|running)\b")
SETUP = """
from mh_notebook import TaskWatcher
from mh_notebook.sim import Simulator

sim = Simulator(seed=5, speed=50, url_lifetime=2).start()  # URLs live 2 s
models = ["seedream-4.5", "nano-banana-2"] * 10 + ["eleven-v3", "viduq3-turbo"] * 2  # 24 results
ids = [sim.submit(model=m, outcome="succeeded") for m in models]
ids.append(sim.submit(model="kling-v3.0", outcome="failed", latency=40, error_code="PROVIDER_ERROR"))
"""
WATCH = """
w = TaskWatcher(sim.api_key, sim.url, time_scale=50, store=None, static_interval=1.0)
w.watch(ids)
w"""
WAIT = """final = w.wait(timeout=180)
sorted({str(t.status) for t in final.values()})"""
STOP = "w.stop()"
SHOW = "w.show(ids[0])  # a JPEG: a live widget, and a thumbnail once saved"
KEY_CELL = "from pathlib import Path as _P; _P({path!r}).write_text(sim.api_key)"


def _static_output(nb: nbformat.NotebookNode) -> dict[str, str]:
    """The watcher cell's static output (text/html + text/plain, the one saved notebooks show)."""
    cell = next(c for c in nb.cells if c.cell_type == "code" and "w.watch(ids)" in c.source)
    (static,) = [o for o in cell.outputs if "mh-static" in o.get("data", {}).get("text/html", "")]
    assert static.output_type == "display_data"
    return dict(static.data)


@pytest.mark.parametrize("stop", [True, False], ids=["stopped", "left-running"])
def test_an_executed_notebook_saves_the_final_table_and_thumbnails(tmp_path: Path, stop: bool) -> None:
    cells = [SETUP, WATCH, WAIT, SHOW] + ([STOP] if stop else [])
    key_file = tmp_path / "key.txt"
    cells.append(KEY_CELL.format(path=str(key_file)))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", store_widget_state=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )  # fmt: skip
    client.execute()
    errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert not errors, errors[0]["traceback"] if errors else ""
    nb.cells.pop()
    saved = tmp_path / "executed.ipynb"
    nbformat.write(nb, saved)

    static = _static_output(nbformat.read(saved, as_version=4))
    page, text = static["text/html"], static["text/plain"]
    for shown in (page, text):
        assert not UNFINISHED.search(shown), UNFINISHED.search(shown)
    assert "succeeded</span> 24" in page and "failed</span> 1" in page
    assert "succeeded 24 · failed 1" in text  # text/plain agrees with text/html
    assert ("stopped" in page and "stopped" in text) is stop
    thumbnails = re.findall(r'<img src="data:image/jpeg;base64,[A-Za-z0-9+/=]+"', page)
    assert len(thumbnails) == 20  # every image result; audio and video are labelled entries
    assert text.count("[image]") == 20 and text.count("[audio]") == 2 and text.count("[video]") == 2
    assert "widgets" not in nb.metadata  # nothing but the static view carries the results
    size = saved.stat().st_size
    assert size < 2_000_000, size
    gallery = page[page.index('<div class="mh-static-gallery">') :]
    print(f"\nsaved notebook: {size} bytes; the static gallery of 24 results: {len(gallery)} bytes")
    assert key_file.read_text() not in saved.read_text()
    _show_output_is_durable(nbformat.read(saved, as_version=4))


def _show_output_is_durable(nb: nbformat.NotebookNode) -> None:
    """show()'s output: the widget (bytes from the kernel while it runs) and, for the saved
    notebook, a thumbnail with no URL (issue 17, item 10)."""
    cell = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("w.show("))
    (output,) = cell.outputs
    data = output["data"]
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["text/html"].count('<img src="data:image/jpeg;base64,') == 1
    assert "://" not in data["text/html"] and "seedream-4.5" in data["text/plain"]


FIRST_KERNEL = """
import json
from mh_notebook import TaskWatcher
w = TaskWatcher({key!r}, {url!r}, store={journal!r}, save_to={out!r}, time_scale=20)
w.watch({ids!r})
w
"""
UNTIL_FIRST_DONE = """
done = set()
for t in w.as_completed(timeout=120):
    done.add(t.id)
    if done >= set({fast!r}):
        break
print(json.dumps(sorted(done)))
"""
SECOND_KERNEL = """
import hashlib, json
from pathlib import Path
from mh_notebook import TaskWatcher, read_history
w = TaskWatcher({key!r}, {url!r}, store={journal!r}, save_to={out!r}, time_scale=20)
resumed = w.resume()
w.wait(timeout=120)
w.stop()
history = read_history({journal!r})
paths = dict(zip(history["task_id"], history["local_path"].astype(object).where(history["local_path"].notna(), None)))
checks = {{}}
for task_id, path in paths.items():
    checks[task_id] = None if path is None else hashlib.sha256(Path(path).read_bytes()).hexdigest()
print(json.dumps({{"resumed": sorted(resumed), "paths": paths, "sha256": checks}}))
"""


def _printed(messages: list[tuple[float, dict[str, object]]]) -> str:
    return "".join(
        str(m["content"].get("text", ""))  # type: ignore[union-attr]
        for _, m in messages
        if m["msg_type"] == "stream"
    )


def test_saved_files_survive_a_kernel_restart(tmp_path: Path) -> None:
    out, journal = tmp_path / "results", tmp_path / "journal.sqlite"
    with Simulator(seed=7, speed=20) as sim:
        fast = [sim.submit(model=m, outcome="succeeded", latency=20) for m in ("seedream-4.5", "eleven-v3")]
        slow = [
            sim.submit(model=m, outcome="succeeded", latency=140) for m in ("nano-banana-2", "viduq3-turbo")
        ]
        failed = sim.submit(model="kling-v3.0", outcome="failed", latency=30)
        fill = {"key": sim.api_key, "url": sim.url, "journal": str(journal), "out": str(out)}
        km = KernelManager(kernel_name="python3")
        km.start_kernel(cwd=str(tmp_path))
        kc = km.blocking_client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            run(kc, FIRST_KERNEL.format(ids=[*fast, *slow, failed], **fill))
            first = json.loads(_printed(run(kc, UNTIL_FIRST_DONE.format(fast=[*fast, failed]), timeout=120)))
            assert set(first) == {*fast, failed}  # the slow ones still run
            km.restart_kernel(now=True)  # the watcher, its memory and its thread are gone
            kc.wait_for_ready(timeout=60)
            after = json.loads(_printed(run(kc, SECOND_KERNEL.format(**fill), timeout=180)))
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        media = {task_id: sim._tasks[task_id].media for task_id in [*fast, *slow]}

    assert set(after["resumed"]) == set(slow)  # what had not ended was watched again
    rows = {r.task_id: r for r in SQLiteStore(journal, create=False).results()}
    assert set(rows) == set(fast) | set(slow)  # saved before and after the restart
    for task_id, file in media.items():
        path = out / safe_filename(task_id, 0, file.format)
        assert path.read_bytes() == file.data
        assert rows[task_id].local_path == str(path) == after["paths"][task_id]
        assert rows[task_id].sha256 == hashlib.sha256(file.data).hexdigest() == after["sha256"][task_id]
    assert after["paths"][failed] is None
    history = read_history(journal).set_index("task_id")  # and from this process, no watcher
    assert history.loc[fast + slow, "local_path"].tolist() == [str(rows[t].local_path) for t in fast + slow]
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(r.local_path).name for r in rows.values())
