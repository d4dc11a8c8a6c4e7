#!/usr/bin/env python3
"""Install Landlord on a host under systemd, remove it, or build an offline wheelhouse.

    python3 scripts/host_install.py install [--role agent|coordinator|both] [--wheelhouse DIR]
    python3 scripts/host_install.py uninstall [--purge]
    python3 scripts/host_install.py wheelhouse [--dest DIR]

(``make install``, ``make uninstall`` and ``make wheelhouse`` call this; needs only the
Python standard library and python3-venv on the host.)

Layout (every path below --root, default /):
- /opt/landlord/releases/<version>-<digest>/: a virtualenv with Landlord and its
  dependencies, one per build (<digest> covers the content of every wheel installed);
  /opt/landlord/current links to the one in use. An upgrade builds the new release next to
  the running one and then switches the link, so a running daemon never sees a half-written
  tree; the release before stays (for the daemons still running it, and to roll back).
- /usr/bin/landlord{,-agent,-coordinator} -> the current release's commands;
- /usr/local/lib/systemd/system/landlord-{agent,coordinator}.service (the role's units);
- /etc/landlord/{agent,coordinator}.toml: the commented samples, written only when absent;
  /etc/landlord/tls/ for the coordinator's keys (handed over by LoadCredential=);
- /usr/share/doc/landlord/: the documents the units' Documentation= names;
- /opt/landlord/manifest.json: what was installed, so uninstall removes exactly that.

Installing decides first (scripts/install_plan.py, pure: from what is wanted and what is
there) and then acts, so a second run finds nothing to do and says so. The installer never
restarts a service unless asked (--restart); it prints what to restart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from install_plan import (
    BIN_DIR,
    CONFIG_DIR,
    DAEMONS,
    DOCS,
    PREFIX,
    ROLES,
    UNIT_DIR,
    Action,
    InstallError,
    Seen,
    Want,
    manifest_of,
    plan,
    read_manifest,
    release_name,
    removal_plan,
    wanted_paths,
)

SOURCE = Path(__file__).resolve().parent.parent
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01: wheels built twice from one tree are equal


class Host:
    """The filesystem below ``root`` and the commands run on it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def real(self, path: PurePosixPath) -> Path:
        return self.root / path.relative_to("/")

    def seen(self, paths: Iterable[PurePosixPath]) -> dict[PurePosixPath, Seen]:
        out = {}
        for path in paths:
            real = self.real(path)
            if real.is_symlink():
                out[path] = Seen("link", target=os.readlink(real))
            elif real.is_dir():
                out[path] = Seen("dir", mode=real.stat().st_mode & 0o7777)
            elif real.exists():
                out[path] = Seen("file", content=real.read_bytes(),
                                 mode=real.stat().st_mode & 0o7777)
        return out

    def apply(self, action: Action) -> None:
        want, real = action.want, self.real(action.want.path)
        if action.verb == "remove":
            if real.is_dir() and not real.is_symlink():
                shutil.rmtree(real)
            else:
                real.unlink(missing_ok=True)
            return
        real.parent.mkdir(parents=True, exist_ok=True)
        if action.verb == "mkdir":
            real.mkdir(mode=want.mode, exist_ok=True)
            real.chmod(want.mode)
        elif action.verb == "chmod":
            real.chmod(want.mode)
        elif action.verb == "link":  # replace atomically: a reader sees the old or the new
            tmp = real.with_name(f".{real.name}.new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(want.target)
            os.replace(tmp, real)
        else:  # write, atomically too
            tmp = real.with_name(f".{real.name}.new")
            tmp.write_bytes(want.content)
            tmp.chmod(want.mode)
            os.replace(tmp, real)


def run(cmd: Sequence[str | Path], env: Mapping[str, str] | None = None) -> None:
    done = subprocess.run([str(c) for c in cmd], check=False, env=env)
    if done.returncode != 0:
        raise InstallError(f"{' '.join(str(c) for c in cmd)} failed (exit {done.returncode})")


def copy_source(source: Path, into: Path) -> Path:
    """A clean copy of the project to build from (the checkout may be read-only)."""
    skip = shutil.ignore_patterns(".venv", ".git", ".run", "build", "dist", "*.egg-info",
                                  "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache",
                                  ".hypothesis", "tests", "bench")
    target = into / "src"
    shutil.copytree(source, target, ignore=skip, symlinks=True)
    return target


def build_wheels(source: Path, dest: Path, python: Path, with_deps: bool) -> None:
    """Landlord's wheel (and with ``with_deps`` every runtime dependency's) into ``dest``."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    with tempfile.TemporaryDirectory(prefix="landlord-build-") as tmp:
        src = copy_source(source, Path(tmp))
        run([python, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
             *(() if with_deps else ("--no-deps",)), "--wheel-dir", dest, src], env=env)


def wheel_members(path: Path) -> list[tuple[str, int]]:
    with zipfile.ZipFile(path) as archive:
        return [(i.filename, i.CRC) for i in archive.infolist()]


def landlord_wheel(wheels: Iterable[Path]) -> Path:
    found = sorted(w for w in wheels if w.name.startswith("landlord-"))
    if len(found) != 1:
        raise InstallError(f"expected one landlord-*.whl, found {[w.name for w in found]}")
    return found[0]


def make_wheelhouse(source: Path, dest: Path) -> Path:
    """Every wheel Landlord needs, into ``dest`` (older Landlord wheels there removed)."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("landlord-*.whl"):
        old.unlink()
    build_wheels(source, dest, Path(sys.executable), with_deps=True)
    wheel = landlord_wheel(dest.glob("*.whl"))
    print(f"wheelhouse {dest}: {len(list(dest.glob('*.whl')))} wheels, {wheel.name}")
    print(f"install on a host without the package index: "
          f"make install WHEELHOUSE={dest} (or scripts/host_install.py install "
          f"--wheelhouse {dest})")
    return wheel


@dataclass(frozen=True)
class Release:
    name: str
    wheels: tuple[Path, ...]
    offline: bool


def make_venv(host: Host, release: Release) -> bool:
    """The release's virtualenv under releases/<name>; False when it was there already."""
    path = host.real(PREFIX / "releases" / release.name)
    done = path / ".complete"
    if done.exists():
        return False
    if path.exists():
        shutil.rmtree(path)  # a half-made one from an interrupted run
    path.parent.mkdir(parents=True, exist_ok=True)
    run(["python3", "-m", "venv", path])
    pip: list[str | Path] = [path / "bin" / "python", "-m", "pip", "install", "--quiet",
           "--disable-pip-version-check", "--no-warn-script-location"]
    if release.offline:
        links = sorted({str(w.parent) for w in release.wheels})
        pip += ["--no-index", *(f"--find-links={d}" for d in links)]
    run([*pip, landlord_wheel(release.wheels)])
    done.write_text(release.name + "\n")
    return True


def prune_releases(host: Host, keep: Sequence[str]) -> list[str]:
    """Remove releases other than ``keep`` (current and the one before)."""
    releases = host.real(PREFIX / "releases")
    removed = []
    for path in sorted(releases.iterdir()) if releases.is_dir() else []:
        if path.name not in keep:
            shutil.rmtree(path)
            removed.append(path.name)
    return removed


def read_sources(source: Path) -> tuple[dict[str, bytes], dict[str, bytes], dict[str, bytes]]:
    """(sample configs, unit files, docs) shipped with the project."""
    systemd = source / "systemd"
    samples = {n: (systemd / n).read_bytes() for n in ("agent.toml", "coordinator.toml")
               if (systemd / n).is_file()}
    units = {f"{d}.service": (systemd / f"{d}.service").read_bytes() for d in DAEMONS.values()}
    docs = {n: (source / n).read_bytes() for n in DOCS if (source / n).is_file()}
    return samples, units, docs


def systemd_running(host: Host) -> bool:
    return host.root == Path("/") and Path("/run/systemd/system").is_dir()


def active_daemons(host: Host, role: str) -> list[str]:
    if not systemd_running(host):
        return []
    names = [DAEMONS[d] for d in DAEMONS if role in (d, "both")]
    return [n for n in names if subprocess.run(["systemctl", "is-active", "--quiet", n],
                                               check=False).returncode == 0]


def gather_release(args: argparse.Namespace, tmp: Path) -> Release:
    """The wheels to install: the wheelhouse's (offline) when given or present under
    dist/wheelhouse, else Landlord's wheel built here with dependencies from the index."""
    wheelhouse: Path | None = args.wheelhouse
    default = SOURCE / "dist" / "wheelhouse"
    if wheelhouse is None and any(default.glob("landlord-*.whl")):
        wheelhouse = default
    if wheelhouse is not None:
        wheels = tuple(sorted(wheelhouse.glob("*.whl")))
        if not wheels:
            raise InstallError(f"no wheels in {wheelhouse} (make wheelhouse builds them)")
        print(f"installing from the wheelhouse {wheelhouse} (no package index)")
        offline = True
    else:
        print("building Landlord's wheel; dependencies come from the package index")
        run(["python3", "-m", "venv", tmp / "build-venv"])
        build_wheels(SOURCE, tmp / "wheels", tmp / "build-venv" / "bin" / "python",
                     with_deps=False)
        wheels, offline = tuple(sorted((tmp / "wheels").glob("*.whl"))), False
    wheel = landlord_wheel(wheels)
    version = wheel.name.split("-")[1]
    name = release_name(version, {w.name: wheel_members(w) for w in wheels})
    return Release(name, wheels, offline)


def install(args: argparse.Namespace) -> int:
    host = Host(args.root)
    manifest_path = PREFIX / "manifest.json"
    manifest = host.real(manifest_path)
    before = read_manifest(manifest.read_text()) if manifest.is_file() else []
    current = host.real(PREFIX / "current")
    previous = os.readlink(current).rsplit("/", 1)[-1] if current.is_symlink() else ""
    with tempfile.TemporaryDirectory(prefix="landlord-install-") as tmp:
        release = gather_release(args, Path(tmp))
        created = make_venv(host, release)
    if created:
        print(f"made release {release.name} under {PREFIX}/releases")
    samples, units, docs = read_sources(SOURCE)
    wants = [Want(PREFIX, "dir", mode=0o755),
             Want(PREFIX / "current", "link", target=f"releases/{release.name}"),
             *wanted_paths(args.role, samples, units, docs)]
    wants.append(Want(manifest_path, "file", content=manifest_of(wants)))
    paths = {w.path for w in wants} | {w.path for w in before}
    actions = plan(wants, host.seen(paths), before)
    for action in actions:
        print(action.describe())
        host.apply(action)
    pruned = prune_releases(host, [release.name, previous])
    for name in pruned:
        print(f"removed old release {name}")
    units_changed = any(a.want.path.parent == UNIT_DIR for a in actions)
    if units_changed and systemd_running(host):
        run(["systemctl", "daemon-reload"])
        print("systemctl daemon-reload")
    if not (created or actions or pruned):
        print(f"landlord {release.name} ({args.role}) is installed already; nothing changed")
    if not samples:
        print("note: no sample configs in this build (systemd/*.toml); write "
              f"{CONFIG_DIR}/agent.toml / coordinator.toml before starting the daemons")
    check_configs(host, args.role)
    return after_install(host, args, release.name, previous)


def check_configs(host: Host, role: str) -> None:
    """Say whether each daemon of ``role`` accepts its config (a fresh sample does not: it
    names no host or etcd of this fleet yet); never fails the install."""
    for daemon in (d for d in DAEMONS if role in (d, "both")):
        config = CONFIG_DIR / f"{daemon}.toml"
        command = host.real(BIN_DIR / DAEMONS[daemon])
        if not (host.real(config).is_file() and command.exists()):
            continue
        done = subprocess.run([str(command), "--config", str(host.real(config)),
                               "--check-config"], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            print(f"{config}: accepted by {DAEMONS[daemon]} --check-config")
        else:
            problems = done.stderr.strip().splitlines()
            print(f"{config}: to edit before starting {DAEMONS[daemon]} "
                  f"({len(problems)} problem(s)):")
            for line in problems:
                print(f"  {line}")


def after_install(host: Host, args: argparse.Namespace, name: str, previous: str) -> int:
    """Restart the running daemons on a new release when asked (agent first: its containers
    keep running), else say what to restart."""
    running = active_daemons(host, args.role)
    if not previous or previous == name or not running:
        if not running and systemd_running(host):
            names = " ".join(DAEMONS[d] for d in DAEMONS if args.role in (d, "both"))
            print(f"next: edit {CONFIG_DIR}/*.toml, then systemctl enable --now {names}")
        return 0
    order = [n for n in ("landlord-agent", "landlord-coordinator") if n in running]
    if args.restart:
        for unit in order:
            run(["systemctl", "restart", unit])
            print(f"restarted {unit}")
        return 0
    print(f"upgraded {previous} -> {name}; the running daemons still run {previous}: "
          + "; then ".join(f"systemctl restart {u}" for u in order)
          + " (an agent restart keeps every container running; restart coordinators one "
            "host at a time)")
    return 0


def uninstall(args: argparse.Namespace) -> int:
    host = Host(args.root)
    manifest = host.real(PREFIX / "manifest.json")
    if not manifest.is_file():
        print(f"landlord is not installed here (no {PREFIX}/manifest.json); nothing changed")
        return 0
    installed = read_manifest(manifest.read_text())
    if systemd_running(host):
        for unit in (f"{d}.service" for d in DAEMONS.values()):
            if any(w.path == UNIT_DIR / unit for w in installed):
                # the agent's containers and HAProxy keep running (KillMode=process)
                subprocess.run(["systemctl", "disable", "--now", "--quiet", unit], check=False)
                print(f"stopped and disabled {unit}")
    if args.purge:
        installed.append(Want(PurePosixPath("/var/lib/landlord-agent"), "dir", keep=True))
    actions = removal_plan(installed, host.seen({w.path for w in installed}), args.purge)
    for action in actions:
        print(action.describe())
        host.apply(action)
    if systemd_running(host):
        run(["systemctl", "daemon-reload"])
    if not args.purge:
        print(f"kept {CONFIG_DIR} and the agent's data directory (--purge removes them)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="host_install.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="install or upgrade on this host")
    inst.add_argument("--role", choices=ROLES, default="both")
    inst.add_argument("--wheelhouse", type=Path, help="install offline from these wheels "
                      "(default: dist/wheelhouse when it holds a Landlord wheel)")
    inst.add_argument("--restart", action="store_true",
                      help="restart the running daemons on the new release (agent first)")
    inst.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    rem = sub.add_parser("uninstall", help="remove what install added")
    rem.add_argument("--purge", action="store_true",
                     help=f"also remove {CONFIG_DIR} and /var/lib/landlord-agent")
    rem.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    whl = sub.add_parser("wheelhouse", help="build every wheel Landlord needs")
    whl.add_argument("--dest", type=Path, default=SOURCE / "dist" / "wheelhouse")
    args = parser.parse_args(argv)
    try:
        if args.command == "wheelhouse":
            make_wheelhouse(SOURCE, args.dest.resolve())
            return 0
        if args.root == Path("/") and os.geteuid() != 0:
            raise InstallError(f"{args.command} needs root (sudo make {args.command})")
        return install(args) if args.command == "install" else uninstall(args)
    except (InstallError, OSError) as exc:
        print(f"host_install: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
