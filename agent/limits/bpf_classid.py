"""A two-instruction tc classifier that classifies a packet by its socket's net_cls classid.

The kernel here lacks ``cls_cgroup`` (CONFIG_NET_CLS_CGROUP), but has cls_bpf. In
non-direct-action mode cls_bpf takes the program's return value as the class id (0 means
"no match"), so ``return bpf_get_cgroup_classid(skb)`` does exactly what the ``cgroup``
filter does. The program is loaded with the bpf(2) syscall and pinned in a bpf
filesystem, from where ``tc filter ... bpf object-pinned PATH`` attaches it.
"""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

from common.errors import FailedPrecondition

__all__ = ["CLASSID_PROGRAM", "load_and_pin"]

_SYS_BPF = {"x86_64": 321, "aarch64": 280}
_BPF_PROG_LOAD = 5
_BPF_OBJ_PIN = 6
_BPF_PROG_TYPE_SCHED_CLS = 3
_BPF_FUNC_GET_CGROUP_CLASSID = 17
_ATTR_SIZE = 128


def _insn(code: int, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, 0, 0, imm)


CLASSID_PROGRAM = _insn(0x85, _BPF_FUNC_GET_CGROUP_CLASSID) + _insn(0x95)
"""call bpf_get_cgroup_classid (r1 = skb on entry); exit with its result in r0."""


def load_and_pin(pin_path: Path) -> None:
    """Load the classifier and pin it at ``pin_path`` (inside a mounted bpf filesystem)."""
    machine = os.uname().machine
    if machine not in _SYS_BPF:
        raise FailedPrecondition(f"no bpf syscall number known for {machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    insns = ctypes.create_string_buffer(CLASSID_PROGRAM, len(CLASSID_PROGRAM))
    license_text = ctypes.create_string_buffer(b"GPL")
    log_buffer = ctypes.create_string_buffer(4096)
    attr = struct.pack(
        "<IIQQIIQII16s", _BPF_PROG_TYPE_SCHED_CLS, len(CLASSID_PROGRAM) // 8,
        ctypes.addressof(insns), ctypes.addressof(license_text), 1, len(log_buffer),
        ctypes.addressof(log_buffer), 0, 0, b"ll_classid")
    attr_buffer = ctypes.create_string_buffer(attr, _ATTR_SIZE)
    fd = libc.syscall(_SYS_BPF[machine], _BPF_PROG_LOAD, attr_buffer, _ATTR_SIZE)
    if fd < 0:
        err = ctypes.get_errno()
        raise FailedPrecondition(
            f"cannot load the bpf classifier: {os.strerror(err)}"
            f" {log_buffer.value.decode(errors='replace')}".strip())
    try:
        path = ctypes.create_string_buffer(str(pin_path).encode())
        pin = ctypes.create_string_buffer(struct.pack("<QII", ctypes.addressof(path), fd, 0),
                                          _ATTR_SIZE)
        if libc.syscall(_SYS_BPF[machine], _BPF_OBJ_PIN, pin, _ATTR_SIZE) != 0:
            err = ctypes.get_errno()
            raise FailedPrecondition(f"cannot pin the bpf classifier at {pin_path}:"
                                     f" {os.strerror(err)}")
    finally:
        os.close(fd)
