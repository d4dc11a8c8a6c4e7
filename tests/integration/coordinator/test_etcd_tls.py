"""The coordinator on a real etcd that serves TLS only and demands client certificates
(--client-cert-auth): a landlord-coordinator process leads through it; clients without the
right certificate are refused by etcd itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from local_cluster.daemons import CoordinatorProcess
from local_cluster.etcd import EtcdProcess, EtcdTls
from local_cluster.processes import wait_for

from common.errors import Unavailable
from common.identity import Identity, Role
from common.pki import LeafRequest, cert_pem, issue, key_pem, new_ca
from common.transport import TlsSettings
from coordinator.state.store import EtcdStore, Txn


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    workdir = Path(tmp_path_factory.mktemp("etcd-tls"))
    process = EtcdProcess(workdir, tls=EtcdTls.make(workdir / "certs"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_a_coordinator_process_leads_through_tls_etcd(tls_etcd: EtcdProcess,
                                                       tmp_path: Path) -> None:
    assert tls_etcd.tls is not None
    coordinator = CoordinatorProcess(tmp_path, "c-tls", tls_etcd.url, "/tls",
                                     {**tls_etcd.tls.coordinator_settings(),
                                      "leader_lease_ttl": 2})
    try:
        coordinator.start()
        wait_for(lambda: coordinator.leader_info().this_is_leader, 30, "c-tls leads")
        leader_key = tls_etcd.revisions("/tls/")["/tls/leader"]  # its writes reached etcd
        # past two lease TTLs: the lease keeper's own (blocking) channel refreshes over TLS,
        # else the key would expire and be written again at a new revision
        time.sleep(4.5)
        assert coordinator.leader_info().this_is_leader
        assert tls_etcd.revisions("/tls/")["/tls/leader"] == leader_key
    finally:
        coordinator.stop(10)


async def test_the_store_works_with_the_client_certificate(tls_etcd: EtcdProcess) -> None:
    assert tls_etcd.tls is not None
    store = EtcdStore([tls_etcd.endpoint], timeout=3.0, tls=tls_etcd.tls.client)
    try:
        await store.commit(Txn().put("/store/a", b"1"))
        found = await store.get("/store/a")
        assert found is not None and found.value == b"1"
    finally:
        await store.delete_prefix("/store/")
        await store.close()


def _stranger(directory: Path, ca_file: str) -> TlsSettings:
    """A coordinator certificate from another CA (trusting etcd's CA for the server)."""
    now = datetime.now(UTC)
    issued = issue(new_ca("another CA", now), LeafRequest(Identity(Role.COORDINATOR, "x")), now)
    (directory / "x.pem").write_bytes(cert_pem(issued.cert))
    (directory / "x.key").write_bytes(key_pem(issued.key))
    return TlsSettings(ca_file, str(directory / "x.pem"),
                       str(directory / "x.key"))


@pytest.mark.parametrize("client", ["plain text", "TLS without a certificate",
                                    "a certificate of another CA"])
async def test_etcd_refuses_clients_without_the_coordinator_certificate(
        tls_etcd: EtcdProcess, tmp_path: Path, client: str) -> None:
    assert tls_etcd.tls is not None
    etcd_ca = tls_etcd.tls.client.ca_file
    endpoint, tls = {
        "plain text": ("http://" + tls_etcd.endpoint, TlsSettings()),
        "TLS without a certificate": (tls_etcd.url, TlsSettings(etcd_ca)),
        "a certificate of another CA": (tls_etcd.url, _stranger(tmp_path, etcd_ca)),
    }[client]
    store = EtcdStore([endpoint], timeout=2.0, tls=tls)
    try:
        with pytest.raises(Unavailable):
            await store.commit(Txn().put("/tls/leader", b"forged"))
        with pytest.raises(Unavailable):
            await store.get("/tls/leader")
    finally:
        await store.close()
    assert "forged" not in tls_etcd.dump("/").values()
