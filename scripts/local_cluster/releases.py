"""A previous release of Landlord, built from its git tag into a venv of its own, so a test
can run its daemons next to this checkout's (a rolling upgrade has both).

``previous_release("v0.1.0")`` exports the tag's tree with ``git archive`` into
``RELEASES/<tag>/src`` (outside any checkout), installs it with pip into
``RELEASES/<tag>/venv`` and returns that venv's ``bin`` directory. A lock file serialises
concurrent builders; a stamp file marks a finished build, which later calls reuse. The
repository is the checkout's (``git rev-parse --git-common-dir``, so worktrees share tags).
A clone without tags builds the commit the tag names (``RELEASE_COMMITS``).
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
from pathlib import Path

from local_cluster.processes import ROOT, ClusterError

__all__ = ["RELEASES", "RELEASE_COMMITS", "ReleaseMissing", "git_dir", "previous_release",
           "release_revision"]

RELEASES = Path("/var/lib/landlord-dev/releases")
STAMP = ".installed"
RELEASE_COMMITS = {"v0.1.0": "f1c7d3d0c088c8e449c0dbd7cd006f211822e6a8"}
"""The commit each release tag names, for a clone that carries no tags (git clone of a
branch, CI checkouts): the release is built from that commit when it is in the history."""


class ReleaseMissing(ClusterError):
    """The tag of the release is not in the repository (a shallow clone, say)."""


def git_dir(checkout: Path = ROOT) -> Path:
    """The repository's common git directory (shared by all its worktrees)."""
    found = subprocess.run(["git", "rev-parse", "--git-common-dir"], cwd=checkout,
                           capture_output=True, text=True, check=False)
    if found.returncode != 0:
        raise ClusterError(f"{checkout} is not a git checkout: {found.stderr.strip()}")
    path = Path(found.stdout.strip())
    return path if path.is_absolute() else (checkout / path).resolve()


def _has(repo: Path, revision: str) -> bool:
    return subprocess.run(["git", "--git-dir", str(repo), "rev-parse", "--verify", "--quiet",
                           f"{revision}^{{commit}}"], capture_output=True,
                          check=False).returncode == 0


def release_revision(repo: Path, tag: str) -> str:
    """What to build release ``tag`` from: its tag, else the commit it names (RELEASE_COMMITS)
    when the history holds it."""
    if _has(repo, f"refs/tags/{tag}"):
        return f"refs/tags/{tag}"
    known = RELEASE_COMMITS.get(tag)
    if known is not None and _has(repo, known):
        return known
    raise ReleaseMissing(
        f"git tag {tag} is not in {repo}: a test of compatibility with release {tag} "
        f"builds that release from its tag; fetch the tags (git fetch --tags, or clone "
        f"without --depth)")


def previous_release(tag: str, checkout: Path = ROOT, cache: Path = RELEASES,
                     python: str = sys.executable) -> Path:
    """The ``bin`` directory of a venv holding release ``tag`` (built on first use)."""
    repo = git_dir(checkout)
    home = cache / tag
    venv = home / "venv"
    if (home / STAMP).exists():
        return venv / "bin"
    revision = release_revision(repo, tag)
    home.mkdir(parents=True, exist_ok=True)
    with (cache / f"{tag}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (home / STAMP).exists():  # another process built it while this one waited
            return venv / "bin"
        _build(repo, tag, revision, home, python)
        (home / STAMP).write_text(f"{tag}\n")
    return venv / "bin"


def _build(repo: Path, tag: str, revision: str, home: Path, python: str) -> None:
    src, venv = home / "src", home / "venv"
    for old in (src, venv):
        shutil.rmtree(old, ignore_errors=True)
    src.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "--git-dir", str(repo), "archive", "--format=tar", revision],
        capture_output=True, check=False)
    if archive.returncode != 0:
        raise ClusterError(
            f"git archive {revision} ({tag}) failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    steps = [
        [python, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
         str(src)],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ClusterError(f"building release {tag} failed at {' '.join(step)}:\n"
                               f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
