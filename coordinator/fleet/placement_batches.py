"""How many decided placements one etcd transaction can record (pure).

etcd refuses a transaction of more than ``--max-txn-ops`` operations (128 by default). A
placement records, per new instance, a compare (absent) and a put of its record, and per
host it touches, a compare on the host's allocation ledger and a put of the ledger. A
deploy of hundreds of replicas is therefore recorded in several transactions, each holding
the longest prefix of the decided placements that fits the operations left over (after the
fence and whatever else the first one carries); the writer decides again before each one.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["HOST_OPS", "INSTANCE_OPS", "fitting"]

INSTANCE_OPS = 2
"""An instance record's compare (must not exist) and put."""
HOST_OPS = 2
"""A host allocation ledger's compare (its revision as read) and put."""


def fitting(host_ids: Sequence[str], budget: int) -> int:
    """How many of the first placements (their hosts, in order) fit in ``budget`` ops."""
    seen: set[str] = set()
    used = 0
    for count, host_id in enumerate(host_ids):
        cost = INSTANCE_OPS + (0 if host_id in seen else HOST_OPS)
        if used + cost > budget:
            return count
        used += cost
        seen.add(host_id)
    return len(host_ids)

