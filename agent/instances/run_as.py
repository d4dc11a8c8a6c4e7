"""Which user an instance's process runs as, and giving its state directory to that user.

An instance runs as the user its image declares (Docker's ``Config.User``), or, when the
image declares none (or declares root) and the unit did not ask for root
(``run_as_root``), as the fixed unprivileged ``UNPRIVILEGED_UID:UNPRIVILEGED_UID``
(65532, the "nonroot" user of distroless images; no passwd entry is needed). Root is only
ever chosen by the unit, explicitly. The container's other hardening (capabilities
dropped, no-new-privileges, read-only root, pids limit) applies whichever user it is.

The agent creates the state directory it bind-mounts, so it hands that directory (the
directory itself, mode 0700, never followed through a link) to the instance's user before
the container starts. Contents keep their owners: what an instance wrote is its user's
already, and a snapshot copy keeps owners as ``cp -a`` does. A named image user
(``USER app``) is resolved through the image's own ``/etc/passwd`` and ``/etc/group``,
read from the created container, as Docker resolves it at start.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from agent.runtime.protocol import ContainerRuntime
from common.errors import FailedPrecondition

__all__ = ["ROOT", "UNPRIVILEGED_UID", "chosen_user", "give_state_dir", "resolve_owner",
           "state_owner"]

UNPRIVILEGED_UID = 65532
"""uid and gid of instances whose image names no user (nor root) and that ask for no root."""
ROOT = "0:0"
_ROOT_NAMES = frozenset({"", "0", "root"})
_ACCOUNT_FILE_CAP = 1 << 20


def chosen_user(image_user: str, run_as_root: bool) -> str:
    """The ``--user`` for an instance: root only when asked, else the image's user unless
    that is root or missing, else the fixed unprivileged uid."""
    if run_as_root:
        return ROOT
    if image_user.strip() and image_user.strip().split(":", 1)[0] not in _ROOT_NAMES:
        return image_user.strip()
    return f"{UNPRIVILEGED_UID}:{UNPRIVILEGED_UID}"


def _needs_accounts(user: str) -> bool:
    return not all(part.isdigit() for part in user.split(":", 1))


def _entries(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_owner(user: str, passwd: str = "", group: str = "") -> tuple[int, int]:
    """(uid, gid) of Docker's ``user[:group]`` with the image's account files: names looked
    up, a missing group is the user's primary group (0 for a uid with no entry)."""
    name, _, group_name = user.partition(":")
    accounts = _entries(passwd)
    if name.isdigit():
        uid = int(name)
        entry = next((e for e in accounts if len(e) > 3 and e[2] == name), None)
    else:
        entry = next((e for e in accounts if len(e) > 3 and e[0] == name), None)
        if entry is None or not entry[2].isdigit():
            raise FailedPrecondition(f"user {name[:64]!r} of the image is not in its "
                                     "/etc/passwd")
        uid = int(entry[2])
    if not group_name:
        return uid, int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    if group_name.isdigit():
        return uid, int(group_name)
    found = next((g for g in _entries(group) if len(g) > 2 and g[0] == group_name), None)
    if found is None or not found[2].isdigit():
        raise FailedPrecondition(f"group {group_name[:64]!r} of the image is not in its "
                                 "/etc/group")
    return uid, int(found[2])


async def state_owner(runtime: ContainerRuntime, container_id: str, user: str
                      ) -> tuple[int, int]:
    """(uid, gid) the created container's process will have."""
    if not _needs_accounts(user):
        return resolve_owner(user)
    passwd = await runtime.read_file(container_id, "/etc/passwd", _ACCOUNT_FILE_CAP)
    group = await runtime.read_file(container_id, "/etc/group", _ACCOUNT_FILE_CAP)
    return resolve_owner(user, passwd.decode(errors="replace"), group.decode(errors="replace"))


async def give_state_dir(runtime: ContainerRuntime, container_id: str, user: str,
                         path: Path) -> None:
    """Make the state directory the created container's user's, mode 0700."""
    uid, gid = await state_owner(runtime, container_id, user)
    await asyncio.to_thread(_chown_dir, path, uid, gid)


def _chown_dir(path: Path, uid: int, gid: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:  # through the descriptor: a link put in its place is refused, never followed
        os.fchown(fd, uid, gid)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
