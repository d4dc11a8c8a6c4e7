"""Start, find, and stop one agent's HAProxy (master-worker, daemonized).

HAProxy runs detached from the agent (``-D``, its own session), so it keeps serving
while the agent is down; a restarted agent finds it again through the pid file.
A process counts as ours only if its command line names our config file, which also
tells a recycled pid apart. A dead master may linger as a zombie when nothing reaps
it (it is re-parented to init), so zombies count as dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

import psutil

from agent.dataplane.settings import HaproxyPaths
from common.errors import FailedPrecondition, Unavailable

__all__ = ["HaproxyProcess"]

log = logging.getLogger(__name__)


class HaproxyProcess:
    def __init__(self, paths: HaproxyPaths, binary: str = "/usr/sbin/haproxy") -> None:
        self.paths = paths
        self.binary = binary

    def _is_ours(self, proc: psutil.Process) -> bool:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            return str(self.paths.config) in proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False

    def master_pid(self) -> int | None:
        """The live master's pid from the pid file, or None."""
        try:
            pid = int(self.paths.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            proc = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return None
        return pid if self._is_ours(proc) else None

    def processes(self) -> list[psutil.Process]:
        """Every live HAProxy process (master, workers, old workers) running our config."""
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                if proc.name() == os.path.basename(self.binary) and self._is_ours(proc):
                    found.append(proc)
        return found

    def kill_all(self) -> list[int]:
        """SIGKILL every process of ours (a leftover worker would hold the ports)."""
        pids = []
        for proc in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
                pids.append(proc.pid)
        return pids

    async def check_config(self, config: Path) -> None:
        """``haproxy -c``: refuse a config before it can break a reload."""
        proc = await asyncio.create_subprocess_exec(
            self.binary,
            "-c",
            "-q",
            "-f",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise FailedPrecondition(
                f"HAProxy rejects the rendered config: {err.decode(errors='replace')[-2000:]}",
                config=str(config),
            )

    async def start(self, timeout: float = 15.0) -> int:
        """Start a fresh master-worker HAProxy; returns the master pid."""
        leftovers = self.kill_all()
        if leftovers:
            log.warning("killed leftover haproxy processes %s", leftovers)
            await self._wait_gone(timeout)
        with contextlib.suppress(FileNotFoundError):
            self.paths.pid_file.unlink()
        argv = [
            self.binary,
            "-W",
            "-D",
            "-S",
            f"{self.paths.master_socket},level,admin",
            "-f",
            str(self.paths.config),
        ]
        # The daemonized master keeps stderr open for its notices: a file, never a pipe.
        err = os.open(self.paths.stderr_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            err_start = os.lseek(err, 0, os.SEEK_END)
            launcher = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        finally:
            os.close(err)
        try:
            async with asyncio.timeout(timeout):
                code = await launcher.wait()
        except TimeoutError as exc:
            launcher.kill()
            await launcher.wait()
            raise Unavailable(f"haproxy did not daemonize within {timeout}s") from exc
        if code != 0:
            raise FailedPrecondition(
                f"haproxy failed to start (exit {code}): {self._stderr_since(err_start)}"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            pid = self.master_pid()
            if pid is not None:
                log.info("haproxy started: master %s", pid)
                return pid
            await asyncio.sleep(0.02)
        raise Unavailable("haproxy started but wrote no live master pid")

    async def stop(self, timeout: float = 10.0) -> None:
        """Hard-stop the master (it stops its workers), then kill whatever is left."""
        pid = self.master_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(Unavailable):
                await self._wait_gone(timeout)
        self.kill_all()
        await self._wait_gone(timeout)

    async def _wait_gone(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.processes():
            if loop.time() >= deadline:
                raise Unavailable("haproxy processes did not exit")
            await asyncio.sleep(0.05)

    def _stderr_since(self, offset: int) -> str:
        try:
            with open(self.paths.stderr_file, "rb") as err:
                err.seek(offset)
                return err.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""
