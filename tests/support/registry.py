"""A throwaway Distribution registry (Debian's ``docker-registry``) for tests.

``start_registry(tmp_path)`` runs ``docker-registry serve`` on a free 127.0.0.1 port with its
config and storage under ``tmp_path``, waits until ``/v2/`` answers, and returns a handle
whose ``stop()`` ends it (use ``throwaway_registry`` as a context manager). With
``users={"name": "password"}`` the registry asks for htpasswd (Basic) credentials.
``registry.push(image, repository, tag)`` pushes a local image with the docker CLI and
returns the digest the registry stores (loopback registries need no TLS); ``stop()``
removes the registry tags it added to local images.

The shared registry of ``scripts/services.sh`` is ``local_cluster.images.DEMO_REGISTRY``.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import eventually

__all__ = ["LocalRegistry", "push", "start_registry", "throwaway_registry"]



@dataclass
class LocalRegistry:
    address: str
    """``127.0.0.1:PORT``."""
    root: Path
    process: subprocess.Popen[bytes]
    users: Mapping[str, str]
    pushed: list[str] = field(default_factory=list)
    """Registry tags and digest references ``push`` added to local images (removed again
    by ``stop``)."""

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def auth_file(self, path: Path) -> Path:
        """A Docker config.json with this registry's first user, for ``registry_auth_file``."""
        import base64
        import json

        user, password = next(iter(self.users.items()))
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        path.write_text(json.dumps({"auths": {self.address: {"auth": token}}}))
        return path

    def push(self, image: str, repository: str, tag: str) -> str:
        """Push local ``image`` as ``repository:tag`` here (with this registry's first user
        when it has users); the digest the registry stores."""
        remote = f"{self.address}/{repository}:{tag}"
        config = None
        if self.users:
            config = self.root / "docker-config"
            config.mkdir(exist_ok=True)
            self.auth_file(config / "config.json")
        self.pushed.append(remote)
        digest = push(image, self.address, repository, tag, docker_config=config)
        self.pushed.append(f"{self.address}/{repository}@{digest}")
        return digest

    def stop(self) -> None:
        for remote in dict.fromkeys(self.pushed):  # untag: images keep their other tags
            subprocess.run(["docker", "rmi", remote], capture_output=True, timeout=30)
        self.pushed.clear()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bcrypt(password: str) -> str:
    """htpasswd wants bcrypt; libcrypt has it (``crypt`` is deprecated, not gone, in 3.11)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 4))


def _answers(address: str) -> bool:
    request = urllib.request.Request(f"http://{address}/v2/")
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return bool(response.headers.get("Docker-Distribution-Api-Version") == "registry/2.0")
    except urllib.error.HTTPError as exc:  # 401 with auth: up all the same
        return bool(exc.headers.get("Docker-Distribution-Api-Version") == "registry/2.0")


def start_registry(root: Path, *, users: Mapping[str, str] | None = None) -> LocalRegistry:
    root.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{_free_port()}"
    auth = ""
    if users:
        htpasswd = root / "htpasswd"
        htpasswd.write_text("".join(f"{u}:{_bcrypt(p)}\n" for u, p in users.items()))
        auth = f"auth:\n  htpasswd:\n    realm: landlord-test\n    path: {htpasswd}\n"
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}\n" + auth
    )
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log,
                               stderr=subprocess.STDOUT)
    log.close()
    registry = LocalRegistry(address, root, process, dict(users or {}))
    try:
        eventually(lambda: process.poll() is None and _answers(address), timeout=20,
                   message=f"docker-registry on {address} (log: {root / 'registry.log'})")
    except BaseException:
        registry.stop()
        raise
    return registry


@contextlib.contextmanager
def throwaway_registry(root: Path, *,
                       users: Mapping[str, str] | None = None) -> Iterator[LocalRegistry]:
    registry = start_registry(root, users=users)
    try:
        yield registry
    finally:
        registry.stop()


def push(image: str, registry: str, repository: str, tag: str,
         docker_config: Path | None = None) -> str:
    """Push local ``image`` as ``registry/repository:tag``; the digest the registry stores.

    The registry tag stays on the image (with its RepoDigest, Docker runs NAME@DIGEST
    without a pull). ``docker_config`` is a directory holding a config.json with
    credentials (``docker --config``) for registries that ask for them.
    """
    remote = f"{registry}/{repository}:{tag}"
    base = ["docker"] + (["--config", str(docker_config)] if docker_config else [])
    subprocess.run([*base, "tag", image, remote], check=True, capture_output=True, timeout=30)
    result = subprocess.run([*base, "push", remote], check=True, capture_output=True,
                            text=True, timeout=300)
    for line in result.stdout.splitlines():
        if "digest: sha256:" in line:
            return line.split("digest: ", 1)[1].split()[0]
    raise AssertionError(f"docker push {remote} printed no digest: {result.stdout!r}")
