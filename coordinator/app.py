"""One coordinator process: etcd cache, election, leader duties and the gRPC server.

Start order: the server (so followers answer reads and point agents at the leader), the
watch-fed cache, then the election. Stop order (SIGTERM): health NOT_SERVING at once, give
up the lead (the lease is revoked, so a follower takes over without waiting for the TTL),
close agent streams with NotLeader, let in-flight RPCs finish within the grace period,
then stop the background tasks and close etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common.clock import Clock, SystemClock
from common.errors import LandlordError
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc, agent_pb2, agent_pb2_grpc
from common.input_bounds import MAX_ADMIN_REQUEST_BYTES
from common.metrics_http import MetricsServer, serve_metrics
from common.pki_check import Trust
from common.schema import release
from common.transport import ExpiryWatch, ServerCertificates, bound_server, create_server
from coordinator.api.admin_service import AdminService
from coordinator.api.agent_service import AgentStreamService
from coordinator.api.audit_interceptor import AuditInterceptor
from coordinator.api.authz_interceptor import AuthzInterceptor
from coordinator.api.call_limits import CallLimitSettings, CallLimitsInterceptor
from coordinator.api.metrics_interceptor import CallMetricsInterceptor
from coordinator.api.open_streams import OpenStreams
from coordinator.config import CoordinatorConfig
from coordinator.fleet.agent_sessions import AgentSessions
from coordinator.fleet.check_calls import CheckCalls
from coordinator.fleet.cordons import HostCordons
from coordinator.fleet.decommission import HostDecommissions
from coordinator.fleet.dispatch import CommandDispatch
from coordinator.fleet.drains import HostDrains
from coordinator.fleet.escalations import Escalations
from coordinator.fleet.forgetter import HostForgetter
from coordinator.fleet.healing import Healer
from coordinator.fleet.host_records import HostRecords
from coordinator.fleet.idle_units import IdleUnits
from coordinator.fleet.instance_mover import InstanceMover
from coordinator.fleet.known_fleet import KnownFleet
from coordinator.fleet.liveness import LivenessPolicy
from coordinator.fleet.metrics_windows import MetricsWindows
from coordinator.fleet.output_calls import OutputCalls
from coordinator.fleet.placement_writer import PlacementWriter
from coordinator.fleet.rebalances import UnitRebalances
from coordinator.fleet.sessions import Fleet
from coordinator.fleet.status_writer import StatusWriter
from coordinator.images_client import RegistryClient
from coordinator.leadership.election import LeaderElection
from coordinator.leadership.leader_duties import LeaderDuties
from coordinator.metrics import CoordinatorMetrics
from coordinator.pki_files import load_trust
from coordinator.registry import Registry
from coordinator.rollouts.etcd_records import EtcdRolloutRecords
from coordinator.rollouts.fleet_adapter import CoordinatorFleet
from coordinator.rollouts.pause_service import PauseService
from coordinator.rollouts.runner import RunnerSettings
from coordinator.rollouts.service import RolloutService
from coordinator.rollouts.unit_service import UnitService
from coordinator.state.cluster_state import ClusterState
from coordinator.state.etcd_client import BlockingLeaseClient
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.leadership import Leadership
from coordinator.state.measured_store import MeasuredStore
from coordinator.state.records import LeaderRecord
from coordinator.state.schema_upgrade import SchemaUpgrade
from coordinator.state.snapshot_store import ClusterSnapshots
from coordinator.state.store import EtcdStore, Store
from coordinator.state.view import ClusterView
from coordinator.web.pages import WebView

__all__ = ["SERVICE_NAMES", "Coordinator"]

STREAM_RECHECK_SECONDS = 60.0
"""How often open streams' certificates are checked again (expiry)."""
log = logging.getLogger(__name__)

SERVICE_NAMES = (
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
    agent_pb2.DESCRIPTOR.services_by_name["AgentStream"].full_name,
)


class Coordinator:
    def __init__(self, config: CoordinatorConfig, clock: Clock | None = None,
                 store: Store | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.metrics = CoordinatorMetrics(config.id, release())
        self.store: Store = MeasuredStore(
            store or EtcdStore(config.etcd_endpoints, config.etcd_timeout,
                               config.etcd_max_txn_ops, tls=config.etcd_tls), self.metrics)
        self.layout = KeyLayout(config.etcd_prefix)
        self.view = ClusterView(self.store, self.layout.root)
        self.state = ClusterState(self.layout)
        self.view.subscribe(self.state.apply)
        self.me = LeaderRecord(config.id, config.advertise)
        self.leadership = Leadership(self.me, self.state)
        self.fleet = Fleet()
        self.metrics.watch(self.state, self.fleet, self.leadership, self.clock)
        self.known = KnownFleet(self.state, self.fleet)
        self.writes = FencedWrites(self.store, self.leadership, self.view)
        self.events = EventLog(self.writes, self.layout, self.state, self.clock,
                               config.event_history)
        self.placement = PlacementWriter(
            self.state, self.layout, self.writes, self.known, self.events, self.clock,
            port_range=(config.port_range_start, config.port_range_end))
        self.placement.refused = self.metrics.observe_refusal
        self.dispatch = CommandDispatch(self.state, self.layout, self.writes, self.fleet,
                                        self.known, self.placement, self.clock,
                                        stop_grace_s=config.stop_grace)
        self.windows = MetricsWindows()
        self.idle = IdleUnits(state=self.state, layout=self.layout, writes=self.writes,
                              leadership=self.leadership, events=self.events,
                              clock=self.clock, requests=self.windows, commands=self.dispatch,
                              hosts=self.fleet, known=self.known, hold_s=config.wake_hold)
        self.dispatch.waking = self.idle  # routes of collected units hold requests
        self.checks = CheckCalls(self.state, self.fleet)
        self.outputs = OutputCalls(self.state, self.fleet)
        self.liveness = LivenessPolicy(config.heartbeat_interval, config.liveness_grace,
                                       report_interval=config.report_interval)
        self.hosts = HostRecords(self.store, self.writes, self.layout, self.state, self.clock,
                                 self.liveness.lease_ttl)
        self.statuses = StatusWriter(self.writes, self.layout, self.state, self.clock)
        self.sessions = AgentSessions(
            hosts=self.hosts, statuses=self.statuses, state=self.state, fleet=self.fleet,
            events=self.events, clock=self.clock, commands=self.dispatch, windows=self.windows,
            results=self.checks, leadership=self.leadership, outputs=self.outputs,
            wakes=self.idle)
        self.healer = Healer(
            hosts=self.hosts, placement=self.placement, commands=self.dispatch,
            state=self.state, fleet=self.fleet, events=self.events, clock=self.clock,
            policy=self.liveness, forget_after=config.forget_host_after)
        self.forgetter = HostForgetter(
            hosts=self.hosts, state=self.state, fleet=self.fleet, events=self.events,
            clock=self.clock, forget_after=config.forget_host_after)
        self.registry = Registry(state=self.state, layout=self.layout, writes=self.writes,
                                 events=self.events, clock=self.clock, reported=self.fleet,
                                 images=RegistryClient.from_settings(
                                     auth_file=config.registry_auth_file,
                                     ca_file=config.registry_ca_file, http=config.registry_http))
        self.rollouts = self.rollout_service()
        self.rollouts.refused = self.metrics.observe_refusal
        self.schema = SchemaUpgrade(self.view, self.writes, self.layout)
        self.cordons = HostCordons(self.state, self.layout, self.writes, self.events)
        self.mover = InstanceMover(self.state, self.placement, self.dispatch, self.known)
        self.drains = HostDrains(
            state=self.state, layout=self.layout, writes=self.writes, events=self.events,
            cordons=self.cordons, mover=self.mover, clock=self.clock)
        self.escalations = Escalations(
            state=self.state, layout=self.layout, writes=self.writes, events=self.events,
            placement=self.placement, commands=self.dispatch, known=self.known)
        self.rebalances = UnitRebalances(
            state=self.state, layout=self.layout, writes=self.writes, events=self.events,
            mover=self.mover, hosts=self.known, clock=self.clock, grace=config.rebalance_grace)
        self.duties = LeaderDuties(
            view=self.view, state=self.state, fleet=self.fleet, leadership=self.leadership,
            events=self.events, clock=self.clock, heal=self.healer.tick,
            flush_routes=self.dispatch.flush_routes, flush_statuses=self.statuses.flush,
            tick=min(1.0, config.heartbeat_interval / 4), rollouts=self.rollouts,
            schema=self.schema, forget_hosts=self.forgetter.tick, drain_hosts=self.drains.tick,
            escalations=self.escalations.tick, rebalance_units=self.rebalances.tick,
            collect_idle=self.idle.round, idle_every=config.idle_check_interval)
        self.election = LeaderElection(
            self.store, self.layout.leader, self.me, ttl=config.leader_lease_ttl,
            keeper_client=None if store is not None else
            lambda: BlockingLeaseClient(config.etcd_endpoints, config.etcd_timeout,
                                        config.etcd_tls),
            refusal=self.schema.campaign_refusal)
        self.admin = AdminService(
            state=self.state, fleet=self.fleet, known=self.known, leadership=self.leadership,
            clock=self.clock, registry=self.registry, rollouts=self.rollouts,
            cordons=self.cordons, drains=self.drains, rebalances=self.rebalances,
            decommissions=HostDecommissions(
                state=self.state, layout=self.layout, writes=self.writes, hosts=self.hosts,
                fleet=self.fleet, events=self.events, clock=self.clock),
            units=UnitService(state=self.state, layout=self.layout, writes=self.writes,
                              events=self.events, clock=self.clock,
                              rollouts=self.rollouts.records, placement=self.placement,
                              commands=self.dispatch, hosts=self.fleet, known=self.known),
            snapshots=ClusterSnapshots(self.store, self.layout, self.leadership, release()),
            outputs=self.outputs,
            pauses=PauseService(state=self.state, layout=self.layout, writes=self.writes,
                                events=self.events, clock=self.clock,
                                rollouts=self.rollouts.records, routes=self.dispatch,
                                hosts=self.fleet, known=self.known),
            idle=self.idle)
        self.audit = AuditInterceptor(self.events)
        self.trust: Trust | None = (load_trust(config.tls_ca_file, config.tls_crl_file)
                                    if config.mutual_tls else None)
        self.certificates = (ServerCertificates(config.tls) if config.tls_cert_file
                             else None)
        self.streams = OpenStreams()
        """Streams open under a client certificate, checked again at each reload."""
        certificates = self.certificates
        self.expiry = ExpiryWatch(config.tls_cert_file,
                                  lambda: certificates.certificate if certificates else None,
                                  self.clock)
        self.agent_stream = AgentStreamService(self.sessions, self.leadership, self.liveness)
        self.limits = CallLimitsInterceptor(CallLimitSettings(
            per_identity=config.max_calls_per_identity,
            connections_per_identity=config.max_connections_per_identity,
            large_in_flight=config.max_publishes_in_flight, large_wait=config.publish_wait,
            large_waiting=config.max_publishes_waiting,
            unary_deadline=config.call_deadline, read_timeout=config.request_read_timeout),
            observe=self.metrics.observe_call)
        self.health = health.aio.HealthServicer()
        self.server: Any = None
        self.metrics_server: MetricsServer | None = None
        self.port = 0
        self._tasks: list[asyncio.Task[None]] = []

    def rollout_service(self, runner_settings: RunnerSettings | None = None) -> RolloutService:
        """A rollout service on this coordinator's fleet (tests start a second one to
        resume rollouts the way a new leader would)."""
        fleet = CoordinatorFleet(state=self.state, known=self.known, placement=self.placement,
                                 commands=self.dispatch, windows=self.windows,
                                 checks=self.checks)
        records = EtcdRolloutRecords(self.writes, self.layout, self.state, self.events,
                                     self.clock)
        self.dispatch.protected = records  # routes carry the versions hosts keep images of
        return RolloutService(records=records, fleet=fleet, registry=self.registry,
                              state=self.state, leadership=self.leadership, clock=self.clock,
                              runner_settings=runner_settings)

    def reload_trust(self) -> bool:
        """Re-read the server certificate and key, the CA bundle and the CRL (SIGHUP). Open
        streams stay, but those whose client certificate the new CA bundle and CRL refuse
        are ended (UNAUTHENTICATED); every later handshake and call uses the new files. Bad
        files keep the previous ones (logged)."""
        if self.certificates is None or self.trust is None:
            log.info("reload asked, but mutual TLS is off: nothing to reload")
            return False
        try:
            trust = load_trust(self.config.tls_ca_file, self.config.tls_crl_file)
            self.certificates.reload()
        except LandlordError as exc:
            log.error("cannot reload the CA bundle and CRL, keeping the previous ones: %s", exc)
            return False
        self.trust = trust
        ended = self.streams.recheck(trust, datetime.fromtimestamp(self.clock.now(), UTC))
        log.info("reloaded the server certificate %s, the CA bundle %s and CRL %s "
                 "(%d revocation list(s)); %d open stream(s) ended as no longer trusted",
                 self.config.tls_cert_file, self.config.tls_ca_file,
                 self.config.tls_crl_file or "(none)", len(trust.crls), len(ended))
        self.expiry.recheck()
        return True

    async def _end_expired_streams(self) -> None:
        """A stream's certificate may expire while it is open: end such streams within a
        minute (a reload ends the revoked ones at once)."""
        while self.trust is not None:
            await asyncio.sleep(STREAM_RECHECK_SECONDS)
            # each stream ended is logged with why
            self.streams.recheck(self.trust, datetime.fromtimestamp(self.clock.now(), UTC))

    def _current_trust(self) -> Trust:
        assert self.trust is not None
        return self.trust

    def _interceptors(self) -> list[Any]:
        # the limits come first (they decide before a request is read and serve unary
        # methods with the stream-request shape); then the call metrics and the audit
        # interceptor: they must see every call's final status, authz denials included
        counted = CallMetricsInterceptor(self.metrics)
        plain_etcd = [e for e in self.config.etcd_endpoints if not e.startswith("https://")]
        if plain_etcd and not self.config.etcd_tls.enabled:
            log.warning("INSECURE (insecure = true): etcd %s is reached in plain text",
                        ", ".join(plain_etcd))
        if self.trust is not None:
            return [self.limits, counted, self.audit,
                    AuthzInterceptor(self._current_trust, self.clock, self.streams)]
        # the config allows this only with insecure = true, on a loopback address
        log.warning("INSECURE (insecure = true): %s, so clients are anonymous and anyone "
                    "who reaches %s may call every admin RPC and register as any host; set "
                    "tls_ca_file, tls_cert_file and tls_key_file for mutual TLS",
                    "no client certificates" if self.config.tls_cert_file else "no TLS",
                    self.config.listen)
        return [self.limits, counted, self.audit]

    async def start(self) -> None:
        # grpc refuses a larger message from its length prefix, before holding it (a
        # waiting publish's 30 MB used to be read whole before any limit ran)
        self.server = create_server(interceptors=self._interceptors(),
                                    limits=self.config.connection_limits,
                                    max_receive_bytes=MAX_ADMIN_REQUEST_BYTES)
        admin_pb2_grpc.add_AdminServicer_to_server(self.admin, self.server)
        agent_pb2_grpc.add_AgentStreamServicer_to_server(self.agent_stream, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        self.port = bound_server(self.server, self.config.listen, self.config.tls,
                                 self.certificates)
        await self.server.start()
        await self._set_health(False)  # until the view has listed etcd
        view = WebView(self.rollouts, lambda: list(self.state.rollouts))
        self.metrics_server = await serve_metrics(self.config.metrics_endpoint,
                                                  self.metrics.registry, "coordinator",
                                                  pages=view)
        self._tasks = [
            asyncio.create_task(self.view.run(), name="etcd-view"),
            asyncio.create_task(self.election.run(self.duties.lead), name="election"),
            asyncio.create_task(self._follow_etcd(), name="health-follows-etcd"),
            asyncio.create_task(self.expiry.run(), name="certificate-expiry"),
            asyncio.create_task(self._end_expired_streams(), name="stream-expiry"),
        ]
        log.info("coordinator %s serving on %s (etcd %s, prefix %s)", self.me.id,
                 self.config.listen, ",".join(self.config.etcd_endpoints),
                 self.config.etcd_prefix)

    async def _set_health(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)  # ignored once shutting down

    async def _follow_etcd(self, interval: float = 0.25) -> None:
        """gRPC health follows etcd: NOT_SERVING while the cluster view cannot watch it
        (reads would be stale, writes fail), SERVING again once it watches."""
        serving = False
        while True:
            if serving:
                await asyncio.sleep(interval)
            else:  # serve as soon as the view has synced
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.view.synced.wait(), interval)
            synced = self.view.synced.is_set()
            if synced != serving:
                serving = synced
                log.log(logging.INFO if synced else logging.WARNING,
                        "health %s: etcd is %s", "SERVING" if synced else "NOT_SERVING",
                        "watched" if synced else "unreachable")
                await self._set_health(synced)

    async def stop(self) -> None:
        log.info("coordinator %s shutting down", self.me.id)
        await self.health.enter_graceful_shutdown()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.election.resign(), self.config.etcd_timeout)
        self.leadership.release()
        await self.rollouts.stop()
        self.fleet.close_all("coordinator shutting down")
        if self.server is not None:
            await self.server.stop(self.config.shutdown_grace)
        await self.audit.drain(self.config.etcd_timeout)
        if self.metrics_server is not None:
            await self.metrics_server.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.store.close()
        log.info("coordinator %s stopped", self.me.id)
