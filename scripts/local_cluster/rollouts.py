"""Run the real `landlord` CLI and follow a rollout live from its GetRollout record."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc

from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc, types_pb2
from local_cluster.daemons import BIN, CoordinatorProcess
from local_cluster.load import LoadGenerator
from local_cluster.processes import ClusterError
from local_cluster.report import PhaseResult, StepSplit, share_of

__all__ = ["Cli", "follow_rollout", "seconds_of"]

TERMINAL = {"promoted", "rolled_back", "failed", "aborted"}


def seconds_of(ts: Any) -> float:
    """A protobuf Timestamp as epoch seconds (0.0 when unset)."""
    return float(ts.seconds) + float(ts.nanos) / 1e9


class Cli:
    """`.venv/bin/landlord` against the demo coordinator; every call is shown to the user."""

    def __init__(self, coordinator: str, say: Callable[[str], None],
                 tls_env: Mapping[str, str] | None = None) -> None:
        self.env = {**os.environ, "LANDLORD_COORDINATOR": coordinator, "COLUMNS": "120",
                    **(tls_env or {})}
        self.say = say

    def _show(self, args: list[str]) -> None:
        self.say("$ landlord " + shlex.join(args))

    def run(self, args: list[str], timeout: float = 60.0, quiet: bool = False) -> str:
        """Run to the end; ClusterError unless it exits 0. Returns its output."""
        self._show(args)
        done = subprocess.run([str(BIN / "landlord"), *args], env=self.env, timeout=timeout,
                              capture_output=True, text=True, check=False)
        output = (done.stdout + done.stderr).rstrip()
        if not quiet or done.returncode != 0:
            for line in output.splitlines():
                self.say("    " + line)
        if done.returncode != 0:
            raise ClusterError(f"`landlord {shlex.join(args)}` exited {done.returncode}")
        return output

    def start(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start in the background (e.g. `deploy --wait`), its output into ``log``."""
        self._show(args)
        with log.open("wb") as out:
            return subprocess.Popen([str(BIN / "landlord"), *args], env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _latest(stub: Any, apartment: str, unit: str) -> Any | None:
    request = admin_pb2.GetRolloutRequest(apartment=apartment, unit=unit)
    try:
        return stub.GetRollout(request, timeout=5)
    except grpc.RpcError as exc:
        if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
            return None
        raise


def _step_split(step: Any, load: LoadGenerator | None, version: str) -> StepSplit:
    start, end = seconds_of(step.started_at), seconds_of(step.ended_at) or time.time()
    measured, count = (share_of(load.answers(start, end), version) if start and load
                       else (None, 0))
    return StepSplit(int(step.index), float(step.target_percent), str(step.outcome),
                     measured, count)


def _reasons(reasons: Any, limit: int = 160) -> str:
    """The failing checks, without the metrics dump the record appends."""
    text = "; ".join(r for r in reasons if not r.startswith(("canary:", "stable:")))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _percent(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.1f}%"


def follow_rollout(coordinator: CoordinatorProcess, apartment: str, unit: str, previous_id: str,
                   cli: subprocess.Popen[bytes], load: LoadGenerator | None, name: str,
                   say: Callable[[str], None], timeout: float = 240.0) -> PhaseResult:
    """Print one line per phase or step change (with the load's measured split) until the
    rollout ends and the CLI exits; the record and the CLI's exit status. Without ``load``
    (no load runs yet) no split is measured."""
    began = time.monotonic()
    seen_phase, info = "", None
    seen_steps: dict[int, str] = {}
    with coordinator.channel() as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        while True:
            if time.monotonic() - began > timeout:
                cli.kill()
                raise ClusterError(f"{name}: rollout did not end within {timeout:.0f}s")
            current = _latest(stub, apartment, unit)
            if current is None or current.rollout_id == previous_id:
                if cli.poll() is not None:
                    raise ClusterError(f"{name}: the CLI exited {cli.returncode} and no rollout "
                                    "started")
                time.sleep(0.25)
                continue
            info = current
            clock = f"[{time.monotonic() - began:5.1f}s]"
            total = len(info.canary.steps) or len(info.steps)
            for step in info.steps:
                key = (int(step.index), str(step.outcome))
                if seen_steps.get(key[0]) == key[1] or step.outcome == "pending":
                    continue
                seen_steps[key[0]] = key[1]
                split = _step_split(step, load, info.to_version)
                if step.outcome == "active":
                    say(f"  {clock} step {split.index + 1}/{total}: "
                        f"{split.target_percent:.0f}% of traffic to {info.to_version}")
                else:
                    say(f"  {clock} step {split.index + 1}/{total} "
                        f"{split.outcome}: target {split.target_percent:.0f}%, measured "
                        f"{_percent(split.measured_percent)} {info.to_version} "
                        f"of {split.answers} answers"
                        + (f" ({_reasons(step.reasons)})" if step.outcome == "failed" else ""))
            if info.phase != seen_phase:
                seen_phase = info.phase
                recent, count = (share_of(load.answers(time.time() - 1.0), info.to_version)
                                 if load else (None, 0))
                say(f"  {clock} phase {info.phase}: last 1s {_percent(recent)} of {count} "
                    f"answers from {info.to_version}"
                    + (f" ({info.reason})" if info.reason and info.phase in TERMINAL else ""))
            if info.phase in TERMINAL:
                try:
                    cli.wait(30)
                except subprocess.TimeoutExpired:
                    cli.kill()
                    raise ClusterError(f"{name}: the rollout ended ({info.phase}) but "
                                    "`landlord deploy --wait` did not exit") from None
                break
            time.sleep(0.25)
    return PhaseResult(
        name=name,
        strategy="canary" if info.strategy == types_pb2.STRATEGY_CANARY else "blue-green",
        from_version=info.from_version, to_version=info.to_version, phase=info.phase,
        rollout_id=info.rollout_id, reason=info.reason,
        started_at=seconds_of(info.started_at), ended_at=seconds_of(info.ended_at),
        cli_exit=int(cli.returncode),
        steps=[_step_split(s, load, info.to_version) for s in info.steps],
    )
