"""Storage: measuring trees, the eviction verdict and the enforcement mode."""

from __future__ import annotations

import os
from pathlib import Path

from agent.limits.storage import enforcement_mode, judge_storage, measure_tree


def test_measure_counts_blocks_once_and_ignores_symlinks(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a").write_bytes(b"x" * 100_000)
    os.link(tmp_path / "sub" / "a", tmp_path / "hardlink")
    (tmp_path / "link").symlink_to("/usr")
    size = measure_tree(tmp_path)
    assert 100_000 <= size < 200_000
    assert measure_tree(tmp_path / "missing") == 0


def test_verdict() -> None:
    assert not judge_storage(5, 4, 10).evict
    over = judge_storage(8, 4, 10)
    assert over.evict and over.usage == 12 and "writable layer 8, state 4" in over.reason
    assert not judge_storage(10**12, 0, 0).evict  # 0 = unlimited


def test_enforcement_mode() -> None:
    assert (
        enforcement_mode({"storage_driver": "overlay2", "backing_filesystem": "extfs"})
        == "eviction"
    )
    assert enforcement_mode({"storage_driver": "overlay2", "backing_filesystem": "xfs"}) == "quota"
    assert enforcement_mode({"storage_driver": "btrfs"}) == "quota"
