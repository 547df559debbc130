"""A real Jupyter kernel: the panel stays live while another cell is busy."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

pytestmark = pytest.mark.kernel

SETUP = """
from mh_notebook.sim import Simulator
from mh_notebook.watcher import TaskWatcher
sim = Simulator(seed=0, speed=50).start()
ids = [sim.submit(model="eleven-v3", latency=0.5 + i * 1.5) for i in range(80)]   # one ends every 30 ms
w = TaskWatcher(sim.api_key, sim.url, time_scale=50, refresh_interval=0.5, store=None)
w.watch(ids)
w
"""


@pytest.fixture
def kernel() -> Iterator[BlockingKernelClient]:
    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.blocking_client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def run(kc: BlockingKernelClient, code: str, timeout: float = 60) -> list[tuple[float, dict[str, Any]]]:
    """Execute ``code``; return every iopub message until the kernel is idle, timestamped."""
    msg_id = kc.execute(code)
    messages: list[tuple[float, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        messages.append((time.monotonic(), msg))
        if msg["msg_type"] == "error":
            raise AssertionError("\n".join(msg["content"]["traceback"]))
        if (
            msg["msg_type"] == "status"
            and msg["content"]["execution_state"] == "idle"
            and msg["parent_header"].get("msg_id") == msg_id
        ):
            return messages
    raise TimeoutError(f"cell did not finish: {code[:60]}")


def _html_updates(messages: list[tuple[float, dict[str, Any]]]) -> list[float]:
    return [
        t
        for t, m in messages
        if m["msg_type"] == "comm_msg"
        and m["content"]["data"].get("method") == "update"
        and "value" in m["content"]["data"].get("state", {})
    ]


def test_panel_updates_while_a_cell_is_busy(kernel: BlockingKernelClient) -> None:
    shown = run(kernel, SETUP)
    assert any(
        m["msg_type"] in ("execute_result", "display_data")
        and "application/vnd.jupyter.widget-view+json" in m["content"]["data"]
        for _, m in shown
    )
    busy = run(kernel, "import time; time.sleep(2.5)")
    updates = _html_updates(busy)
    assert len(updates) >= 3, f"only {len(updates)} panel updates during a 2.5 s busy cell"
    assert len(updates) <= 2.5 * 2 * 2 + 4  # throttled: two HTML widgets, ~2 refreshes a second
    done = run(
        kernel,
        "final = w.wait(timeout=60); print(len(final), sorted({str(t.status) for t in final.values()}))",
    )
    out = "".join(m["content"].get("text", "") for _, m in done if m["msg_type"] == "stream")
    assert out.startswith("80 ")
    key = run(kernel, "print(sim.api_key)")
    api_key = next(m["content"]["text"].strip() for _, m in key if m["msg_type"] == "stream")
    everything = json.dumps([m["content"] for _, m in shown + busy + done])
    assert api_key not in everything


def test_works_after_nest_asyncio_apply(kernel: BlockingKernelClient) -> None:
    run(kernel, "import nest_asyncio; nest_asyncio.apply()")
    run(kernel, SETUP.replace("range(80)", "range(5)"))
    sync = run(kernel, "print(len(w.wait(timeout=60)))")
    assert any(m["content"].get("text", "").strip() == "5" for _, m in sync if m["msg_type"] == "stream")
    awaited = run(kernel, "res = await w.wait_async(timeout=60); print('async', len(res))")
    assert any(
        m["content"].get("text", "").strip() == "async 5" for _, m in awaited if m["msg_type"] == "stream"
    )
    collected = run(kernel, "print('completed', len([t async for t in w.as_completed_async(timeout=30)]))")
    assert any(
        m["content"].get("text", "").strip() == "completed 5"
        for _, m in collected
        if m["msg_type"] == "stream"
    )


RERUN = """
w = TaskWatcher(sim.api_key, sim.url, store=None, rate_limit=10, burst=2)
w.watch(ids)
w
"""


def test_rerunning_the_watcher_cell_adds_no_thread_and_no_load(kernel: BlockingKernelClient) -> None:
    run(
        kernel,
        "import threading, time\n"
        "from mh_notebook.sim import Simulator\n"
        "from mh_notebook.watcher import TaskWatcher\n"
        "sim = Simulator(seed=0, speed=1).start()\n"
        "ids = [sim.submit(model='veo-3.1', latency=100_000) for _ in range(30)]\n"
        "before = threading.active_count()",
    )
    for _ in range(5):
        run(kernel, RERUN)
    measured = run(
        kernel,
        "start = time.time(); time.sleep(3.0)\n"
        "sent = sum(1 for t, _, _ in list(sim.request_log) if t >= start)\n"
        "print('rate', sent / 3.0, 'threads', threading.active_count() - before)",
    )
    text = "".join(m["content"].get("text", "") for _, m in measured if m["msg_type"] == "stream")
    _, rate, _, threads = text.split()
    assert 3 <= float(rate) <= 10 * 1.3, text  # polling, within one watcher's budget
    assert int(threads) <= 1, text
