"""The README's usage example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_starts_with_the_two_commands() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert "mh-notebook demo" in blocks[0]
    assert blocks[1].strip() == "bash scripts/test.sh"
    assert "scripts/test.sh" in (README.parent / ".ci" / "run").read_text()


def test_readme_usage_example_runs(capsys: object) -> None:
    code = re.search(r"## Usage\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    namespace: dict[str, object] = {}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    final = namespace["final"]
    assert isinstance(final, dict)
    assert len(final) == 3
    assert all(t.is_terminal for t in final.values())


def test_every_test_the_promise_table_names_exists() -> None:
    """The "What we promise" table names real tests (a renamed test must update the README)."""
    table = README.read_text().split("## What we promise", 1)[1].split("\n## ", 1)[0]
    named: list[tuple[str, str]] = []
    for cell in re.findall(r"`(tests/[^`]+)`", table):
        path, _, name = cell.partition("::")
        named.append((path, name))
    for cell in re.findall(r"`::(test_\w+)`", table):  # "`::name`" continues the file before it
        named.append(("", cell))
    tests = README.parent / "tests"
    sources = {p.name: p.read_text() for p in tests.glob("test_*.py")}
    assert len(named) >= 20
    for path, name in named:
        if path:
            assert (README.parent / path).exists(), path
        if name:
            assert any(f"def {name}(" in text for text in sources.values()), name
