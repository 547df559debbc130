"""Writes tests/data/journal-v5.sqlite (a schema-5 journal) with mh_notebook 0.2's own code.

.venv/bin/python scripts/make_v5_journal.py

The 0.2 ``store.py``, ``dialect.py`` and ``history.py`` are read from git (commit ``8258cec``,
the last commit of 0.2) and run as modules of their own, exactly as ``make_v1_journal.py``
does for 0.1.0. The journal holds what 0.2 writes and 0.1.0 did not: predicted latencies,
saved result files, and events of two base URLs; the expected per-task values
(``journal-v5.expected.json``) are what 0.2's ``read_history`` gives for it. Everything is
fixed: no clock, no randomness. A later release must open this file, upgrade it, and read
every one of those values back unchanged (its new columns empty).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_v1_journal
from make_v1_journal import old_module as _old_module_v1
from make_v1_journal import single_file, summarise

REV = "8258cec"
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
JOURNAL = DATA / "journal-v5.sqlite"
EXPECTED = DATA / "journal-v5.expected.json"
API = "https://api.modelhunter.ai"
LOCAL = "http://127.0.0.1:8765"
T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z


def old_module(name: str, path: str, replace: dict[str, str] | None = None) -> types.ModuleType:
    """The file ``path`` of commit ``REV`` run as module ``name``."""
    make_v1_journal.REV = REV
    return _old_module_v1(name, path, replace)


def _raw(task_id: str, status: str, **data: Any) -> str:
    return json.dumps({"id": task_id, "status": status, **data})


def write_journal(store: types.ModuleType, path: Path) -> dict[str, str]:
    """Six tasks against two base URLs through the 0.2 store; returns task id -> base URL."""
    event, watched, saved = store.Event, store.Watched, store.SavedResult
    video = {"type": "video", "provider": "vidu", "model": "viduq3-turbo", "created_at": T0 - 0.5}
    image = {"type": "image", "provider": "seedream", "model": "seedream-4.5", "created_at": T0 + 1.0}
    audio = {"type": "audio", "provider": "elevenlabs", "model": "eleven-v3", "created_at": T0 + 2.0}
    bases = {
        "task_v5_video": API,
        "task_v5_image": API,
        "task_v5_odd": API,
        "task_v5_cancel": LOCAL,
        "task_v5_missing": LOCAL,
        "task_v5_unseen": API,
    }
    odd = 'moderation: « ünïcødé » \t tab, quote " and <b>html</b>'
    events = [
        event("task_v5_video", "queued", T0 + 0.5, 1, **video, raw=_raw("task_v5_video", "queued")),
        event("task_v5_image", "running", T0 + 1.5, 1, **image, raw=_raw("task_v5_image", "running")),
        event("task_v5_odd", "running", T0 + 2.5, 1, **audio, raw=_raw("task_v5_odd", "running")),
        event("task_v5_cancel", "pending", T0 + 3.0, 1, **video, raw=_raw("task_v5_cancel", "pending")),
        event("task_v5_missing", "not_found", T0 + 3.5, 4),
        event("task_v5_image", "succeeded", T0 + 7.25, 3, **image, completed_at=T0 + 7.0, n_results=2,
              format="png", size_bytes=1_048_576, raw=_raw("task_v5_image", "succeeded")),
        event("task_v5_odd", "failed", T0 + 9.0, 2, **audio, completed_at=T0 + 8.5,
              error_code="PROVIDER_ERROR", error_message=odd, raw=_raw("task_v5_odd", "failed")),
        event("task_v5_video", "running", T0 + 12.0, 3, **video, raw=_raw("task_v5_video", "running")),
        event("task_v5_cancel", "cancelled", T0 + 20.0, 2, **video, completed_at=T0 + 19.5,
              raw=_raw("task_v5_cancel", "cancelled")),
        event("task_v5_video", "succeeded", T0 + 40.5, 6, **video, completed_at=T0 + 40.0, n_results=1,
              format="mp4", duration_s=5.0, size_bytes=9_437_184, raw=_raw("task_v5_video", "succeeded")),
        event("task_v5_image", "expired", T0 + 1000.0, 4, **image, completed_at=T0 + 7.0,
              raw=_raw("task_v5_image", "expired")),
    ]  # fmt: skip
    results = [
        saved("task_v5_image", 0, "/results/task_v5_image_0.png", "ab" * 32, 1_048_576, T0 + 8.0),
        saved("task_v5_image", 1, "/results/task_v5_image_1.png", "cd" * 32, 1_000_000, T0 + 8.5),
        saved("task_v5_video", 0, "/results/task_v5_video_0.mp4", "ef" * 32, 9_437_184, T0 + 42.0),
    ]
    journal = store.SQLiteStore(path)
    try:
        journal.add_watched(
            watched(task_id, base, T0 + i / 4) for i, (task_id, base) in enumerate(bases.items())
        )
        journal.set_predictions([("task_v5_video", 38.5), ("task_v5_image", 6.25)])
        journal.add_many(events)
        journal.add_results(results)
    finally:
        journal.close()
    return bases


def main() -> None:
    """Write the journal with the 0.2 store, then the expected values by the 0.2 history."""
    old_module("mh_dialect_v02", "mh_notebook/dialect.py")
    store = old_module(
        "mh_store_v02", "mh_notebook/store.py", {"from .dialect import": "from mh_dialect_v02 import"}
    )
    history = old_module(
        "mh_history_v02", "mh_notebook/history.py", {"from .store import": "from mh_store_v02 import"}
    )
    DATA.mkdir(parents=True, exist_ok=True)
    for stale in DATA.glob(f"{JOURNAL.name}*"):
        stale.unlink()
    bases = write_journal(store, JOURNAL)
    tasks = summarise(history.read_history(JOURNAL))
    single_file(JOURNAL, version=5)
    expected = {"made_by": f"mh_notebook {REV} (0.2) read_history", "base_urls": bases, "tasks": tasks}
    EXPECTED.write_text(json.dumps(expected, indent=1, allow_nan=False) + "\n")
    print(f"{JOURNAL.relative_to(ROOT)}: {JOURNAL.stat().st_size} bytes, {len(tasks)} tasks")


if __name__ == "__main__":
    main()
