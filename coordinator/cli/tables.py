"""Rich views of units, versions, dependency trees, hosts, instances and events.

Each function turns one API message into a renderable and does nothing else, so the
views are tested by rendering them into a recording console.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from common.gen.landlord.v1 import admin_pb2, types_pb2
from common.network_modes import DEFAULT_NETWORK_MODE
from common.resources import format_bandwidth, format_bytes
from coordinator.cli.durations import format_duration, seconds_from_proto
from coordinator.cli.output import enum_label, format_time

__all__ = [
    "event_line",
    "gc_view",
    "hosts_table",
    "instances_table",
    "leader_view",
    "publish_view",
    "resolve_tree",
    "resources_text",
    "unit_view",
    "units_table",
    "versions_table",
]


def _table(*columns: str, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def format_cpu_millis(millis: int) -> str:
    if millis % 1000 == 0:
        return str(millis // 1000)
    return f"{millis}m"


def _bytes(size: int) -> str:
    return format_bytes(size) if size else "0"


def _bits(rate: int) -> str:
    return format_bandwidth(rate) if rate else "0"


def resources_text(resources: types_pb2.Resources) -> str:
    """``cpu 500m, memory 256Mi`` (dimensions left at zero are unlimited and left out)."""
    parts = []
    if resources.cpu_millis:
        parts.append(f"cpu {format_cpu_millis(resources.cpu_millis)}")
    if resources.memory_bytes:
        parts.append(f"memory {format_bytes(resources.memory_bytes)}")
    if resources.storage_bytes:
        parts.append(f"storage {format_bytes(resources.storage_bytes)}")
    if resources.network_bps:
        parts.append(f"network {format_bandwidth(resources.network_bps)}")
    return ", ".join(parts) or "unlimited"


def unit_state_text(unit: types_pb2.UnitInfo) -> str:
    """The deploy state, and what of the unit is paused or collected: "running (paused)"
    when every instance is, "running (1 of 3 paused)" when some are."""
    notes = [
        f"{count} of {unit.instances} {what}" if count < unit.instances else what
        for count, what in ((unit.paused_instances, "paused"),
                            (unit.collected_instances, "collected"))
        if count
    ]
    state = unit.state or "-"
    return f"{state} ({', '.join(notes)})" if notes else state


def units_table(response: admin_pb2.ListUnitsResponse) -> RenderableType:
    if not response.units:
        return Text("no units")
    table = _table("UNIT", "STATE", "STABLE", "LATEST", "INSTANCES", "BUILDING")
    for unit in response.units:
        table.add_row(
            f"{unit.apartment}/{unit.unit}",
            unit_state_text(unit),
            unit.stable_version or "-",
            unit.latest_version or "-",
            str(unit.instances),
            unit.building or "-",
        )
    return table


def _changes_text(changes: types_pb2.ChangeSet) -> str:
    counts = [
        (len(changes.breaking), "breaking"),
        (len(changes.features), "features"),
        (len(changes.fixes), "fixes"),
        (len(changes.internal), "internal"),
    ]
    return ", ".join(f"{count} {kind}" for count, kind in counts if count) or "-"


def _state_mode(mode: int) -> str:
    return (
        "none"
        if mode == types_pb2.STATE_MODE_UNSPECIFIED
        else enum_label(types_pb2.StateMode, mode)
    )


def _spec_rows(version: types_pb2.VersionInfo) -> list[tuple[str, str]]:
    spec = version.spec
    rows = [
        ("latest version", version.version),
        ("published", format_time(version.created_at)),
        ("checksum", version.checksum or "-"),
        ("image", spec.image),
        ("image digest", version.image_digest or "- (local image, not resolved)"),
        ("command", " ".join(spec.command) or "(image default)"),
        ("port", str(spec.port) if spec.port else "assigned"),
        ("service port", str(spec.service_port) if spec.service_port else "-"),
        ("health", spec.health.path or "-"),
        ("resources", resources_text(spec.resources)),
        ("state mode", _state_mode(spec.state_mode)),
        ("network mode", spec.network_mode or f"{DEFAULT_NETWORK_MODE} (default)"),
        ("runs as", "root (--run-as-root)" if spec.run_as_root
         else "the image's user, or uid 65532 when it names none or root"),
        ("dependencies", ", ".join(spec.dependencies) or "-"),
        ("changes", _changes_text(version.changes)),
    ]
    if spec.idle_timeout.seconds or spec.idle_timeout.nanos:
        rows.append(("idle timeout", format_duration(seconds_from_proto(spec.idle_timeout))))
    for key, value in sorted(spec.env.items()):
        rows.append((f"env {key}", value))
    for key, value in sorted(spec.secret_env.items()):
        rows.append((f"secret env {key}", value))
    return rows


def unit_view(response: admin_pb2.GetUnitResponse) -> RenderableType:
    unit = response.unit
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    for key, value in (
        ("unit", f"{unit.apartment}/{unit.unit}"),
        ("state", unit_state_text(unit)),
        ("stable version", unit.stable_version or "-"),
        ("building", unit.building or "-"),
        ("sticky canary", "yes" if unit.sticky else "no"),
    ):
        facts.add_row(key, value)
    for version, why in sorted(unit.failing_versions.items()):
        facts.add_row(f"failing {version}", why)
    if response.HasField("latest"):
        for key, value in _spec_rows(response.latest):
            facts.add_row(key, value)
    parts: list[RenderableType] = [facts]
    if response.instances:
        parts.extend([Text(""), instances_table(response.instances)])
    return Group(*parts)


def versions_table(response: admin_pb2.ListVersionsResponse) -> RenderableType:
    if not response.versions:
        return Text("no versions")
    table = _table("VERSION", "PUBLISHED", "CHECKSUM", "IMAGE", "DIGEST", "CHANGES",
                   "DEPENDENCIES")
    for version in response.versions:
        table.add_row(
            version.version,
            format_time(version.created_at),
            version.checksum[:12] or "-",
            version.spec.image or "-",
            _short_digest(version.image_digest),
            _changes_text(version.changes),
            ", ".join(version.spec.dependencies) or "-",
        )
    return table


def _short_digest(digest: str) -> str:
    """``sha256:`` and 12 hex digits, like Docker's short ids (``-`` for a local image)."""
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}:{value[:12]}" if value else "-"


def resolve_tree(root: str, resolved: Sequence[types_pb2.ResolvedDependency]) -> Tree:
    """The resolved dependencies of ``root`` (``apartment/unit@version``) as a tree."""
    tree = Tree(Text(root, style="bold"))
    children: dict[str, list[types_pb2.ResolvedDependency]] = {}
    names = {dep.unit for dep in resolved}
    root_name = root.partition("@")[0]
    for dep in resolved:
        parent = dep.required_by.partition("@")[0]
        if parent not in names or parent == dep.unit:
            parent = root_name
        children.setdefault(parent, []).append(dep)

    def grow(node: Tree, name: str, path: frozenset[str]) -> None:
        for dep in children.get(name, []):
            label = Text.assemble(f"{dep.unit}@{dep.version}  ", (f"(range {dep.range})", "dim"))
            branch = node.add(label)
            if dep.unit not in path:
                grow(branch, dep.unit, path | {dep.unit})

    grow(tree, root_name, frozenset({root_name}))
    if not resolved:
        tree.add(Text("no dependencies", style="dim"))
    return tree


def publish_view(response: admin_pb2.PublishVersionResponse) -> RenderableType:
    version = response.version
    verb = "already published" if response.already_published else "published"
    lines = [f"{verb} {version.apartment}/{version.unit} {version.version}"]
    if version.checksum:
        lines.append(f"checksum {version.checksum}")
    if version.image_digest:
        lines.append(f"image {version.spec.image} resolved to {version.image_digest}; "
                     f"hosts run {version.image_id}")
    for dep in version.resolved:
        lines.append(f"depends on {dep.unit}@{dep.version} (range {dep.range})")
    return Text("\n".join(lines))


def hosts_table(response: admin_pb2.ListHostsResponse) -> RenderableType:
    if not response.hosts:
        return Text("no hosts")
    table = _table(
        "HOST",
        "BUILDING",
        "ADDRESS",
        "STATUS",
        "CPU",
        "MEMORY",
        "STORAGE",
        "NETWORK",
        "ENFORCES",
        "LAST SEEN",
        "AGENT",
        "SCHEDULING",
    )
    for host in response.hosts:
        used, cap = host.allocated, host.capacity
        table.add_row(
            host.host_id,
            host.building or "-",
            host.address or "-",
            host.status or "-",
            f"{format_cpu_millis(used.cpu_millis)}/{format_cpu_millis(cap.cpu_millis)}",
            f"{_bytes(used.memory_bytes)}/{_bytes(cap.memory_bytes)}",
            f"{_bytes(used.storage_bytes)}/{_bytes(cap.storage_bytes)}",
            f"{_bits(used.network_bps)}/{_bits(cap.network_bps)}",
            ",".join(host.enforceable) or "-",
            format_time(host.last_seen),
            host.agent_version or "-",
            scheduling(host),
        )
    return table


def scheduling(host: types_pb2.HostInfo) -> str:
    """``cordoned`` (with the operator's reason) or ``open`` (new instances may land)."""
    if not host.cordoned:
        return "open"
    return f"cordoned ({host.cordon_reason})" if host.cordon_reason else "cordoned"


def cordon_view(response: admin_pb2.CordonHostResponse) -> RenderableType:
    host = response.host
    state = scheduling(host)
    if not response.changed:
        return Text(f"host {host.host_id} already {state}; nothing changed")
    if host.cordoned:
        return Text(f"host {host.host_id} {state}: no new instances will be placed on it; "
                    "its running instances stay")
    return Text(f"host {host.host_id} uncordoned: new instances may be placed on it")


def instances_table(instances: Sequence[types_pb2.InstanceStatus]) -> RenderableType:
    if not instances:
        return Text("no instances")
    table = _table(
        "INSTANCE",
        "HOST",
        "UNIT",
        "VERSION",
        "SLOT",
        "STATE",
        "HEALTH",
        "ADDRESS",
        "CPU",
        "MEMORY",
        "RESTARTS",
        "REASON",
    )
    for inst in instances:
        table.add_row(
            inst.instance_id,
            inst.host_id or "-",
            f"{inst.apartment}/{inst.unit}",
            inst.version,
            enum_label(types_pb2.Slot, inst.slot),
            enum_label(types_pb2.InstanceState, inst.state),
            f"{inst.health_score:.2f}",
            f"{inst.address}:{inst.port}" if inst.address else "-",
            f"{inst.usage.cpu_cores:.2f}",
            _bytes(inst.usage.memory_bytes),
            str(inst.restarts),
            inst.reason or "-",
        )
    return table


def event_line(event: types_pb2.Event) -> Text:
    """One event on one line: time, sequence, type, subject, message, details."""
    subject = f"{event.apartment}/{event.unit}" if event.unit else event.apartment
    if event.version:
        subject += f"@{event.version}"
    parts = [format_time(event.time), f"#{event.sequence}", event.type]
    parts.extend(p for p in (subject, event.host_id and f"host={event.host_id}") if p)
    if event.instance_id:
        parts.append(f"instance={event.instance_id}")
    if event.message:
        parts.append(event.message)
    parts.extend(f"{key}={value}" for key, value in sorted(event.details.items()))
    return Text("  ".join(parts))


def gc_view(response: admin_pb2.RunGarbageCollectionResponse) -> RenderableType:
    if not response.hosts:
        return Text("garbage collection: no host to run on")
    return Text(f"garbage collection started on {', '.join(response.hosts)}")


def leader_view(response: admin_pb2.GetLeaderResponse) -> RenderableType:
    if not response.leader_id:
        return Text("no leader elected")
    return Text(f"leader {response.leader_id} at {response.leader_address}")
