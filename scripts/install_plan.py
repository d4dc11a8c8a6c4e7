"""What installing Landlord on a host needs, decided without touching the host.

``plan(wants, seen, installed_before)`` turns the wanted paths (``wanted_paths``: links,
units, samples, docs of a role) and what is there now into the actions that close the gap
(nothing when nothing differs); ``removal_plan`` is uninstall's; ``release_name`` names a
build by its wheels' contents. scripts/host_install.py observes the host, calls these and
applies the actions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

PREFIX = PurePosixPath("/opt/landlord")
UNIT_DIR = PurePosixPath("/usr/local/lib/systemd/system")
BIN_DIR = PurePosixPath("/usr/bin")
CONFIG_DIR = PurePosixPath("/etc/landlord")
DOC_DIR = PurePosixPath("/usr/share/doc/landlord")
ROLES = ("agent", "coordinator", "both")
DAEMONS = {"agent": "landlord-agent", "coordinator": "landlord-coordinator"}
DOCS = ("README.md", "docs/install.md", "docs/configuration.md", "docs/architecture.md")


class InstallError(Exception):
    """Something the operator must fix; printed as one line, exit status 1."""


@dataclass(frozen=True)
class Want:
    """One path the installation needs. kind: "file" (content, mode), "link" (target),
    "dir" (mode). ``keep``: an operator's file (configs): written only when absent, never
    replaced, left by uninstall unless purged."""

    path: PurePosixPath
    kind: str
    content: bytes = b""
    target: str = ""
    mode: int = 0o644
    keep: bool = False


@dataclass(frozen=True)
class Seen:
    """What is at a path now (kind "absent" when nothing)."""

    kind: str
    content: bytes = b""
    target: str = ""
    mode: int = 0


ABSENT = Seen("absent")


@dataclass(frozen=True)
class Action:
    verb: str  # "write", "link", "mkdir", "chmod", "remove"
    want: Want
    reason: str

    def describe(self) -> str:
        return f"{self.verb} {self.want.path} ({self.reason})"


def plan(wants: Sequence[Want], seen: Mapping[PurePosixPath, Seen],
         installed_before: Iterable[Want] = ()) -> list[Action]:
    """The actions that make the paths of ``wants`` what they should be, parents first,
    then the removal of what a previous install made and is no longer wanted
    (``installed_before``; operator files stay). Empty when everything is in place."""
    actions: list[Action] = []
    for want in sorted(wants, key=lambda w: (len(w.path.parts), str(w.path))):
        now = seen.get(want.path, ABSENT)
        if now.kind == "absent":
            verb = {"dir": "mkdir", "link": "link"}.get(want.kind, "write")
            actions.append(Action(verb, want, "missing"))
        elif want.kind == "dir" and now.kind != "dir":
            raise InstallError(f"{want.path} exists and is not a directory")
        elif want.kind != "dir" and now.kind == "dir":
            raise InstallError(f"{want.path} is a directory, expected a {want.kind}")
        elif want.keep:
            continue  # the operator's copy, edited or not
        elif want.kind == "link":
            if now.kind != "link" or now.target != want.target:
                actions.append(Action("link", want, f"points to {now.target or now.kind}"))
        elif want.kind == "file" and (now.kind != "file" or now.content != want.content):
            actions.append(Action("write", want, "changed"))
        elif now.mode != want.mode:
            actions.append(Action("chmod", want, f"mode {now.mode:o} -> {want.mode:o}"))
    wanted = {w.path for w in wants}
    stale = [w for w in installed_before if w.path not in wanted and not w.keep]
    return actions + removal_plan(stale, seen, purge=False)


def removal_plan(installed: Iterable[Want], seen: Mapping[PurePosixPath, Seen],
                 purge: bool) -> list[Action]:
    """Remove what an install made, children before parents; operator files (configs, the
    tls directory) only with ``purge``."""
    actions = []
    for want in sorted(installed, key=lambda w: (-len(w.path.parts), str(w.path))):
        if want.keep and not purge:
            continue
        if seen.get(want.path, ABSENT).kind != "absent":
            actions.append(Action("remove", want, "purged" if want.keep else "installed"))
    return actions


def release_name(version: str, wheels: Mapping[str, Iterable[tuple[str, int]]]) -> str:
    """``<version>-<digest>`` where the digest covers every wheel's name and members (names
    and CRCs, not zip timestamps): the same build twice gives the same release."""
    h = hashlib.sha256()
    for name in sorted(wheels):
        h.update(name.encode() + b"\0")
        for member, crc in sorted(wheels[name]):
            h.update(f"{member}\0{crc}\0".encode())
    return f"{version}-{h.hexdigest()[:12]}"


def wanted_paths(role: str, samples: Mapping[str, bytes], units: Mapping[str, bytes],
                 docs: Mapping[str, bytes]) -> list[Want]:
    """Everything but the virtualenv for ``role``: units and configs of its daemons, the
    links to the commands, the docs."""
    daemons = ["agent", "coordinator"] if role == "both" else [role]
    wants = [Want(CONFIG_DIR, "dir", mode=0o755, keep=True), Want(DOC_DIR, "dir", mode=0o755)]
    commands = ["landlord", *(DAEMONS[d] for d in daemons)]
    for command in commands:
        target = f"../..{PREFIX}/current/bin/{command}"
        wants.append(Want(BIN_DIR / command, "link", target=target))
    for daemon in daemons:
        unit = f"{DAEMONS[daemon]}.service"
        wants.append(Want(UNIT_DIR / unit, "file", content=units[unit]))
        if f"{daemon}.toml" in samples:
            # 0644: the coordinator's dynamic user reads it; secrets live in files of their
            # own (the coordinator's via LoadCredential=, see docs/install.md)
            wants.append(Want(CONFIG_DIR / f"{daemon}.toml", "file",
                              content=samples[f"{daemon}.toml"], mode=0o644, keep=True))
    if "coordinator" in daemons:
        wants.append(Want(CONFIG_DIR / "tls", "dir", mode=0o700, keep=True))
    for name, content in docs.items():
        wants.append(Want(DOC_DIR / PurePosixPath(name).name, "file", content=content))
    return wants


def manifest_of(wants: Iterable[Want]) -> bytes:
    """What uninstall needs to know of each installed path (not the content)."""
    rows = [{"path": str(w.path), "kind": w.kind, "keep": w.keep}
            for w in sorted(wants, key=lambda w: str(w.path))]
    return (json.dumps(rows, indent=1) + "\n").encode()


def read_manifest(text: str) -> list[Want]:
    return [Want(PurePosixPath(r["path"]), r["kind"], keep=bool(r["keep"]))
            for r in json.loads(text)]
