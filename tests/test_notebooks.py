"""Every notebook under notebooks/ runs in a real kernel, with no errors and no key leaked."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.kernel

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
LEAK_CELL = "from pathlib import Path as _P; _P({path!r}).write_text(sim.api_key)"


def test_notebooks_are_committed_without_outputs() -> None:
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(
            not c.get("outputs") and c.get("execution_count") is None
            for c in nb.cells
            if c.cell_type == "code"
        ), path
        assert "widgets" not in nb.metadata, path


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_cleanly(path: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    key_file = tmp_path / "key.txt"
    nb.cells.append(nbformat.v4.new_code_cell(LEAK_CELL.format(path=str(key_file))))
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    nb.cells.pop()  # the helper cell itself names the key's file, not the key
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors[0]["traceback"] if errors else ""
    assert not [
        o for o in outputs if o.output_type == "stream" and o.name == "stderr" and "Traceback" in o.text
    ]
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    html_values = [m["state"].get("value", "") for m in state.values() if m["model_name"] == "HTMLModel"]
    assert any("succeeded</span>" in v and "ModelHunter tasks" in v for v in html_values)
    assert any(">succeeded</span>" in v and "<table" in v for v in html_values)
    api_key = key_file.read_text()
    assert api_key.startswith("river_")
    assert api_key not in json.dumps(nb)
    (tmp_path / "executed.ipynb").write_text(nbformat.writes(nb))
