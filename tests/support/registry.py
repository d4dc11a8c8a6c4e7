"""A throwaway Distribution registry (Debian's ``docker-registry``) for tests.

``start_registry()`` runs ``docker-registry serve`` on a free 127.0.0.1 port with its config
and storage under ``root`` (a temporary directory of its own when not given, removed by
``close()``), waits until ``/v2/`` answers, and returns a ``LocalRegistry``
(``throwaway_registry`` is the same as a context manager). With ``users={"name":
"password"}`` the registry asks for htpasswd (Basic) credentials; ``tls=True`` serves HTTPS
with a self-signed certificate; ``storage=`` shares another registry's storage (push to a
plain one, read through one with auth); ``auth=`` is an ``auth:`` config section, e.g. a
``TokenService``'s: ``token_service(root, users)`` is a Bearer token service (push to a
plain registry sharing the storage, since Docker would need the token service too).

``registry.push(image, repository, tag)`` pushes a local image with the docker CLI and
returns the digest the registry stores (loopback registries need no TLS);
``forget_locally(reference)`` removes an image's references into the registry from local
Docker, so the next run of it must pull; ``stop()`` stops serving (storage kept, ``serve()``
starts it again); ``close()`` stops and untags every local reference into the registry.
``unique_image`` builds an image with a random layer of its own, so a pull really
downloads something.

The shared registry of ``scripts/services.sh`` is ``local_cluster.images.DEMO_REGISTRY``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import secrets
import ssl
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bcrypt
import docker
from local_cluster.processes import free_port

from tests.support import eventually

__all__ = ["LocalRegistry", "TokenService", "bcrypt_hash", "push", "self_signed",
           "start_registry", "throwaway_registry", "token_service", "unique_image"]


@dataclass
class LocalRegistry:
    address: str
    """``127.0.0.1:PORT``."""
    root: Path
    """Its config, log, htpasswd and (unless shared) storage."""
    users: Mapping[str, str]
    tls: bool = False
    process: subprocess.Popen[bytes] | None = None
    owned_root: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)
    """The temporary ``root`` ``close()`` removes (when the caller gave none)."""

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    def auth_file(self, path: Path) -> Path:
        """A Docker config.json with this registry's first user, for ``registry_auth_file``."""
        user, password = next(iter(self.users.items()))
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        path.write_text(json.dumps({"auths": {self.address: {"auth": token}}}))
        return path

    def serve(self) -> None:
        """Start serving ``root/config.yml`` (again, same port and storage, after ``stop``)."""
        log = (self.root / "registry.log").open("ab")
        process = subprocess.Popen(["docker-registry", "serve", str(self.root / "config.yml")],
                                   stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.process = process
        eventually(lambda: process.poll() is None and _answers(self.address, self.tls),
                   timeout=20,
                   message=f"docker-registry on {self.address} (log: {self.root}/registry.log)")

    def stop(self) -> None:
        """Stop serving, storage kept: pulls from it now fail."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def push(self, image: str, repository: str, tag: str) -> str:
        """Push local ``image`` as ``repository:tag`` here (with this registry's first user
        when it has users); the digest the registry stores."""
        config = None
        if self.users:
            config = self.root / "docker-config"
            config.mkdir(exist_ok=True)
            self.auth_file(config / "config.json")
        return push(image, self.address, repository, tag, docker_config=config)

    def forget_locally(self, reference: str) -> None:
        """Remove the image ``reference`` names from local Docker as far as this registry
        goes: every tag and digest reference of it into this registry (other tags stay)."""
        with _docker() as client:
            try:
                image = client.images.get(reference)
            except docker.errors.ImageNotFound:
                return
            self._untag(client, image)

    def close(self) -> None:
        """Stop, untag every local reference into this registry (pushed here or pulled from
        here; never by image id: the demo images share theirs), remove an own ``root``."""
        try:
            self.stop()
            with _docker() as client:
                for image in client.images.list():
                    # an image a container still uses keeps its last tag: a leftover, not
                    # a reason to fail the teardown
                    self._untag(client, image, tolerate=docker.errors.APIError)
        finally:
            if self.owned_root is not None:
                self.owned_root.cleanup()

    def _untag(self, client: docker.DockerClient, image: docker.models.images.Image,
               tolerate: type[Exception] = docker.errors.NotFound) -> None:
        for ref in [*image.tags, *(image.attrs.get("RepoDigests") or ())]:
            if ref.startswith(f"{self.address}/"):
                with contextlib.suppress(tolerate):
                    client.images.remove(ref, noprune=False)


@contextlib.contextmanager
def _docker() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    try:
        yield client
    finally:
        client.close()


def bcrypt_hash(password: str) -> str:
    """A hash for htpasswd, which Distribution reads only in bcrypt (cost 4: tests)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def _answers(address: str, tls: bool = False) -> bool:
    request = urllib.request.Request(f"{'https' if tls else 'http'}://{address}/v2/")
    context = ssl._create_unverified_context() if tls else None  # only: is it up?
    try:
        with urllib.request.urlopen(request, timeout=1, context=context) as response:
            return bool(response.headers.get("Docker-Distribution-Api-Version") == "registry/2.0")
    except urllib.error.HTTPError as exc:  # 401 with auth: up all the same
        exc.close()
        return bool(exc.headers.get("Docker-Distribution-Api-Version") == "registry/2.0")


def self_signed(root: Path, name: str, ip: str = "127.0.0.1") -> tuple[Path, Path]:
    """A key and a self-signed certificate for ``ip`` (it is its own CA): (key, cert)."""
    key, cert = root / f"{name}.key", root / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={ip}",
                    "-addext", f"subjectAltName=IP:{ip}"],
                   check=True, capture_output=True, timeout=60)
    return key, cert


def start_registry(root: Path | None = None, *, users: Mapping[str, str] | None = None,
                   storage: Path | None = None, auth: str = "",
                   tls: bool = False) -> LocalRegistry:
    """A registry serving on a free loopback port; ``close()`` it. ``storage`` shares
    another registry's storage; ``auth`` is an ``auth:`` config section (``TokenService``);
    ``tls`` serves HTTPS with a self-signed certificate, ``root/tls.pem``."""
    owned = None
    if root is None:
        owned = tempfile.TemporaryDirectory(prefix="landlord-registry-")
        root = Path(owned.name)
    root.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    tls_config = ""
    if tls:
        key, cert = self_signed(root, "tls")
        tls_config = f"  tls:\n    certificate: {cert}\n    key: {key}\n"
    if users:
        htpasswd = root / "htpasswd"
        htpasswd.write_text("".join(f"{u}:{bcrypt_hash(p)}\n" for u, p in users.items()))
        auth = f"auth:\n  htpasswd:\n    realm: landlord-test\n    path: {htpasswd}\n"
    (root / "config.yml").write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage or root / 'storage'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}\n" + tls_config + auth
    )
    registry = LocalRegistry(address, root, dict(users or {}), tls, owned_root=owned)
    try:
        registry.serve()
    except BaseException:
        registry.close()
        raise
    return registry


@contextlib.contextmanager
def throwaway_registry(root: Path | None = None, *, users: Mapping[str, str] | None = None,
                       storage: Path | None = None, auth: str = "",
                       tls: bool = False) -> Iterator[LocalRegistry]:
    registry = start_registry(root, users=users, storage=storage, auth=auth, tls=tls)
    try:
        yield registry
    finally:
        registry.close()


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
    with _docker() as client:
        client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True,
                            pull=False)
    return tag


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


@dataclass
class TokenService:
    """A Bearer token service for a registry's ``auth: token`` (Distribution's token auth).

    Checks Basic credentials (``users``) and answers a JWT, signed RS256 by a self-signed
    key whose certificate rides in the token's ``x5c`` and is the registry's
    ``rootcertbundle``; the token grants exactly the scope asked for. ``requests`` records
    (user, scope) of every token handed out.
    """

    url: str
    service: str
    issuer: str
    cert: Path
    server: ThreadingHTTPServer
    requests: list[tuple[str, str]] = field(default_factory=list)

    def registry_config(self) -> str:
        return (f"auth:\n  token:\n    realm: {self.url}\n    service: {self.service}\n"
                f"    issuer: {self.issuer}\n    rootcertbundle: {self.cert}\n")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@contextlib.contextmanager
def token_service(root: Path, users: Mapping[str, str]) -> Iterator[TokenService]:
    root.mkdir(parents=True, exist_ok=True)
    key, cert = self_signed(root, "token")
    der = subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "DER"],
                         check=True, capture_output=True, timeout=30).stdout
    header = _b64url(json.dumps({"typ": "JWT", "alg": "RS256",
                                 "x5c": [base64.b64encode(der).decode()]}).encode())
    service, issuer = "landlord-test-registry", "landlord-test-issuer"
    handed: list[tuple[str, str]] = []

    def sign(user: str, scope: str) -> str:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        now = int(time.time())
        claims = {"iss": issuer, "sub": user, "aud": service, "iat": now, "nbf": now - 10,
                  "exp": now + 300, "jti": secrets.token_hex(8),
                  "access": [{"type": kind, "name": name, "actions": actions.split(",")}]
                  if scope else []}
        signing_input = f"{header}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)],
                                   input=signing_input.encode(), check=True,
                                   capture_output=True, timeout=30).stdout
        return f"{signing_input}.{_b64url(signature)}"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            scope = query.get("scope", [""])[0]
            given = self.headers.get("Authorization", "")
            user, _, password = (base64.b64decode(given[6:]).decode().partition(":")
                                 if given.startswith("Basic ") else ("", "", ""))
            if users.get(user) != password or not user:
                body = b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}'
                self.send_response(401)
            else:
                handed.append((user, scope))
                body = json.dumps({"token": sign(user, scope)}).encode()
                self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield TokenService(f"http://127.0.0.1:{server.server_address[1]}/token", service,
                           issuer, cert, server, handed)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
