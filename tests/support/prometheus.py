"""Scrape a Prometheus endpoint the way Prometheus does and look samples up by labels."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Scrape", "get_json", "scrape"]


@dataclass(frozen=True)
class Scrape:
    """Every sample of one scrape: (name, labels) -> value."""

    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float]
    content_type: str

    def value(self, name: str, **labels: str) -> float | None:
        """The sample with exactly these labels, None when absent."""
        return self.samples.get((name, frozenset(labels.items())))

    def matching(self, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
        """Samples of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return {key: value for (found, key), value in self.samples.items()
                if found == name and wanted <= key}

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


def _get(url: str, context: ssl.SSLContext | None) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as answer:
            return answer.status, answer.headers.get("Content-Type", ""), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


async def scrape(url: str, context: ssl.SSLContext | None = None) -> Scrape:
    status, content_type, body = await asyncio.to_thread(_get, url, context)
    assert status == 200, f"{url} answered {status}: {body[:200]!r}"
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return Scrape(samples, content_type)


async def get_json(url: str) -> tuple[int, Any]:
    """(HTTP status, decoded JSON body) of a GET."""
    status, _, body = await asyncio.to_thread(_get, url, None)
    return status, json.loads(body)
