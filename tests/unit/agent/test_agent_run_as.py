"""Which user an instance runs as, and the owner of its state directory
(agent/instances/run_as.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.instances.run_as import ROOT, UNPRIVILEGED_UID, chosen_user, resolve_owner
from common.errors import FailedPrecondition

NOBODY = f"{UNPRIVILEGED_UID}:{UNPRIVILEGED_UID}"
PASSWD = "root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1001:1002::/home/app:/bin/false\n"
GROUP = "root:x:0:\nstaff:x:50:\napp:x:1002:\n"


@pytest.mark.parametrize(("image_user", "run_as_root", "expected"), [
    ("", False, NOBODY),
    ("root", False, NOBODY),  # root is asked for by the unit, never taken from the image
    ("0", False, NOBODY),
    ("0:0", False, NOBODY),
    ("root:app", False, NOBODY),
    ("app", False, "app"),
    (" 1000:1000 ", False, "1000:1000"),
    ("app", True, ROOT),
    ("", True, ROOT),
])
def test_chosen_user(image_user: str, run_as_root: bool, expected: str) -> None:
    assert chosen_user(image_user, run_as_root) == expected


@given(st.text(alphabet="abcxyz0123456789:", max_size=12))
def test_never_root_unless_asked(image_user: str) -> None:
    user = chosen_user(image_user, run_as_root=False)
    assert user.split(":", 1)[0] not in ("", "0", "root")
    assert chosen_user(image_user, run_as_root=True) == ROOT


def test_resolve_owner_numbers_and_names() -> None:
    assert resolve_owner(NOBODY) == (UNPRIVILEGED_UID, UNPRIVILEGED_UID)
    assert resolve_owner(ROOT) == (0, 0)
    assert resolve_owner("1000") == (1000, 0)  # no entry: Docker's primary group is 0
    assert resolve_owner("1001", PASSWD) == (1001, 1002)  # the entry's primary group
    assert resolve_owner("app", PASSWD, GROUP) == (1001, 1002)
    assert resolve_owner("app:staff", PASSWD, GROUP) == (1001, 50)
    assert resolve_owner("app:7", PASSWD, GROUP) == (1001, 7)
    with pytest.raises(FailedPrecondition, match="'ghost' of the image is not in its /etc/passwd"):
        resolve_owner("ghost", PASSWD, GROUP)
    with pytest.raises(FailedPrecondition, match="group 'wheel'"):
        resolve_owner("app:wheel", PASSWD, GROUP)


def test_chown_dir_refuses_a_link(tmp_path: Path) -> None:
    from agent.instances.run_as import _chown_dir

    real = tmp_path / "real"
    real.mkdir()
    _chown_dir(real, 4321, 4322)
    info = real.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (4321, 4322, 0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(OSError):
        _chown_dir(tmp_path / "link", 0, 0)
    assert os.stat(real).st_uid == 4321
