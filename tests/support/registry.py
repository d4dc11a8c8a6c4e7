"""A throwaway Distribution registry (Debian's ``docker-registry``) for tests.

``token_service(root, users)`` is a Bearer token service for a registry with ``auth:
token`` (its ``registry_config()`` is the ``auth`` argument of ``start_registry``); push to a
plain registry sharing the storage (``storage=``), since Docker would need the token
service too.

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

import base64
import contextlib
import json
import secrets
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support import eventually

__all__ = ["LocalRegistry", "TokenService", "push", "self_signed", "start_registry",
           "throwaway_registry", "token_service"]



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


def _answers(address: str, tls: bool = False) -> bool:
    request = urllib.request.Request(f"{'https' if tls else 'http'}://{address}/v2/")
    context = ssl._create_unverified_context() if tls else None  # only: is it up?
    try:
        with urllib.request.urlopen(request, timeout=1, context=context) as response:
            return bool(response.headers.get("Docker-Distribution-Api-Version") == "registry/2.0")
    except urllib.error.HTTPError as exc:  # 401 with auth: up all the same
        return bool(exc.headers.get("Docker-Distribution-Api-Version") == "registry/2.0")


def self_signed(root: Path, name: str, ip: str = "127.0.0.1") -> tuple[Path, Path]:
    """A key and a self-signed certificate for ``ip`` (it is its own CA): (key, cert)."""
    key, cert = root / f"{name}.key", root / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={ip}",
                    "-addext", f"subjectAltName=IP:{ip}"],
                   check=True, capture_output=True, timeout=60)
    return key, cert


def start_registry(root: Path, *, users: Mapping[str, str] | None = None,
                   storage: Path | None = None, auth: str = "",
                   tls: bool = False) -> LocalRegistry:
    """``storage`` shares another registry's storage (push to a plain one, read through
    one with auth); ``auth`` is an ``auth:`` config section (``TokenService``); ``tls``
    serves HTTPS with a self-signed certificate, ``root/tls.pem``."""
    root.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{_free_port()}"
    tls_config = ""
    if tls:
        key, cert = self_signed(root, "tls")
        tls_config = f"  tls:\n    certificate: {cert}\n    key: {key}\n"
    if users:
        htpasswd = root / "htpasswd"
        htpasswd.write_text("".join(f"{u}:{_bcrypt(p)}\n" for u, p in users.items()))
        auth = f"auth:\n  htpasswd:\n    realm: landlord-test\n    path: {htpasswd}\n"
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage or root / 'storage'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}\n" + tls_config + auth
    )
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log,
                               stderr=subprocess.STDOUT)
    log.close()
    registry = LocalRegistry(address, root, process, dict(users or {}))
    try:
        eventually(lambda: process.poll() is None and _answers(address, tls), timeout=20,
                   message=f"docker-registry on {address} (log: {root / 'registry.log'})")
    except BaseException:
        registry.stop()
        raise
    return registry


@contextlib.contextmanager
def throwaway_registry(root: Path, *, users: Mapping[str, str] | None = None,
                       storage: Path | None = None, auth: str = "",
                       tls: bool = False) -> Iterator[LocalRegistry]:
    registry = start_registry(root, users=users, storage=storage, auth=auth, tls=tls)
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
