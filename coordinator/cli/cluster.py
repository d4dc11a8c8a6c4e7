"""`landlord cluster snapshot save|restore`: a copy of the cluster's state in etcd.

``save`` asks the leader over the Admin API (admin only, audited) and writes the file
atomically, 0600: it holds secret env values. ``restore`` runs while no coordinator runs,
on a host with the coordinator's config: it talks to etcd with the coordinator's etcd
credentials and refuses anything but an empty prefix (coordinator/state/snapshot_store.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Annotated

import typer

from common.gen.landlord.v1 import admin_pb2
from coordinator.cli.client import AdminClient
from coordinator.cli.context import OutputOption, output_of, settings_of
from coordinator.cli.output import OutputFormat
from coordinator.config import load_config
from coordinator.pki_files import KEY_MODE, read_file, write_file
from coordinator.state.keys import KeyLayout
from coordinator.state.snapshot import Snapshot, decode
from coordinator.state.snapshot_store import RestoreOutcome, restore_snapshot
from coordinator.state.store import EtcdStore

app = typer.Typer(help="The cluster as a whole: back up and restore its state.",
                  no_args_is_help=True)
snapshot_app = typer.Typer(help="A consistent copy of Landlord's state in etcd.",
                           no_args_is_help=True)
app.add_typer(snapshot_app, name="snapshot")


async def _fetch(ctx: typer.Context) -> bytes:
    parts: list[bytes] = []
    async with AdminClient(settings_of(ctx).client) as client:
        async for chunk in client.stream("SaveSnapshot", admin_pb2.SaveSnapshotRequest(),
                                         "save a snapshot"):
            parts.append(chunk.data)
    return b"".join(parts)


def _report(ctx: typer.Context, output: OutputFormat | None, what: str, path: Path,
            snapshot: Snapshot, data: bytes, **extra: object) -> None:
    if output_of(ctx, output) is OutputFormat.JSON:
        typer.echo(json.dumps({
            "file": str(path), "revision": snapshot.revision, "taken_at": snapshot.taken_at,
            "release": snapshot.release, "keys": len(snapshot.entries),
            "kinds": snapshot.counts(), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), **extra}, indent=2))
    else:
        typer.echo(f"{what} {path}: {snapshot.summary()}, {len(data)} bytes")


@snapshot_app.command("save")
def save(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Where to write the snapshot (mode 0600).")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    output: OutputOption = None,
) -> None:
    """Save a consistent copy of the cluster's state (one etcd revision) to FILE. It holds
    secret env values: keep it like a private key."""
    if file.exists() and not force:
        typer.echo(f"landlord: error: {file} exists; pass --force to replace it", err=True)
        raise typer.Exit(2)
    data = asyncio.run(_fetch(ctx))
    snapshot = decode(data)  # what arrived is whole before anything is written
    write_file(file, data, KEY_MODE, replace=True)
    _report(ctx, output, "saved", file, snapshot, data)


@snapshot_app.command("restore")
def restore(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A file written by `snapshot save`.")],
    coordinator_config: Annotated[Path, typer.Option(
        "--coordinator-config",
        help="The coordinators' config: etcd endpoints, prefix and etcd TLS files are taken "
             "from it (LANDLORD_COORDINATOR_ETCD_* environment variables override it).")],
    output: OutputOption = None,
) -> None:
    """Restore FILE onto an empty etcd while every coordinator is stopped; then start the
    coordinators. Agents keep their workloads: instances that match the snapshot are not
    restarted. Refused, writing nothing, when a coordinator leads or the prefix holds keys."""
    data = read_file(file)
    snapshot = decode(data)
    config = load_config(["--config", str(coordinator_config)])
    layout = KeyLayout(config.etcd_prefix)

    async def run() -> RestoreOutcome:
        store = EtcdStore(config.etcd_endpoints, config.etcd_timeout, config.etcd_max_txn_ops,
                          tls=config.etcd_tls)
        try:
            return await restore_snapshot(store, layout, snapshot, now=time.time())
        finally:
            await store.close()

    outcome = asyncio.run(run())
    resumed = " (an interrupted restore was finished)" if outcome.resumed else ""
    _report(ctx, output, f"restored{resumed} under {layout.prefix} from", file, snapshot,
            data, prefix=layout.prefix, resumed=outcome.resumed, removed=outcome.removed)
    if output_of(ctx, output) is not OutputFormat.JSON:
        typer.echo("start the coordinators now: agents reconnect and keep the instances "
                   "that match the snapshot")
