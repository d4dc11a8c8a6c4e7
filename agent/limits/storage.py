"""Storage limits: measure the writable layer and state directory; evict when over.

Docker's overlay2 can only enforce a hard size (``--storage-opt size``) on xfs with
project quotas; on ext4 the limit is soft-enforced by eviction, as kubelet does for
ephemeral storage, and reported as such.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["StorageVerdict", "enforcement_mode", "judge_storage", "measure_tree"]

HARD_QUOTA_DRIVERS = {"btrfs", "zfs", "devicemapper", "windowsfilter"}


def enforcement_mode(engine_info: Mapping[str, Any]) -> str:
    """"quota" where the storage driver can take a size limit, else "eviction"."""
    driver = str(engine_info.get("storage_driver", ""))
    backing = str(engine_info.get("backing_filesystem", "")).lower()
    if driver in HARD_QUOTA_DRIVERS or (driver == "overlay2" and backing == "xfs"):
        return "quota"
    return "eviction"


def measure_tree(root: Path | str) -> int:
    """Bytes allocated under ``root`` (like ``du``): blocks of each file counted once,
    symlinks not followed, other filesystems not entered. A missing root is 0."""
    root = Path(root)
    try:
        device = root.lstat().st_dev
    except OSError:
        return 0
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [str(root)]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_dev != device:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return total


@dataclass(frozen=True)
class StorageVerdict:
    usage: int
    limit: int
    evict: bool
    reason: str


def judge_storage(writable_layer: int, state: int, limit: int) -> StorageVerdict:
    """Evict when the writable layer plus the state directory exceed the limit (0: none)."""
    usage = writable_layer + state
    if limit and usage > limit:
        return StorageVerdict(usage, limit, True,
                              f"storage limit exceeded: {usage} bytes used (writable layer"
                              f" {writable_layer}, state {state}) > limit {limit}")
    return StorageVerdict(usage, limit, False, "")
