"""A throwaway image registry for tests: Debian's ``docker-registry`` (Distribution 2.8) on a
free 127.0.0.1 port, storing in a temporary directory, optionally behind htpasswd auth.

Docker allows plain HTTP to registries on 127.0.0.0/8, so ``docker push 127.0.0.1:PORT/...``
works without TLS. ``push`` tags a local image into the registry, pushes it and returns the
pinned reference ``127.0.0.1:PORT/NAME@sha256:...`` (the digest docker push printed).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from types import TracebackType

import docker

__all__ = ["RegistryServer", "bcrypt_hash", "unique_image"]

BINARY = "/usr/bin/docker-registry"


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for htpasswd (libxcrypt through the standard crypt module)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RegistryServer:
    def __init__(self, users: dict[str, str] | None = None) -> None:
        self.users = users or {}
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="landlord-registry-")
        self.root = Path(self._dir.name)
        self.process: subprocess.Popen[bytes] | None = None
        self._client = docker.from_env()
        self._pushed: list[str] = []

    def __enter__(self) -> RegistryServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _config(self) -> Path:
        lines = ["version: 0.1", "log:", "  level: warn", "storage:", "  filesystem:",
                 f"    rootdirectory: {self.root / 'data'}", "  delete:", "    enabled: true",
                 "http:", f"  addr: {self.address}"]
        if self.users:
            htpasswd = self.root / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{bcrypt_hash(p)}\n" for u, p in self.users.items()))
            lines += ["auth:", "  htpasswd:", "    realm: landlord-test",
                      f"    path: {htpasswd}"]
        config = self.root / "config.yml"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self) -> None:
        """Start serving (again, on the same port and storage after ``stop``)."""
        config = self.root / "config.yml"
        if not config.exists():
            config = self._config()
        log = (self.root / "registry.log").open("ab")
        self.process = subprocess.Popen([BINARY, "serve", str(config)], stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://{self.address}/v2/", timeout=1).close()
                return
            except urllib.error.HTTPError as exc:  # 401 with auth on: it answers
                exc.close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"registry did not start: "
                                       f"{(self.root / 'registry.log').read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop serving (storage kept): pulls from it now fail."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def push(self, image: str, name: str, tag: str = "1.0.0") -> str:
        """Push local ``image`` as NAME:TAG; returns ``127.0.0.1:PORT/NAME@sha256:...``."""
        target = f"{self.address}/{name}"
        self._client.images.get(image).tag(target, tag)
        self._pushed.append(f"{target}:{tag}")
        auth = None
        if self.users:
            user, password = next(iter(self.users.items()))
            auth = {"username": user, "password": password}
        digest = ""
        for line in self._client.api.push(target, tag, stream=True, decode=True,
                                          auth_config=auth):
            if "error" in line:
                raise RuntimeError(f"push of {target}:{tag} failed: {line['error']}")
            digest = (line.get("aux") or {}).get("Digest", digest)
        if not digest:
            raise RuntimeError(f"push of {target}:{tag} printed no digest")
        return f"{target}@{digest}"

    def forget_locally(self, reference: str) -> None:
        """Remove ``reference`` (and the tag it was pushed under) from local Docker."""
        for ref in [reference, *self._pushed]:
            with contextlib.suppress(docker.errors.NotFound):
                self._client.images.remove(ref, noprune=False)

    def close(self) -> None:
        """Stop, and untag every reference into this registry (never an image id: the
        demo images share theirs)."""
        self.stop()
        for image in self._client.images.list():
            refs = [*image.tags, *(image.attrs.get("RepoDigests") or ())]
            for ref in refs:
                if ref.startswith(f"{self.address}/"):
                    with contextlib.suppress(docker.errors.APIError):
                        self._client.images.remove(ref, noprune=False)
        self._client.close()
        self._dir.cleanup()


def unique_image(base: str, tag: str, size: int = 256 * 1024) -> str:
    """Build ``tag``: ``base`` plus one layer of ``size`` random bytes, so a pull of it
    really downloads that layer. Returns ``tag``; remove it with ``docker rmi``."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        for name, data in (("Dockerfile", f"FROM {base}\nCOPY blob /blob\n".encode()),
                           ("blob", os.urandom(size))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    context.seek(0)
    client = docker.from_env()
    try:
        client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True,
                            pull=False)
    finally:
        client.close()
    return tag
