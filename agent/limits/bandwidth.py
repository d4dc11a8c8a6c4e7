"""Egress bandwidth per instance. A bridged instance is shaped on its veth
(``veth_shaping``); one on the host's network by an HTB class per instance on the egress
device, chosen by the net_cls classid of the sending socket's cgroup, as follows.

Set-up, once and lazily (the first instance with a network limit):
- the cgroup v1 ``net_cls`` controller is mounted at ``<cgroup_root>/net_cls`` if it
  is not mounted anywhere yet;
- a root ``htb`` qdisc (handle 1:, unclassified traffic goes out unshaped) on the device;
- a classifier: ``tc filter ... cgroup`` where the kernel has it, else a tiny cls_bpf
  program returning ``bpf_get_cgroup_classid(skb)`` (see ``bpf_classid``).
Per instance: ``htb`` class 1:<minor> at the rate, and classid 1:<minor> written into the
container's net_cls cgroup (runc makes one when net_cls was mounted before the container
started; otherwise the agent makes one and moves the container's processes into it).
Whatever step fails, the limit is reported as not enforced with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.limits import bpf_classid
from agent.limits.veth_shaping import ifb_name, in_own_netns, shape_veth, unshape
from agent.limits.veth_shaping import run_tool as _run
from common.errors import FailedPrecondition

__all__ = [
    "EgressShaper",
    "ShapingResult",
    "class_command",
    "classid_value",
    "free_minor",
    "htb_burst_bytes",
    "leaf_command",
    "leaf_queue_bytes",
]

log = logging.getLogger(__name__)
MAJOR = 1
MIN_MINOR = 0x10
MAX_MINOR = 0xFFFE


@dataclass(frozen=True)
class ShapingResult:
    enforced: bool
    detail: str


def classid_value(minor: int) -> int:
    """The net_cls.classid number for class 1:<minor> (0xAAAABBBB = major:minor)."""
    return (MAJOR << 16) | minor


def htb_burst_bytes(rate_bits: int) -> int:
    """A burst above lo's 64 KiB MTU (a smaller one stalls TCP) and ~50 ms of traffic."""
    return max(256 * 1024, rate_bits // 8 // 20)


def class_command(device: str, minor: int, rate_bits: int) -> list[str]:
    burst = htb_burst_bytes(rate_bits)
    return ["tc", "class", "replace", "dev", device, "parent", f"{MAJOR}:",
            "classid", f"{MAJOR}:{minor:x}", "htb", "rate", f"{rate_bits}bit",
            "ceil", f"{rate_bits}bit", "burst", str(burst), "cburst", str(burst)]


def leaf_queue_bytes(rate_bits: int) -> int:
    """Queue of one class: its burst plus 50 ms at the rate (as the CNI bandwidth plugin
    bounds latency), so a saturated instance still answers its health checks in time."""
    return htb_burst_bytes(rate_bits) + rate_bits // 8 // 20


def leaf_command(device: str, minor: int, rate_bits: int) -> list[str]:
    return ["tc", "qdisc", "replace", "dev", device, "parent", f"{MAJOR}:{minor:x}",
            "handle", f"{minor:x}:", "bfifo", "limit", str(leaf_queue_bytes(rate_bits))]


def free_minor(used: Iterable[int]) -> int:
    taken = set(used)
    for minor in range(MIN_MINOR, MAX_MINOR + 1):
        if minor not in taken:
            return minor
    raise FailedPrecondition("no free traffic class left on the egress device")


def _net_cls_mount() -> Path | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[2] == "cgroup" and "net_cls" in parts[3].split(","):
                return Path(parts[1])
    return None


class EgressShaper:
    """Shapes instance egress on one device; every call is blocking (run it in a thread)."""

    def __init__(self, device: str, cgroup_root: Path, run_dir: Path) -> None:
        self.device = device
        self.cgroup_root = cgroup_root
        self.run_dir = run_dir
        self.net_cls: Path | None = None
        self._ready: ShapingResult | None = None

    # -- set-up ---------------------------------------------------------------------
    def _mount_net_cls(self) -> Path:
        mount = _net_cls_mount()
        if mount is not None:
            return mount
        target = self.cgroup_root / "net_cls"
        target.mkdir(exist_ok=True)
        _run(["mount", "-t", "cgroup", "-o", "net_cls", "net_cls", str(target)])
        return target

    def _ensure_root_qdisc(self) -> None:
        shown = _run(["tc", "qdisc", "show", "dev", self.device, "root"])
        if re.search(rf"qdisc htb {MAJOR}: ", shown):
            return
        if shown.strip() and not re.search(r"qdisc (noqueue|pfifo_fast|fq_codel|mq) ", shown):
            raise FailedPrecondition(f"{self.device} already has a root qdisc: {shown.strip()}")
        _run(["tc", "qdisc", "replace", "dev", self.device, "root", "handle", f"{MAJOR}:",
              "htb", "default", "0"])

    def _ensure_filter(self) -> str:
        shown = _run(["tc", "filter", "show", "dev", self.device, "parent", f"{MAJOR}:"])
        if "ll_classid" in shown or " cgroup " in shown:
            return "existing"
        with contextlib.suppress(FailedPrecondition):
            _run(["tc", "filter", "add", "dev", self.device, "parent", f"{MAJOR}:",
                  "protocol", "all", "prio", "10", "handle", "1:", "cgroup"])
            return "cgroup"
        bpffs = self.run_dir / "bpf"
        bpffs.mkdir(parents=True, exist_ok=True)
        if _run(["stat", "-f", "-c", "%T", str(bpffs)]).strip() != "bpf_fs":
            _run(["mount", "-t", "bpf", "bpf", str(bpffs)])
        pin = bpffs / "landlord_classid"
        if not pin.exists():
            bpf_classid.load_and_pin(pin)
        _run(["tc", "filter", "add", "dev", self.device, "parent", f"{MAJOR}:", "protocol",
              "all", "prio", "10", "handle", "1", "bpf", "object-pinned", str(pin)])
        return "bpf"

    def setup(self) -> ShapingResult:
        if self._ready is not None:
            return self._ready
        try:
            self.net_cls = self._mount_net_cls()
            self._ensure_root_qdisc()
            how = self._ensure_filter()
            self._ready = ShapingResult(True, f"tc htb on {self.device}, classifier {how}")
        except (FailedPrecondition, OSError) as exc:
            self._ready = ShapingResult(False, f"not enforced: {exc}")
            log.warning("egress shaping unavailable: %s", exc)
        return self._ready

    # -- per instance -----------------------------------------------------------------
    def used_minors(self) -> set[int]:
        shown = _run(["tc", "class", "show", "dev", self.device])
        return {int(m, 16) for m in re.findall(rf"class htb {MAJOR}:([0-9a-f]+) ", shown)}

    def _container_net_cls_dir(self, container_id: str, pid: int) -> Path:
        assert self.net_cls is not None
        paths: dict[str, str] = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                _, controllers, path = line.split(":", 2)
                for controller in controllers.split(","):
                    paths[controller] = path
        if paths.get("net_cls", "/") != "/":
            return self.net_cls / paths["net_cls"].lstrip("/")
        own = self.net_cls / "landlord" / container_id
        own.mkdir(parents=True, exist_ok=True)
        members = self.cgroup_root / "pids" / paths.get("pids", "/").lstrip("/") / "cgroup.procs"
        for _ in range(3):  # processes forked while moving: go again
            procs = _read_pids(members) if "pids" in paths else [pid]
            for member in procs:
                with contextlib.suppress(OSError):
                    (own / "cgroup.procs").write_text(str(member))
        return own

    def apply(self, container_id: str, pid: int, minor: int, rate_bits: int) -> ShapingResult:
        if in_own_netns(pid):  # bridged: its traffic never crosses self.device
            return self._apply_veth(pid, minor, rate_bits)
        ready = self.setup()
        if not ready.enforced:
            return ready
        try:
            _run(class_command(self.device, minor, rate_bits))
            _run(leaf_command(self.device, minor, rate_bits))
            directory = self._container_net_cls_dir(container_id, pid)
            (directory / "net_cls.classid").write_text(str(classid_value(minor)))
        except (FailedPrecondition, OSError) as exc:
            return ShapingResult(False, f"not enforced: {exc}")
        return ShapingResult(True, f"{rate_bits} bit/s egress, class {MAJOR}:{minor:x} on"
                                   f" {self.device}")

    def _apply_veth(self, pid: int, minor: int, rate_bits: int) -> ShapingResult:
        ifb = ifb_name(minor)
        try:
            veth = shape_veth(pid, minor, rate_bits, class_command(ifb, minor, rate_bits),
                              leaf_command(ifb, minor, rate_bits))
        except (FailedPrecondition, OSError) as exc:
            return ShapingResult(False, f"not enforced: {exc}")
        return ShapingResult(True, f"{rate_bits} bit/s egress, veth {veth} ingress shaped"
                                   f" on {ifb}")

    def release(self, container_id: str | None, minor: int) -> None:
        """Delete the instance's class or ifb (and the net_cls cgroup the agent made)."""
        with contextlib.suppress(FailedPrecondition):
            _run(["tc", "class", "del", "dev", self.device, "classid", f"{MAJOR}:{minor:x}"])
        unshape(minor)
        if container_id:
            self.forget_container(container_id)

    def forget_container(self, container_id: str) -> None:
        """Remove the net_cls cgroup the agent made for a container that is gone."""
        if self.net_cls is not None:
            with contextlib.suppress(OSError):
                (self.net_cls / "landlord" / container_id).rmdir()


def _read_pids(path: Path) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(x) for x in path.read_text().split()]
    return []
