"""A snapshot of a cluster's state in etcd: what it holds, and its file format.

A snapshot is every key under the cluster's prefix as of one etcd revision (one range read,
so it is consistent), with the keys relative to the prefix: it can be restored under
another prefix. Left out are the keys bound to a lease, which a restored cluster makes
anew (``leader``, ``alive/...``), and the restore's own marker (``restoring``).

The file is UTF-8 JSON::

    {"format": "landlord-snapshot/1", "revision": 812, "taken_at": 1764770000.1,
     "release": "0.2.0", "prefix": "/landlord", "keys": 41, "sha256": "<hex>",
     "entries": [["hosts/h1", "<the value as text>"], ["units/shop/web", ...], ...]}

``sha256`` covers ``entries`` as written (compact JSON, sorted by key), so a cut or edited
file is refused before anything is written. A value that is not UTF-8 (Landlord writes none)
is kept as ``{"b64": "..."}``. The file holds secret env values: keep it like a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from common.errors import InvalidArgument
from common.input_bounds import quoted
from coordinator.state.keys import KeyLayout
from coordinator.state.store import Entry

__all__ = ["FORMAT", "Snapshot", "SnapshotInvalid", "decode", "encode", "kept", "snapshot_of"]

FORMAT = "landlord-snapshot/1"
_LEASED = ("leader", "restoring")
_LEASED_DIRS = ("alive/",)
_KEY = re.compile(r"[A-Za-z0-9._:@=+-]+(/[A-Za-z0-9._:@=+-]+)*\Z")
MAX_KEY = 1024


class SnapshotInvalid(InvalidArgument):
    """A snapshot file that cannot be restored: not one, cut, edited or of a later format."""


def kept(relative: str) -> bool:
    """Whether a key (relative to the prefix) belongs in a snapshot."""
    return relative not in _LEASED and not relative.startswith(_LEASED_DIRS)


@dataclass(frozen=True)
class Snapshot:
    revision: int
    """The etcd revision the keys were read at."""
    taken_at: float
    release: str
    """The release of the coordinator that took it."""
    prefix: str
    """The prefix the keys were under (informative: a restore writes under its own)."""
    entries: tuple[tuple[str, bytes], ...]
    """(key relative to the prefix, value), sorted by key."""

    def counts(self) -> dict[str, int]:
        """Keys by kind (``hosts``, ``units``, ``instances``, ...)."""
        return dict(sorted(Counter(key.split("/", 1)[0] for key, _ in self.entries).items()))

    def summary(self) -> str:
        kinds = ", ".join(f"{kind} {n}" for kind, n in self.counts().items())
        return f"{len(self.entries)} keys at etcd revision {self.revision} ({kinds})"


def snapshot_of(entries: Iterable[Entry], revision: int, layout: KeyLayout, *,
                taken_at: float, release: str) -> Snapshot:
    """The snapshot of ``entries`` (as listed under ``layout.root`` at ``revision``)."""
    kept_entries = sorted(
        (entry.key[len(layout.root):], entry.value) for entry in entries
        if entry.key.startswith(layout.root) and kept(entry.key[len(layout.root):]))
    return Snapshot(revision, taken_at, release, layout.prefix, tuple(kept_entries))


def _value_text(value: bytes) -> str | dict[str, str]:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode("ascii")}


def _entries_json(entries: list[list[Any]]) -> str:
    return json.dumps(entries, ensure_ascii=False, separators=(",", ":"))


def encode(snapshot: Snapshot) -> bytes:
    entries = [[key, _value_text(value)] for key, value in snapshot.entries]
    body = _entries_json(entries)
    head = {"format": FORMAT, "revision": snapshot.revision, "taken_at": snapshot.taken_at,
            "release": snapshot.release, "prefix": snapshot.prefix,
            "keys": len(entries), "sha256": hashlib.sha256(body.encode()).hexdigest()}
    text = json.dumps(head, ensure_ascii=False, separators=(",", ":"))
    return (text[:-1] + ',"entries":' + body + "}\n").encode()


def decode(data: bytes) -> Snapshot:
    """The snapshot in ``data``; raises SnapshotInvalid saying what is wrong."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SnapshotInvalid(f"not a Landlord snapshot: it is not JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else None
        raise SnapshotInvalid(f"not a Landlord snapshot of format {FORMAT} "
                              f"(format: {quoted(str(found))})")
    entries = raw.get("entries")
    if not isinstance(entries, list):
        raise SnapshotInvalid("the snapshot has no entries list")
    digest = hashlib.sha256(_entries_json(entries).encode()).hexdigest()
    if digest != raw.get("sha256") or raw.get("keys") != len(entries):
        raise SnapshotInvalid(
            f"the snapshot's entries do not match its checksum ({raw.get('keys')} keys "
            f"recorded, {len(entries)} found): the file was cut or changed")
    try:
        revision, taken_at = int(raw["revision"]), float(raw["taken_at"])
        release, prefix = str(raw.get("release", "")), str(raw.get("prefix", ""))
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotInvalid(f"the snapshot's header is incomplete ({exc})") from None
    return Snapshot(revision, taken_at, release, prefix, _entries(entries))


def _entries(entries: list[Any]) -> tuple[tuple[str, bytes], ...]:
    out: list[tuple[str, bytes]] = []
    for item in entries:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise SnapshotInvalid(f"a snapshot entry is not [key, value]: {quoted(str(item))}")
        key, value = item
        if len(key) > MAX_KEY or not _KEY.match(key) or ".." in key.split("/"):
            raise SnapshotInvalid(f"a snapshot key is not a Landlord key: {quoted(key)}")
        if not kept(key):
            raise SnapshotInvalid(f"a snapshot may not hold the lease-bound key {quoted(key)}")
        out.append((key, _value_bytes(key, value)))
    keys = [key for key, _ in out]
    if keys != sorted(set(keys)):
        raise SnapshotInvalid("the snapshot's keys are not sorted and unique")
    return tuple(out)


def _value_bytes(key: str, value: Any) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise SnapshotInvalid(f"the value of {quoted(key)} is not UTF-8 text") from None
    if isinstance(value, dict) and isinstance(value.get("b64"), str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            pass
    raise SnapshotInvalid(f"the value of {quoted(key)} is neither text nor base64")
