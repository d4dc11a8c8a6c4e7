"""Test files have unique names across tests/: pytest imports them by basename (rootdir
without __init__ packages), and two files of one name stop the whole suite at collection,
which a run of one directory does not show."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_file_name_is_unique() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
