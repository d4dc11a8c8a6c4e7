"""Bandwidth per instance. A bridged instance (the default) is shaped both ways on its
veth (``veth_shaping``), with no cgroup involved. One on the host's network is shaped on its
egress only, by an HTB class per instance on the egress device chosen by the net_cls classid
of the sending socket's cgroup, as follows.

Set-up, once and lazily (the first host-network instance with a network limit):
- the cgroup v1 ``net_cls`` controller is mounted at ``<cgroup_root>/net_cls`` if it
  is not mounted anywhere yet; on a cgroup v2 host it is never mounted (mounting a v1
  controller there can switch off cgroup v2 socket matching), so the limit is not enforced;
- a root ``htb`` qdisc (handle 1:, unclassified traffic goes out unshaped) on the device;
- a classifier: ``tc filter ... cgroup`` where the kernel has it, else a tiny cls_bpf
  program returning ``bpf_get_cgroup_classid(skb)`` (see ``bpf_classid``).
Per instance: ``htb`` class 1:<minor> at the rate, and classid 1:<minor> written into the
container's net_cls cgroup (runc makes one when net_cls was mounted before the container
started; otherwise the agent makes one and moves the container's processes into it).
A host-network instance's ingress arrives on the host's own interfaces, mixed with every
other process's traffic: it is not shaped, and the result says so (not enforced), as does
every failed step, with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.limits import bpf_classid
from agent.limits.cgroups import cgroup_version
from agent.limits.htb import MAJOR, class_command, leaf_command, root_command
from agent.limits.veth_shaping import (
    claim_ifb,
    ifb_minors,
    ifb_name,
    ifb_owner,
    in_own_netns,
    probe_ifb,
    remove_owned_ifbs,
    shape_veth,
    unshape,
)
from agent.limits.veth_shaping import run_tool as _run
from common.errors import FailedPrecondition

__all__ = ["HOST_INGRESS", "EgressShaper", "ShapingResult", "classid_value", "free_minor"]

log = logging.getLogger(__name__)
MIN_MINOR = 0x10
MAX_MINOR = 0xFFFE
HOST_INGRESS = ("a host-network instance receives on the host's own interfaces (use bridge"
                " network mode)")
NO_NET_CLS = ("not enforced: host network on a cgroup v2 host, where net_cls does not exist"
              " (use bridge network mode)")


@dataclass(frozen=True)
class ShapingResult:
    enforced: bool
    """Whether the limit holds in both directions."""
    detail: str


def classid_value(minor: int) -> int:
    """The net_cls.classid number for class 1:<minor> (0xAAAABBBB = major:minor)."""
    return (MAJOR << 16) | minor


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

    def __init__(self, device: str, cgroup_root: Path, run_dir: Path, host_id: str = "") -> None:
        self.device = device
        self.host_id = host_id
        self.cgroup_root = cgroup_root
        self.run_dir = run_dir
        self.net_cls: Path | None = None
        self._ready: ShapingResult | None = None
        self._bridged: ShapingResult | None = None

    # -- set-up ---------------------------------------------------------------------
    def _mount_net_cls(self) -> Path:
        mount = _net_cls_mount()
        if mount is not None:
            return mount
        if cgroup_version(self.cgroup_root) == 2:
            raise FailedPrecondition(NO_NET_CLS.removeprefix("not enforced: "))
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
        _run(root_command(self.device, 0))

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
        """Prepare host-network egress shaping (net_cls, root qdisc, classifier), once."""
        if self._ready is not None:
            return self._ready
        try:
            self.net_cls = self._mount_net_cls()
            self._ensure_root_qdisc()
            how = self._ensure_filter()
            self._ready = ShapingResult(True, f"tc htb on {self.device}, classifier {how}")
        except (FailedPrecondition, OSError) as exc:
            self._ready = ShapingResult(False, f"not enforced: {exc}")
            log.warning("host-network egress shaping unavailable: %s", exc)
        return self._ready

    def available(self) -> ShapingResult:
        """Whether bridged instances can be shaped (both ways) here: ifb devices work."""
        if self._bridged is None:
            try:
                probe_ifb()
                self._bridged = ShapingResult(True, "tc htb on veths and ifb devices")
            except (FailedPrecondition, OSError) as exc:
                self._bridged = ShapingResult(False, f"not enforced: {exc}")
                log.warning("bridged bandwidth shaping unavailable: %s", exc)
        return self._bridged

    # -- per instance -----------------------------------------------------------------
    def used_minors(self) -> set[int]:
        """Minors taken on this host: classes on the device and every agent's ifbs."""
        shown = ""
        with contextlib.suppress(FailedPrecondition):
            shown = _run(["tc", "class", "show", "dev", self.device])
        classes = {int(m, 16) for m in re.findall(rf"class htb {MAJOR}:([0-9a-f]+) ", shown)}
        return classes | ifb_minors(_run(["ip", "-o", "link", "show"]))

    def claim(self, taken: set[int], instance_id: str) -> int:
        """A minor free on this host (``taken``: this agent's), claimed for ``instance_id`` by
        creating its ifb, so agents sharing a host never share a class. Blocking."""
        taken = set(taken)
        for _ in range(32):
            minor = free_minor(taken | self.used_minors())
            try:
                if claim_ifb(minor, ifb_owner(self.host_id, instance_id)):
                    return minor
            except FailedPrecondition:  # no ifb here: apply() reports what that means
                return minor
            taken.add(minor)  # claimed by someone else meanwhile
        raise FailedPrecondition("no traffic class could be claimed on this host")

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
        return ShapingResult(False, f"not enforced on ingress: {rate_bits} bit/s egress only,"
                                    f" class {MAJOR}:{minor:x} on {self.device}; {HOST_INGRESS}")

    def _apply_veth(self, pid: int, minor: int, rate_bits: int) -> ShapingResult:
        try:
            veth = shape_veth(pid, minor, rate_bits)
        except (FailedPrecondition, OSError) as exc:
            return ShapingResult(False, f"not enforced: {exc}")
        return ShapingResult(True, f"{rate_bits} bit/s each way: egress on {ifb_name(minor)}"
                                   f" (from veth {veth}'s ingress), ingress on {veth}")

    def release(self, container_id: str | None, minor: int) -> None:
        """Delete the instance's class and ifb (and the net_cls cgroup the agent made); the
        veth's qdiscs went with the veth."""
        with contextlib.suppress(FailedPrecondition):
            _run(["tc", "class", "del", "dev", self.device, "classid", f"{MAJOR}:{minor:x}"])
        unshape(minor)
        if container_id:
            self.forget_container(container_id)

    def forget_orphans(self, kept: set[int]) -> list[str]:
        """Delete this agent's ifbs whose minor no instance holds (left by a crash)."""
        with contextlib.suppress(FailedPrecondition):
            return remove_owned_ifbs(ifb_owner(self.host_id, ""), kept)
        return []

    def forget_container(self, container_id: str) -> None:
        """Remove the net_cls cgroup the agent made for a container that is gone."""
        if self.net_cls is not None:
            with contextlib.suppress(OSError):
                (self.net_cls / "landlord" / container_id).rmdir()


def _read_pids(path: Path) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(x) for x in path.read_text().split()]
    return []
