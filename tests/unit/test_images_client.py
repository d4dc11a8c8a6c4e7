"""coordinator.images_client against a scripted registry, for what the real one never does:
leave out Docker-Content-Digest, serve a schema-1 manifest, fail with a 5xx.

(The real docker-registry paths: tests/integration/coordinator/test_coord_images.py.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from common.errors import FailedPrecondition, Unavailable
from common.image_refs import parse_image_ref
from coordinator.images import MANIFEST_ACCEPT, digest_of
from coordinator.images_client import RegistryClient

MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
ANSWERS: dict[str, tuple[int, str, bytes]] = {
    "/v2/app/manifests/no-header": (200, "application/vnd.oci.image.manifest.v1+json", MANIFEST),
    "/v2/app/manifests/schema1": (200, "application/vnd.docker.distribution.manifest.v1+prettyjws",
                                  b"{}"),
    "/v2/app/manifests/broken": (503, "application/json",
                                 b'{"errors":[{"code":"UNAVAILABLE","message":"storage down"}]}'),
}


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body_too: bool) -> None:
            seen.append((self.command, self.headers.get("Accept", "")))
            status, media, body = ANSWERS.get(self.path, (404, "application/json", b"{}"))
            self.send_response(status)
            self.send_header("Content-Type", media)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body_too:
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self._answer(False)

        def do_GET(self) -> None:
            self._answer(True)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def test_without_the_digest_header_the_body_is_hashed(
    scripted: tuple[str, list[tuple[str, str]]],
) -> None:
    address, seen = scripted
    seen.clear()
    digest = await RegistryClient().resolve(parse_image_ref(f"{address}/app:no-header"))
    assert digest == digest_of(MANIFEST)
    assert [method for method, _ in seen] == ["HEAD", "GET"]
    assert all(accept == MANIFEST_ACCEPT for _, accept in seen)


async def test_a_schema_1_manifest_is_refused(
    scripted: tuple[str, list[tuple[str, str]]],
) -> None:
    address, _ = scripted
    with pytest.raises(FailedPrecondition, match="prettyjws, not one of the accepted"):
        await RegistryClient().resolve(parse_image_ref(f"{address}/app:schema1"))


async def test_a_5xx_is_unavailable_with_the_registry_s_words(
    scripted: tuple[str, list[tuple[str, str]]],
) -> None:
    address, _ = scripted
    with pytest.raises(Unavailable, match="UNAVAILABLE: storage down"):
        await RegistryClient().resolve(parse_image_ref(f"{address}/app:broken"))
