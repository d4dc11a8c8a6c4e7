"""The coordinator's read-only web view, on its metrics endpoint (``metrics_listen``).

- ``/ui/``: one static page (HTML, CSS and a small script shipped in this package; nothing
  loaded from elsewhere) that polls the JSON below and draws, per entry host, each
  version's measured share of requests over time against its target weight;
- ``/api/v1/rollouts``: the latest rollout of every unit, as ``ListRolloutsResponse``;
- ``/api/v1/rollouts/APARTMENT/UNIT``: that unit's current (else latest) rollout, as
  ``RolloutInfo``.

The JSON is the Admin API's rollout status (the read model of coordinator/rollouts/status.py
through ``rollout_info``) in the CLI's JSON form (``to_json_dict``): what
``landlord rollout status -o json`` prints, field for field. The script writes every value
into the page as text (``textContent``, attributes), never as markup. GET and HEAD only,
like the rest of the endpoint; off loopback the endpoint needs TLS.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Protocol
from urllib.parse import unquote

from google.protobuf.message import Message

from common.errors import LandlordError, NotFound
from common.gen.landlord.v1 import admin_pb2
from common.metrics_http import Answer
from coordinator.api.rollout_proto import rollout_info
from coordinator.cli.output import to_json_dict
from coordinator.rollouts.record import RolloutRecord
from coordinator.rollouts.status import RolloutStatus

__all__ = ["API_PATH", "UI_PATH", "RolloutReads", "WebView"]

UI_PATH = "/ui/"
API_PATH = "/api/v1/rollouts"
_FILES = {"": ("index.html", "text/html; charset=utf-8"),
          "index.html": ("index.html", "text/html; charset=utf-8"),
          "view.js": ("view.js", "text/javascript; charset=utf-8"),
          "view.css": ("view.css", "text/css; charset=utf-8")}
_JSON = "application/json"


class RolloutReads(Protocol):
    """The rollout service's reads the view needs."""

    def get(self, apartment: str, unit: str, rollout_id: str = "") -> RolloutRecord: ...

    def status(self, record: RolloutRecord) -> RolloutStatus: ...


def _json(status: str, body: object) -> Answer:
    return status, _JSON, json.dumps(body, sort_keys=True).encode() + b"\n"


def _message(message: Message) -> Answer:
    return _json("200 OK", to_json_dict(message))


class WebView:
    """``pages`` for ``serve_metrics``: the answer for a path, None when it is not ours."""

    def __init__(self, rollouts: RolloutReads,
                 units: Callable[[], Iterable[tuple[str, str]]]) -> None:
        self.rollouts = rollouts
        self.units = units
        """(apartment, unit) of every unit with a rollout on record."""

    async def __call__(self, target: str) -> Answer | None:
        if target == UI_PATH.rstrip("/") or target.startswith(UI_PATH):
            return self._file(target[len(UI_PATH):])
        try:
            if target == API_PATH:
                return self._list()
            if target.startswith(API_PATH + "/"):
                return self._one(target[len(API_PATH) + 1:])
        except NotFound as exc:
            return _json("404 Not Found", {"error": str(exc)})
        except LandlordError as exc:
            return _json("400 Bad Request", {"error": str(exc)})
        return None

    def _file(self, name: str) -> Answer | None:
        found = _FILES.get(name)
        if found is None:
            return None
        file, content_type = found
        body = resources.files(__package__).joinpath("static", file).read_bytes()
        return "200 OK", content_type, body

    def _status(self, apartment: str, unit: str) -> RolloutStatus:
        return self.rollouts.status(self.rollouts.get(apartment, unit))

    def _list(self) -> Answer:
        infos = []
        for apartment, unit in sorted(set(self.units())):
            try:
                infos.append(rollout_info(self._status(apartment, unit)))
            except NotFound:  # its records went away since the listing
                continue
        return _message(admin_pb2.ListRolloutsResponse(rollouts=infos))

    def _one(self, rest: str) -> Answer:
        parts = rest.split("/")
        if len(parts) != 2 or not all(parts):
            return _json("404 Not Found", {"error": f"try {API_PATH}/APARTMENT/UNIT"})
        try:
            apartment, unit = (unquote(p, errors="strict") for p in parts)
        except UnicodeDecodeError:
            return _json("400 Bad Request", {"error": "the path is not UTF-8"})
        return _message(rollout_info(self._status(apartment, unit)))
