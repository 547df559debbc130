"""Journals written by earlier releases open, upgrade in place, and read back unchanged.

``journal-v5.sqlite`` was written by 0.2's own code (``scripts/make_v5_journal.py``), and
``journal-v5.expected.json`` is what 0.2's ``read_history`` read from it. Whatever columns a
later release adds must come up empty for it; every value 0.2 read must read the same.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd

from mh_notebook import read_history
from mh_notebook.journal.migrations import SCHEMA_VERSION
from mh_notebook.journal.sqlite import SQLiteStore

DATA = Path(__file__).parent / "data"
SCRIPTS = Path(__file__).parents[1] / "scripts"


def _summarise() -> Any:
    """scripts/make_v1_journal.py's ``summarise``: how the fixtures' expected values were made."""
    spec = importlib.util.spec_from_file_location("make_v1_journal", SCRIPTS / "make_v1_journal.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.summarise


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "journal.sqlite"
    shutil.copyfile(DATA / "journal-v5.sqlite", copy)
    return copy


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_the_v5_fixture_is_what_0_2_wrote() -> None:
    assert _rows(DATA / "journal-v5.sqlite", "PRAGMA user_version") == [(5,)]
    assert sorted(p.name for p in DATA.glob("journal-v5.sqlite*")) == ["journal-v5.sqlite"]


def test_a_0_2_journal_opens_and_reads_back_unchanged(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    expected = json.loads((DATA / "journal-v5.expected.json").read_text())
    events = _rows(path, "SELECT task_id, status, observed_at, polls, error_message FROM events ORDER BY seq")
    results = _rows(path, "SELECT * FROM results ORDER BY task_id, idx")
    SQLiteStore(path).close()
    assert _rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert (
        _rows(path, "SELECT task_id, status, observed_at, polls, error_message FROM events ORDER BY seq")
        == events
    )
    frame = read_history(path)
    known = list(expected["tasks"][0])
    assert _summarise()(frame[known]) == expected["tasks"]
    added = [c for c in frame.columns if c not in known and c != "split_from"]
    assert all(frame[c].isna().all() or (frame[c].dtype == bool and not frame[c].any()) for c in added), added
    if "split_from" in frame:  # 0.2 knew only what it observed
        observed = frame["started_at"].notna()
        assert (frame.loc[observed, "split_from"] == "observed").all()
        assert frame.loc[~observed, "split_from"].isna().all()
    store = SQLiteStore(path)
    try:
        assert [tuple(r) for r in store.results()] == [tuple(r) for r in results]
        predicted = {w.task_id: w.predicted_latency_s for w in store.watched()}
        assert predicted["task_v5_video"] == 38.5 and pd.isna(predicted["task_v5_unseen"])
    finally:
        store.close()
