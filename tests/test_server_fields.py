"""Cost, progress, started_at, metadata, estimated_seconds and original_task_id, from the
simulator over real HTTP to the journal, ``history()``, ``latency_summary()`` and the panel.

Every test runs both ways the docs leave open: GET carrying the list-only fields
(``progress``, ``cost``, ``started_at``, ``metadata``) and GET without them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from mh_notebook import PollPolicy, read_history
from mh_notebook.journal.memory import MemoryStore
from mh_notebook.journal.postgres import PostgresStore
from mh_notebook.journal.protocol import Store, Watched
from mh_notebook.journal.sqlite import SQLiteStore
from mh_notebook.records import Event
from mh_notebook.sim import Simulator
from mh_notebook.view.render import static_text, summary_html
from mh_notebook.watcher import TaskWatcher

SPEED = 50.0
VIDEO = {"prompt": "a heron lands on a pier", "duration": 4}


@pytest.fixture(params=[True, False], ids=["get-has-list-fields", "get-without-them"])
def fields_sim(request: pytest.FixtureRequest) -> Iterator[Simulator]:
    with Simulator(seed=5, speed=SPEED, get_has_list_fields=request.param) as sim:
        yield sim


def _watcher(sim: Simulator, store: object) -> TaskWatcher:
    """Per-task GETs only: these tests are about what a GET carries (with list polling, a page
    that happens to show a task brings its cost whatever the GETs say)."""
    per_task = PollPolicy(list_polling=False)
    return TaskWatcher(sim.api_key, sim.url, store=store, display="none", time_scale=SPEED, policy=per_task)  # type: ignore[arg-type]


def test_submitted_tasks_carry_cost_metadata_and_the_server_split(
    fields_sim: Simulator, tmp_path: Path
) -> None:
    sim, journal = fields_sim, tmp_path / "journal.sqlite"
    with _watcher(sim, journal) as w:
        video = w.submit(
            "vidu/text-to-video", model="viduq3-turbo", input=VIDEO, metadata={"run": "r1", "n": 3}
        )
        image = w.submit("seedream/text-to-image", model="seedream-4-5", input={"prompt": "a pier"})
        w.wait(timeout=120)
        live = w.history().set_index("task_id")
        snap = w.snapshot()
    journalled = read_history(journal).set_index("task_id")
    for frame in (live, journalled):
        assert frame.loc[video, "metadata.run"] == "r1" and frame.loc[video, "metadata.n"] == 3
        assert pd.isna(frame.loc[image, "metadata.run"])
        assert (frame.loc[[video, image], "estimated_seconds"] > 0).all()  # from the creation answers
        truth = sim.timeline(video)
        if sim.get_has_list_fields:  # the server said when it started, and what it cost
            assert frame.loc[video, "split_from"] == "server"
            assert frame.loc[video, "queue_s"] == pytest.approx(truth["running"] - truth["created"], abs=0.01)
            assert frame.loc[video, "cost"] > 0 and frame.loc[image, "cost"] > 0
        else:
            assert frame.loc[video, "split_from"] == "observed"
            assert frame[["cost"]].isna().all().all()
        assert frame.loc[video, "queue_s"] + frame.loc[video, "run_s"] == pytest.approx(
            frame.loc[video, "latency_s"]
        )
    if sim.get_has_list_fields:
        spent = float(live["cost"].sum())
        assert snap.spend == pytest.approx(spent)
        assert f"spent ${spent:.4g}" in summary_html(snap) and "spent $" in static_text(snap, [], "")
        costs = [r.cost for r in snap.rows]
        assert sorted(c for c in costs if c is not None) == sorted(live["cost"].tolist())
    else:
        assert snap.spend is None and "spent" not in summary_html(snap)


def test_a_retry_is_linked_to_its_original(fields_sim: Simulator) -> None:
    sim = fields_sim
    failed = sim.submit(model="viduq3-turbo", outcome="failed", latency=2)
    with _watcher(sim, None) as w:
        w.watch(failed)
        w.wait(timeout=60)
        again = w.retry(failed)
        w.wait(timeout=120)
        frame = w.history().set_index("task_id")
    assert frame.loc[again, "original_task_id"] == failed
    assert pd.isna(frame.loc[failed, "original_task_id"])


def test_latency_summary_prices_models(fields_sim: Simulator) -> None:
    sim = fields_sim
    with _watcher(sim, None) as w:
        for seconds in (4, 8):
            w.submit("vidu/text-to-video", model="viduq3-turbo", input={**VIDEO, "duration": seconds})
        w.wait(timeout=120)
        history = w.history()
        summary = w.latency_summary()
    row = summary.loc[("vidu", "viduq3-turbo")]
    if not sim.get_has_list_fields:
        assert pd.isna(row["total_cost_usd"]) and pd.isna(row["cost_per_output_s_usd"])
        return
    ok = history[history["status"] == "succeeded"]
    assert row["total_cost_usd"] == pytest.approx(history["cost"].sum())
    assert row["cost_per_success_usd"] == pytest.approx(history["cost"].sum() / len(ok))
    if ok["duration_s"].notna().all():
        assert row["cost_per_output_s_usd"] == pytest.approx(ok["cost"].sum() / ok["duration_s"].sum())


def _event(status: str, at: float, **fields: object) -> Event:
    base = Event("task_f", status, at, 1, "video", "vidu", "viduq3-turbo", 100.0)
    return base._replace(**fields)


def _store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "j.sqlite")
    return PostgresStore(request.getfixturevalue("pg").new_database())


@pytest.mark.parametrize("kind", ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_task_keeps_the_latest_value_each_server_field_was_sent(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Only some answers carry them (creation: the estimate; list items: cost and start): a later
    answer without one must not erase it, in SQL (SQLite, PostgreSQL) as in pandas."""
    store = _store(kind, tmp_path, request)
    store.add_watched([Watched("task_f", "http://x", 100.0)])
    store.add_many([
        _event("pending", 100.5, estimated_seconds=30.0, metadata='{"run": "a"}'),
        _event("running", 104.0, server_started_at=103.0, progress=10.0, cost=0.2),
        _event("running", 106.0, polls=2, progress=50.0),
        _event("succeeded", 131.0, polls=3, completed_at=130.0, cost=0.32, metadata='{"run": "b"}'),
    ])  # fmt: skip
    try:
        frame = read_history(store).set_index("task_id")
    finally:
        store.close()
    row = frame.loc["task_f"]
    assert (row["estimated_seconds"], row["cost"], row["metadata.run"]) == (30.0, 0.32, "b")
    assert row["split_from"] == "server" and row["queue_s"] == 3.0 and row["run_s"] == 27.0


def test_a_server_time_out_of_pandas_range_is_missing_never_an_error() -> None:
    """Found by the reduction property: a ``started_at`` (or any server time) in the year 3000
    made ``history()`` raise OutOfBoundsDatetime. A malformed time is missing, the rest stays."""
    store = MemoryStore()
    store.add_many([_event("running", 104.0, server_started_at=9.3e9, cost=0.5)._replace(created_at=-1e11)])
    row = read_history(store).set_index("task_id").loc["task_f"]
    assert pd.isna(row["started_at"]) and pd.isna(row["created_at"]) and row["cost"] == 0.5
