"""Child processes with a log file and a pid file, waiting, and free ports.

A ``ManagedProcess`` writes ``<name>.log`` (its output) and ``<name>.pid`` ("<pid> <program>")
into its cluster's work directory. The pid file lets another process stop it later
(``stop_recorded``: `scripts/demo.py --down` stops what an earlier `make demo` started); it is
trusted only while that pid's command line still names the program.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

__all__ = ["ROOT", "ClusterError", "ManagedProcess", "WaitTimeout", "free_port",
           "free_port_on_all", "port_free", "recorded_processes", "stop_recorded", "wait_for"]

ROOT = Path(__file__).resolve().parents[2]


class ClusterError(Exception):
    """Something in a local cluster did not behave; the message says what."""


class WaitTimeout(ClusterError, TimeoutError):
    """A condition ``wait_for`` polled did not hold in time."""


def wait_for(check: Callable[..., Any], timeout: float, what: str, interval: float = 0.05
             ) -> Any:
    """Poll ``check`` until it returns something true (an exception counts as "not yet");
    ``WaitTimeout`` naming ``what`` and the last exception after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # not yet; the last one is reported
            last = exc
        time.sleep(interval)
    raise WaitTimeout(f"{what} did not happen within {timeout:.0f}s"
                      + (f" (last error: {last!r})" if last else ""))


def port_free(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def free_port_on_all(addresses: Sequence[str], preferred: int = 0) -> int:
    """A TCP port free on every one of ``addresses`` (a unit's entry point on each host);
    ``preferred`` when it is."""
    if preferred and all(port_free(a, preferred) for a in addresses):
        return preferred
    for _ in range(50):
        port = free_port(addresses[0])
        if all(port_free(a, port) for a in addresses[1:]):
            return port
    raise ClusterError(f"no TCP port free on all of {list(addresses)}")


class ManagedProcess:
    """One child process: output into ``<workdir>/<name>.log`` (emptied at the first start,
    appended to on restarts), pid in ``<name>.pid``, stopped by pid."""

    program = ""
    """What its command line must contain for its pid file to be trusted."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.pid_path = workdir / f"{name}.pid"
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self._started_once = False

    def spawn(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        mode = "ab" if self._started_once else "wb"
        self._started_once = True
        with self.log_path.open(mode) as log:
            self.proc = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=ROOT,
                                         env={**os.environ, **(env or {})},
                                         start_new_session=True)
        self.pid_path.write_text(f"{self.proc.pid} {self.program}\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        """Send ``sig`` without waiting (the caller observes what happens next)."""
        if self.running:
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait (SIGKILL after ``timeout``); the exit status, -1 if never run."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.returncode = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.returncode = self.proc.wait(5)
            self._forget()
        return -1 if self.returncode is None else self.returncode

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        self.terminate(timeout)

    def kill(self) -> None:
        """SIGKILL: the process dies without any cleanup (a crash)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.returncode = self.proc.wait(5)
            self._forget()

    def _forget(self) -> None:
        self.proc = None
        self.pid_path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


_OLDER_PROGRAMS = ("landlord-agent", "landlord-coordinator")


def recorded_processes(workdir: Path) -> dict[str, tuple[str, psutil.Process]]:
    """name -> (program, live process) of every pid file in ``workdir`` whose process still
    runs the recorded program (a stale pid file, reused pid or zombie is left out and its
    file removed)."""
    found: dict[str, tuple[str, psutil.Process]] = {}
    for path in sorted(workdir.glob("*.pid")):
        try:
            pid_text, _, program = path.read_text().strip().partition(" ")
            proc = psutil.Process(int(pid_text))
            if not program:  # a pid file of an older demo: the program was not written
                program = next((known for known in _OLDER_PROGRAMS
                                if any(known in part for part in proc.cmdline())), "")
            if program and proc.status() != psutil.STATUS_ZOMBIE and any(
                    program in part for part in proc.cmdline()):
                found[path.stem] = (program, proc)
                continue
        except (OSError, ValueError, psutil.Error):
            pass
        path.unlink(missing_ok=True)
    return found


def stop_recorded(workdir: Path, name: str, proc: psutil.Process, timeout: float = 30.0) -> None:
    """SIGTERM a process found by ``recorded_processes`` and wait (SIGKILL after
    ``timeout``); its pid file goes."""
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    (workdir / f"{name}.pid").unlink(missing_ok=True)
