"""DataPlane: the agent's one handle on its host's HAProxy (asyncio facade).

Every change follows the same path: validate a new spec (pure), persist it as the
intent (``dataplane.json``), plan the runtime API commands that turn the last applied
spec into the new one and send them back-to-back on the admin socket (if HAProxy
refuses any, ask it what it has and plan again), then rewrite maps, config and the
server-state file atomically. Only a change of the config skeleton (a new or removed
unit, more pin backends) needs a reload, done hitless through the master CLI.
A watcher restarts HAProxy if it dies; a new DataPlane on the same directory
re-attaches to the running HAProxy instead of replacing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from agent.dataplane.drain import DrainResult, wait_drained
from agent.dataplane.haproxy_config import MAP_KINDS, render_config
from agent.dataplane.haproxy_output import (
    ObservedServer,
    StatRow,
    observed_servers,
    parse_servers_state,
    parse_show_info,
    parse_show_map,
    parse_show_stat,
)
from agent.dataplane.haproxy_plan import (
    Observed,
    expected_observation,
    observe_commands,
    plan_runtime,
)
from agent.dataplane.haproxy_process import HaproxyProcess
from agent.dataplane.haproxy_runtime import AdminSocket, MasterSocket
from agent.dataplane.model import (
    DataPlaneSpec,
    ServerSpec,
    ServerState,
    UnitSpec,
    backend_name,
    check_unit_name,
)
from agent.dataplane.request_counts import RequestCounts
from agent.dataplane.request_log import RequestLogReceiver, RequestRecord
from agent.dataplane.settings import (
    DataPlaneSettings,
    HaproxyPaths,
    log_sockets_for_host,
    threads_for_host,
)
from agent.dataplane.state_files import StateFiles
from agent.dataplane.windows import RequestWindows, WindowSnapshot
from common.clock import Clock, SystemClock
from common.errors import FailedPrecondition, InvalidArgument, LandlordError, Unavailable
from common.unit_spec import DEFAULT_HEALTH

__all__ = ["DataPlane", "DrainResult", "ObservedServer"]

log = logging.getLogger(__name__)


class DataPlane:
    def __init__(
        self,
        data_dir: Path | str,
        advertise: str,
        *,
        host: str | None = None,
        settings: DataPlaneSettings | None = None,
        clock: Clock | None = None,
    ) -> None:
        settings = settings or DataPlaneSettings()
        if not settings.log_sockets:
            settings = dataclasses.replace(settings, log_sockets=log_sockets_for_host())
        if not settings.threads:
            settings = dataclasses.replace(settings, threads=threads_for_host())
        self.settings = settings
        self.paths = HaproxyPaths(Path(data_dir) / "haproxy")
        if len(str(self.paths.log_socket(self.settings.log_sockets))) > 100:
            raise InvalidArgument(f"data dir {data_dir} is too long for UNIX socket paths")
        self.advertise = advertise
        self.host = host or advertise
        self.clock: Clock = clock or SystemClock()
        self._spec = DataPlaneSpec(advertise)
        self._process = HaproxyProcess(self.paths, self.settings.haproxy_binary)
        self._admin = AdminSocket(self.paths.admin_socket, self.settings.command_timeout_s)
        self._master = MasterSocket(self.paths.master_socket, self.settings.command_timeout_s)
        self._windows = RequestWindows(self.settings.log_bucket_s, self.settings.log_retention_s,
                                       self.settings.log_sample_every)
        self._receiver = RequestLogReceiver(
            [self.paths.log_socket(i) for i in range(self.settings.log_sockets)], self._on_request
        )
        self.counts = RequestCounts(self._admin, self._windows, lambda: self._spec, self.clock,
                                    self.settings.log_bucket_s, self.settings.log_sample_every)
        """HAProxy's exact per-server counts (read every bucket; ``counts.read()`` now)."""
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._running_skeleton = ""
        self._files = StateFiles(self.paths)
        self.attached = False
        """True when start() found a running HAProxy and re-attached to it."""
        self.restarts = 0
        """How many times the watcher restarted a dead HAProxy."""

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start HAProxy, or re-attach to the one a previous agent left running."""
        async with self._lock:
            self.paths.maps_dir.mkdir(parents=True, exist_ok=True)
            self._spec = self._files.load_spec(self.advertise)
            await self._receiver.start()
            try:
                if self._process.master_pid() is not None and await self._answers():
                    self.attached = True
                    self._running_skeleton = self._files.running_skeleton()
                    log.info("re-attached to running haproxy in %s", self.paths.root)
                    await self._apply(self._spec, None)
                else:
                    await self._start_haproxy()
            except BaseException:
                self._receiver.close()
                raise
        self._tasks = [asyncio.create_task(self._watch(), name="haproxy-watcher"),
                       asyncio.create_task(self.counts.run(), name="haproxy-counters")]

    async def close(self) -> None:
        """Stop watching, counting and receiving logs; HAProxy keeps serving."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._receiver.close()

    async def shutdown(self) -> None:
        """Stop HAProxy itself (its traffic stops too)."""
        await self.close()
        async with self._lock:
            await self._process.stop()

    # -- units and servers -------------------------------------------------------

    @property
    def spec(self) -> DataPlaneSpec:
        return self._spec

    async def ensure_unit(
        self, unit: str, port: int, health_path: str = DEFAULT_HEALTH.path, *, sticky: bool = False,
        retry_after_s: int = 0,
    ) -> None:
        """Create or update a unit's entry point (a hitless reload when it changes);
        ``retry_after_s``: the unit is paused, its 503s say when to retry."""
        check_unit_name(unit)
        async with self._lock:
            current = self._spec.units.get(unit)
            if current is None:
                wanted = UnitSpec(
                    unit, port, health_path, sticky, pin_slots=self.settings.pin_slots,
                    retry_after_s=retry_after_s,
                )
            else:
                wanted = dataclasses.replace(
                    current, port=port, health_path=health_path, sticky=sticky,
                    retry_after_s=retry_after_s,
                )
            if wanted != current:
                await self._apply(self._spec.with_unit(wanted), [unit])

    async def remove_unit(self, unit: str) -> None:
        """Drop the unit's entry point and backends (a hitless reload)."""
        async with self._lock:
            await self._apply(self._spec.without_unit(unit), [])
            for kind in MAP_KINDS:
                self._files.forget(self.paths.map_file(unit, kind))

    async def add_server(
        self,
        unit: str,
        server: str,
        addr: str,
        port: int,
        version: str,
        weight: int = 0,
        state: ServerState = ServerState.READY,
    ) -> None:
        """Add (or update) an instance in the unit's backends, without a reload."""
        spec = ServerSpec(server, addr, port, version, weight, ServerState(state))
        await self._change(unit, lambda u: u.with_server(spec))

    async def remove_server(self, unit: str, server: str) -> None:
        """Take an instance out at once (maintenance, then delete); see drain_and_remove."""
        await self._change(unit, lambda u: u.without_server(server))

    async def set_weights(self, unit: str, weights: Mapping[str, int]) -> None:
        """Set several servers' weights (0-256) in one back-to-back batch."""
        await self._change(unit, lambda u: u.with_weights(weights))

    async def set_state(self, unit: str, server: str, state: ServerState) -> None:
        await self._change(unit, lambda u: u.with_state(server, ServerState(state)))

    async def drain_and_remove(
        self, unit: str, server: str, timeout: float | None = None
    ) -> DrainResult:
        """Drain, wait for the server's sessions and queue to reach zero (or the timeout,
        ``settings.drain_timeout_s`` by default), then maintenance and delete (what is
        left after a timeout is shut down)."""
        limit = self.settings.drain_timeout_s if timeout is None else timeout
        await self.set_state(unit, server, ServerState.DRAIN)

        async def sessions() -> int:
            rows = await self._stat_rows(self._spec.unit(unit))
            return sum(r.scur + r.qcur for r in rows if r.server == server)

        drained, waited = await wait_drained(sessions, self.clock, limit,
                                             self.settings.drain_poll_s)
        if unit in self._spec.units and server in self._spec.units[unit].version_map():
            await self.remove_server(unit, server)  # unless someone removed it meanwhile
        if not drained:
            log.warning("drain of %s/%s timed out after %.1fs", unit, server, waited)
        return DrainResult(server, drained, waited)

    async def servers(self, unit: str) -> list[ObservedServer]:
        """The unit's weighted backend as HAProxy reports it now."""
        spec = self._spec.unit(unit)
        backend = backend_name(unit)
        stat, state = await self._admin.run(
            [f"show stat {backend} 4 -1", f"show servers state {backend}"]
        )
        return observed_servers(stat, state, backend, spec.version_map())

    # -- request metrics ---------------------------------------------------------

    def window(
        self, unit: str, version: str | None = None, seconds: float = 60.0
    ) -> list[WindowSnapshot]:
        """Per (version, instance) request windows of ``unit`` over the last ``seconds``."""
        return self._windows.snapshots(
            unit, self.clock.now(), version=version, seconds=seconds, host=self.host
        )

    def completed_windows(self) -> list[WindowSnapshot]:
        """Per (unit, version, instance), the requests of the time buckets completed since
        the previous call, each request handed over once (see ``RequestWindows``)."""
        return self._windows.take_completed(self.clock.now(), host=self.host)

    def last_activity(self, unit: str, instance: str | None = None) -> float | None:
        """Epoch seconds of the last request the unit (or that instance) served."""
        return self._windows.last_activity(unit, instance)

    async def dropped_logs(self) -> int:
        """Request log lines HAProxy could not deliver (since its last start or reload)."""
        info = parse_show_info(await self._admin.show("show info"))
        return int(info.get("DroppedLogs", "0") or 0)

    @property
    def log_lines_received(self) -> int:
        return self._receiver.received

    def _on_request(self, record: RequestRecord) -> None:
        self._windows.record(record, self.clock.now())

    # -- internals ---------------------------------------------------------------

    async def _change(self, unit: str, edit: Callable[[UnitSpec], UnitSpec]) -> None:
        async with self._lock:
            current = self._spec.unit(unit)
            updated = edit(current)
            if updated != current:
                await self._apply(self._spec.with_unit(updated), [unit])

    async def _apply(self, spec: DataPlaneSpec, units: Sequence[str] | None) -> None:
        """Make ``spec`` the intent and bring HAProxy to it (lock held).

        The spec file is the intent and is written first; config and maps are derived
        from it and rewritten before any (re)start, so for runtime-only changes they are
        written after HAProxy has the change, which keeps a weight change quick.
        """
        rendered = render_config(spec, self.paths, self.settings)
        reload = rendered.skeleton_hash != self._running_skeleton
        if reload:
            candidate = self.paths.config.with_name("haproxy.next.cfg")
            self._files.save_rendered(rendered, candidate)
            try:
                await self._process.check_config(candidate)
            finally:
                self._files.forget(candidate)
        self._files.save_spec(spec)
        previous, self._spec = self._spec, spec
        if reload:
            self._files.save_rendered(rendered)
            self._files.save_server_state(await self._admin.show("show servers state"))
            with contextlib.suppress(LandlordError):  # the old worker's counts end with it
                await self.counts.read()
            await self._master.reload(self._admin, self.settings.reload_timeout_s)
            self._set_running(rendered.skeleton_hash)
            await self._reconcile(None)
        else:
            await self._reconcile(units, assume=previous)
            self._files.save_rendered(rendered)

    async def _reconcile(
        self, units: Sequence[str] | None, assume: DataPlaneSpec | None = None
    ) -> None:
        """Send HAProxy the commands that make it match the spec.

        With ``assume`` (the spec applied last) the plan is made against it without
        asking HAProxy; if HAProxy refuses anything, it is asked and the plan redone.
        """
        names = sorted(self._spec.units) if units is None else list(units)
        if assume is not None:
            try:
                await self._run_plan(names, expected_observation(assume, names, self.paths))
                return
            except FailedPrecondition as exc:
                log.warning("haproxy drifted from the last applied spec (%s); re-reading it", exc)
        await self._run_plan(names, await self._observe(names))

    async def _observe(self, names: Sequence[str]) -> Observed:
        questions = observe_commands([self._spec.unit(name) for name in names], self.paths)
        answers = await self._admin.run(questions)
        servers, maps = [], {}
        for question, answer in zip(questions, answers, strict=True):
            if question.startswith("show servers state"):
                servers += parse_servers_state(answer)
            else:
                maps[Path(question.removeprefix("show map "))] = parse_show_map(answer)
        return Observed(servers, maps)

    async def _run_plan(self, names: Sequence[str], observed: Observed) -> None:
        plan = plan_runtime(self._spec, observed, self.paths, self.settings, names)
        if plan.empty:
            return
        # the state dump rides in the same batch, right after the changes
        replies = await self._admin.execute([*plan.commands, "show servers state"])
        if plan.deletions:  # a deleted server's counts go with it: take them first
            with contextlib.suppress(LandlordError):
                await self.counts.read()
        for backend, server in plan.deletions:
            await self._admin.delete_server(backend, server, self.settings.command_timeout_s)
        if plan.deletions:
            replies.append(await self._admin.show("show servers state"))
        self._files.save_server_state(replies[-1])

    def _set_running(self, skeleton: str) -> None:
        self._running_skeleton = skeleton
        self._files.save_running_skeleton(skeleton)

    async def _stat_rows(self, unit: UnitSpec) -> list[StatRow]:
        backends = list(unit.backends())
        answers = await self._admin.run([f"show stat {b} 4 -1" for b in backends])
        return [row for answer in answers for row in parse_show_stat(answer)]

    async def _answers(self) -> bool:
        try:
            await self._master.show_proc()
            await self._admin.worker_pid()
        except Unavailable:
            return False
        return True

    async def _start_haproxy(self) -> None:
        rendered = render_config(self._spec, self.paths, self.settings)
        self._files.save_rendered(rendered)
        await self._process.start(self.settings.reload_timeout_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.reload_timeout_s
        while not await self._answers():
            if loop.time() >= deadline:
                raise Unavailable("haproxy started but its sockets do not answer")
            await asyncio.sleep(0.02)
        self._set_running(rendered.skeleton_hash)
        await self._reconcile(None)

    async def _watch(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self.settings.watch_interval_s * min(2**failures, 20))
            if self._process.master_pid() is not None:
                failures = 0
                continue
            async with self._lock:
                if self._process.master_pid() is not None:
                    continue
                log.warning("haproxy in %s is gone; restarting it", self.paths.root)
                self.restarts += 1
                try:
                    await self._start_haproxy()
                    failures = 0
                except LandlordError:
                    failures += 1
                    log.exception("restarting haproxy failed (attempt %s)", failures)
