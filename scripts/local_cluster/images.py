"""The demo app's images: built locally, pushed to the local registry, published from it.

Clusters launched here (``make demo``, the end-to-end tests, the benchmarks) publish
``127.0.0.1:5000/landlord/demo-app:VERSION`` (``LANDLORD_REGISTRY`` moves the registry),
the image ``scripts/build-demo-image.sh`` builds and pushes to the registry
``scripts/services.sh`` starts. Publishing resolves the tag to its digest, and agents run
``NAME@DIGEST``; the local image carries that RepoDigest, so Docker needs no pull.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DEMO_REGISTRY", "DEMO_REPOSITORY", "DEMO_VERSIONS", "demo_image",
           "ensure_demo_images", "local_demo_image"]

DEMO_REGISTRY = os.environ.get("LANDLORD_REGISTRY", "127.0.0.1:5000")
"""The local registry of scripts/services.sh (``host:port``)."""
DEMO_REPOSITORY = "landlord/demo-app"
DEMO_VERSIONS = ("1.0.0", "1.1.0", "1.2.0", "2.0.0")
"""Every version the demo, the tests and the benchmarks run (2.0.0 answers 20 % 500s)."""

_BUILD = Path(__file__).resolve().parents[1] / "build-demo-image.sh"


def demo_image(version: str) -> str:
    """The reference clusters publish: ``REGISTRY/landlord/demo-app:VERSION``."""
    return f"{DEMO_REGISTRY}/{DEMO_REPOSITORY}:{version}"


def local_demo_image(version: str) -> str:
    """The bare local name of the same image (hosts hold it; no registry involved)."""
    return f"{DEMO_REPOSITORY}:{version}"


def ensure_demo_images(versions: Sequence[str] = DEMO_VERSIONS) -> None:
    """Build what is missing or stale and push what the registry lacks (the script caches:
    a warm run inspects the images and asks the registry once per version)."""
    subprocess.run([str(_BUILD), *versions], check=True, timeout=1800)
