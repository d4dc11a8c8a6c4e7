"""The etcd key layout of a Landlord cluster, under a configurable prefix (default /landlord).

Every value is UTF-8 JSON; the records of the versioned kinds (coordinator/state/migrations.py)
carry ``"schema"``. ``{p}`` is the prefix; names are validated before they become
keys (lowercase names, no ``/`` inside a segment).

=============================================  ==============================================
key                                            value, writer and when
=============================================  ==============================================
{p}/leader                                     ``{"id", "address"}`` of the leading
                                               coordinator, attached to its lease (TTL 5 s).
                                               Created only if absent (election); every
                                               leader write is fenced on this key's
                                               create revision and value.
{p}/schema                                     ``{"schema", "release"}``: the record schema
                                               of the cluster (``common.schema``), written
                                               by a leader once it has migrated every
                                               record to it. A coordinator that knows an
                                               older schema does not lead.
{p}/hosts/{host_id}                            HostRecord: building, address, capacity,
                                               labels, enforceable limits, images, and the
                                               persisted status (``alive`` or ``lost``).
                                               Written at registration when something
                                               changed, and when a host is declared lost or
                                               comes back. Never per report. Deleted with
                                               the host's alive, alloc and leftover status
                                               keys once it has been lost for
                                               forget_host_after with nothing placed on it.
{p}/alive/{host_id}                            ``{"since"}``, attached to a per-host lease
                                               that the leader refreshes (no write) while
                                               the host reports; it vanishes when reports
                                               stop, so any coordinator sees who is alive.
{p}/alloc/{host_id}                            Allocation ledger of the host:
                                               ``{instance_id: {cpu, memory, storage,
                                               network, port}}``. The compare-and-swap unit
                                               of placement: two coordinators can never
                                               over-commit a host.
{p}/instances/{instance_id}                    InstanceRecord: the desired instance (unit,
                                               version, slot, host, port, resources).
                                               Written with its allocation in one
                                               transaction; deleted with it.
{p}/status/{instance_id}                       Last observed state of the instance (state,
                                               health, restarts, reason). Written only when
                                               the state changes, not per report.
{p}/units/{apartment}/{unit}                   UnitRecord: deploy state, stable and latest
                                               version, building, replicas.
{p}/versions/{apartment}/{unit}/{version}      Published version tag (immutable) plus its
                                               deployment fields (service port, state mode).
{p}/routes/{apartment}/{unit}                  RouteRecord: traffic split, version ->
                                               percent, and the service port.
{p}/rollouts/{apartment}/{unit}/{rollout_id}   Rollout record (rollout engine).
{p}/active-rollout/{apartment}/{unit}          ``{"rollout_id", "since"}``: the unit's one
                                               active rollout. Created only if absent (or
                                               naming an ended rollout) in the transaction
                                               that creates the rollout record; deleted in
                                               the one that ends it
                                               (coordinator/rollouts/one_active.py).
{p}/restoring                                 ``{"since", "snapshot_revision", "keys"}``:
                                               a snapshot restore is writing this prefix
                                               (coordinator/state/snapshot.py). Created
                                               first and deleted last; no coordinator
                                               leads while it exists.
{p}/drains/{host_id}                           DrainRecord of ``landlord hosts drain``
                                               (coordinator/fleet/drain_plan.py): state,
                                               the move under way, what was moved or
                                               skipped. Written by the leader at each
                                               step; deleted when the host is
                                               decommissioned.
{p}/decommissioned/{host_id}                   ``{"at", "building"}``: the host was
                                               decommissioned; its agent's registration
                                               is refused (a new host id brings the
                                               machine back).
{p}/events/{time_ns:020d}-{n:06d}              One event. Its sequence is the key's create
                                               revision x 1000 + its position in the
                                               transaction. Trimmed to a bounded history.
=============================================  ==============================================
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KeyLayout"]


@dataclass(frozen=True)
class KeyLayout:
    """Builds and parses the keys above for one prefix."""

    prefix: str = "/landlord"

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", "/" + self.prefix.strip("/"))

    @property
    def root(self) -> str:
        """Everything of this cluster: the one prefix the coordinator watches."""
        return self.prefix + "/"

    @property
    def leader(self) -> str:
        return f"{self.prefix}/leader"

    @property
    def schema(self) -> str:
        return f"{self.prefix}/schema"

    @property
    def restoring(self) -> str:
        return f"{self.prefix}/restoring"

    def host(self, host_id: str) -> str:
        return f"{self.prefix}/hosts/{host_id}"

    def alive(self, host_id: str) -> str:
        return f"{self.prefix}/alive/{host_id}"

    def alloc(self, host_id: str) -> str:
        return f"{self.prefix}/alloc/{host_id}"

    def instance(self, instance_id: str) -> str:
        return f"{self.prefix}/instances/{instance_id}"

    def status(self, instance_id: str) -> str:
        return f"{self.prefix}/status/{instance_id}"

    def unit(self, apartment: str, unit: str) -> str:
        return f"{self.prefix}/units/{apartment}/{unit}"

    def version(self, apartment: str, unit: str, version: str) -> str:
        return f"{self.prefix}/versions/{apartment}/{unit}/{version}"

    def versions_of(self, apartment: str, unit: str) -> str:
        return f"{self.prefix}/versions/{apartment}/{unit}/"

    def route(self, apartment: str, unit: str) -> str:
        return f"{self.prefix}/routes/{apartment}/{unit}"

    def rollout(self, apartment: str, unit: str, rollout_id: str) -> str:
        return f"{self.prefix}/rollouts/{apartment}/{unit}/{rollout_id}"

    def active_rollout(self, apartment: str, unit: str) -> str:
        return f"{self.prefix}/active-rollout/{apartment}/{unit}"

    def drain(self, host_id: str) -> str:
        return f"{self.prefix}/drains/{host_id}"

    def decommissioned(self, host_id: str) -> str:
        return f"{self.prefix}/decommissioned/{host_id}"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events/"

    def event(self, time_ns: int, counter: int) -> str:
        return f"{self.prefix}/events/{time_ns:020d}-{counter:06d}"

    def kind_of(self, key: str) -> tuple[str, tuple[str, ...]]:
        """(``hosts``, (host_id,)) for a key of this layout; ("", ()) for anything else."""
        if not key.startswith(self.root):
            return "", ()
        parts = key[len(self.root) :].split("/")
        if parts == ["leader"]:
            return "leader", ()
        return parts[0], tuple(parts[1:])
