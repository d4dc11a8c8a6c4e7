"""A booted systemd host for end-to-end tests: systemd-nspawn on a cached Debian rootfs.

``BootedHost`` boots a fresh overlay of the root filesystem that scripts/build-host-rootfs.sh
caches (the cache is never written: every boot starts from the same clean host) with
systemd as PID 1, sharing the machine's network (loopback included), so what runs inside
reaches etcd, Docker's published ports and the test process, and is reached by them. Binds
are given as ``Bind``s; ``run()`` executes a command inside through ``nsenter`` with a clean
environment (the test process's pip or LANDLORD_* settings stay out); ``close()`` shuts the
machine down (SIGTERM to systemd-nspawn: a clean poweroff, SIGKILL after a timeout) and
removes the overlay, whatever happened.

Facts this relies on (checked on Debian 12, systemd 252, cgroup v1 hosts):
- nspawn drops CAP_NET_ADMIN unless ``--capability`` gives it back (tc needs it), and its
  seccomp filter refuses bpf(2) ("Operation not permitted" loading the agent's classifier)
  unless ``--system-call-filter=bpf`` allows it: both are on by default here, so the agent
  shapes egress inside as on a real host;
- with legacy cgroups the container sees only its own cgroup subtree: bind the host's
  /sys/fs/cgroup somewhere else (``HOST_CGROUP``) and point the agent's cgroup_root there;
- the host's dockerd resolves bind-mount sources on host paths: bind the agent's data
  directory at the same path inside.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.support import eventually

__all__ = ["HOST_CGROUP", "Bind", "BootedHost", "NspawnError", "host_rootfs"]

REPO = Path(__file__).resolve().parents[2]
HOST_CGROUP = "/run/host-cgroup"
"""Where the machine's /sys/fs/cgroup is bound inside (the container's own is systemd's)."""
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class NspawnError(AssertionError):
    """The machine did not boot or a command inside failed (with its output)."""


@dataclass(frozen=True)
class Bind:
    source: str
    target: str = ""
    """Path inside (default: the same as ``source``)."""
    read_only: bool = False

    def option(self) -> str:
        flag = "--bind-ro" if self.read_only else "--bind"
        return f"{flag}={self.source}:{self.target or self.source}"


def host_rootfs() -> Path:
    """The cached root filesystem (built on the first call on a machine, about a minute)."""
    done = subprocess.run([str(REPO / "scripts" / "build-host-rootfs.sh")], capture_output=True,
                          text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise NspawnError(f"build-host-rootfs.sh failed:\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


class BootedHost:
    """One systemd-nspawn machine booted from an overlay of ``rootfs``."""

    def __init__(self, rootfs: Path, name: str, binds: Iterable[Bind] = (),
                 capabilities: Sequence[str] = ("CAP_NET_ADMIN",),
                 extra_args: Sequence[str] = ("--system-call-filter=bpf",)) -> None:
        self.rootfs = rootfs
        self.name = name
        self.binds = list(binds)
        self.capabilities = list(capabilities)
        self.extra_args = list(extra_args)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"nspawn-{name}-", dir="/var/tmp"))
        self.root = self.workdir / "merged"
        self.console = self.workdir / "console.log"
        self._nspawn: subprocess.Popen[bytes] | None = None
        self._mounted = False
        self.leader = 0
        """Host pid of the machine's systemd (PID 1 inside)."""

    def __enter__(self) -> BootedHost:
        try:
            return self.boot()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *_: object) -> None:
        self.close()

    def boot(self, timeout: float = 60.0) -> BootedHost:
        for part in ("upper", "work", "merged"):
            (self.workdir / part).mkdir()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.rootfs},upperdir={self.workdir / 'upper'},"
                        f"workdir={self.workdir / 'work'}", str(self.root)],
                       check=True, capture_output=True, timeout=30)
        self._mounted = True
        cmd = ["systemd-nspawn", "-D", str(self.root), "-b", "--register=no", "--keep-unit",
               "-M", self.name, "--console=pipe",
               *(f"--capability={c}" for c in self.capabilities),
               *(b.option() for b in self.binds), *self.extra_args]
        with self.console.open("wb") as out:
            self._nspawn = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.leader = eventually(self._find_leader, timeout=timeout, interval=0.1,
                                 message=f"{self.name}: systemd started")
        eventually(self._booted, timeout=timeout, interval=0.2,
                   message=f"{self.name}: systemctl is-system-running")
        return self

    def _find_leader(self) -> int:
        """The descendant of systemd-nspawn that is PID 1 of its own PID namespace (nspawn
        forks an intermediate child first, which exits once the container's init runs)."""
        assert self._nspawn is not None
        if self._nspawn.poll() is not None:
            raise NspawnError(f"systemd-nspawn exited {self._nspawn.returncode}:\n"
                              f"{self.console.read_text(errors='replace')[-3000:]}")
        for child in psutil.Process(self._nspawn.pid).children(recursive=True):
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{child.pid}/status").read_text()
                nspid = next(line.split()[1:] for line in status.splitlines()
                             if line.startswith("NSpid:"))
                if len(nspid) > 1 and nspid[-1] == "1":
                    return int(child.pid)
        raise AssertionError("the container's init is not running yet")

    def _booted(self) -> bool:
        state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
        assert state, "systemctl is-system-running answered nothing"
        if state == "degraded":
            failed = self.run(["systemctl", "--failed", "--no-legend"], check=False).stdout
            raise NspawnError(f"{self.name} booted degraded: {failed}")
        return state == "running"

    def run(self, cmd: Sequence[str], *, check: bool = True, timeout: float = 120.0,
            env: Mapping[str, str] | None = None, input: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """``cmd`` inside the machine (its mount, UTS, IPC, network and PID namespaces), as
        root, with only PATH, LANG and ``env`` set."""
        assert self.leader, "not booted"
        environment = {"PATH": PATH, "LANG": "C.UTF-8", **(env or {})}
        done = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", *cmd],
            env=environment, capture_output=True, text=True, timeout=timeout, check=False,
            input=input)
        if check and done.returncode != 0:
            raise NspawnError(f"{' '.join(cmd)} exited {done.returncode} in {self.name}:\n"
                              f"{done.stdout}\n{done.stderr}")
        return done

    def sh(self, script: str, **kwargs: object) -> str:
        """A shell script inside (``set -e``); its stdout."""
        done = self.run(["sh", "-ec", script], **kwargs)  # type: ignore[arg-type]
        return done.stdout

    def write(self, path: str, text: str) -> None:
        self.run(["sh", "-ec", f'mkdir -p "$(dirname {path})"; cat > {path}'], input=text)

    def unit(self, name: str, *properties: str) -> dict[str, str]:
        """``systemctl show`` of ``properties``."""
        out = self.run(["systemctl", "show", name, *(f"-p{p}" for p in properties)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, lines: int = 60) -> str:
        return self.run(["journalctl", "-u", unit, "-n", str(lines), "--no-pager"],
                        check=False).stdout

    def close(self, timeout: float = 30.0) -> None:
        """Power the machine off (SIGTERM to nspawn; SIGKILL after ``timeout``), unmount and
        remove the overlay."""
        proc, self._nspawn = self._nspawn, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.leader = 0
        if self._mounted:
            for attempt in range(20):
                if subprocess.run(["umount", str(self.root)], capture_output=True,
                                  check=False).returncode == 0:
                    break
                time.sleep(0.25 * (attempt + 1))
            else:
                subprocess.run(["umount", "-l", str(self.root)], check=False)
            self._mounted = False
        shutil.rmtree(self.workdir, ignore_errors=True)
