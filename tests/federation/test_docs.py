"""docs/ stays true to the code: every test the threat table names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _test_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        names.update(re.findall(r"^def (test_\w+)", path.read_text(), flags=re.MULTILINE))
    return names


def test_every_test_named_in_the_threat_table_exists() -> None:
    text = (ROOT / "docs" / "threats.md").read_text()
    named = set(re.findall(r"::(test_\w+\*?)", text))
    assert len(named) > 40
    existing = _test_names()
    missing = sorted(
        name
        for name in named
        if not (
            any(t.startswith(name[:-1]) for t in existing)
            if name.endswith("*")
            else name in existing
        )
    )
    assert missing == []


def test_docs_and_readme_link_to_files_that_exist() -> None:
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
