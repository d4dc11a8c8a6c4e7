"""A private, real Prometheus server for a test (Debian's ``prometheus`` package).

``PrometheusServer(targets)`` writes a scrape configuration (every second, static targets),
starts ``/usr/bin/prometheus`` on a free loopback port with its storage in a temporary
directory, waits until it is ready, answers PromQL through the HTTP API (``query``), and
stops and removes everything at ``close()`` (or at the end of a ``with`` block). Its work
directory holds ``prometheus.yml``, ``prometheus.log`` and ``data/``.

Prometheus starts scraping about 5 s after it is ready (its target discovery hands over
new targets at most every 5 s), so a test polls its queries rather than asking once.

(tests/support/prometheus.py is the other half of the story: scraping one endpoint the way
Prometheus would, without a server.)
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from local_cluster.processes import ClusterError, ManagedProcess, free_port, wait_for

__all__ = ["PROMETHEUS", "PrometheusServer", "Sample", "ScrapeTarget"]

PROMETHEUS = "/usr/bin/prometheus"


@dataclass(frozen=True)
class ScrapeTarget:
    """One ``host:port`` Prometheus scrapes (``http://<address>/metrics``) in job ``job``,
    with ``labels`` added to every series it yields."""

    job: str
    address: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector: its labels (``__name__`` included when kept) and
    value."""

    labels: Mapping[str, str]
    value: float


def scrape_config(targets: Iterable[ScrapeTarget], interval: float = 1.0) -> dict[str, Any]:
    """The configuration Prometheus reads (written as JSON, which is YAML): one job per
    distinct ``job``, one static group per target."""
    jobs: dict[str, list[dict[str, Any]]] = {}
    for target in targets:
        jobs.setdefault(target.job, []).append(
            {"targets": [target.address], "labels": dict(target.labels)})
    every = f"{int(interval * 1000)}ms"
    return {
        "global": {"scrape_interval": every, "scrape_timeout": every,
                   "evaluation_interval": every},
        "scrape_configs": [{"job_name": job, "static_configs": groups}
                           for job, groups in jobs.items()],
    }


class PrometheusServer(ManagedProcess):
    """``prometheus`` scraping ``targets`` every ``interval`` seconds, on
    ``127.0.0.1:<free port>``."""

    program = "prometheus"

    def __init__(self, targets: Iterable[ScrapeTarget], interval: float = 1.0) -> None:
        if shutil.which(PROMETHEUS) is None:
            raise ClusterError(f"{PROMETHEUS} is missing: `scripts/services.sh install` "
                               "installs Debian's prometheus package")
        self._tmp = tempfile.TemporaryDirectory(prefix="landlord-prometheus-")
        super().__init__("prometheus", Path(self._tmp.name))
        self.address = f"127.0.0.1:{free_port()}"
        self.config_path = self.workdir / "prometheus.yml"
        self.config_path.write_text(json.dumps(scrape_config(targets, interval), indent=2))

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        self.spawn([PROMETHEUS, f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address={self.address}", "--log.level=warn"])
        wait_for(self.ready, timeout, f"prometheus on {self.address} ready", interval=0.1)
        return self

    def ready(self) -> bool:
        if not self.running:
            raise ClusterError(f"prometheus exited:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except urllib.error.HTTPError as error:  # 503 while it loads its storage
            error.close()
            return False

    def _api(self, path: str, **params: str) -> Any:
        """``data`` of a successful API answer; ClusterError with Prometheus' own error."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                body = json.loads(answer.read())
        except urllib.error.HTTPError as error:  # a bad query answers 400 with a JSON body
            with error:
                body = json.loads(error.read() or b"{}")
        if body.get("status") != "success":
            raise ClusterError(f"prometheus refused {params}: {body.get('errorType')}: "
                               f"{body.get('error')}")
        return body["data"]

    def query(self, promql: str) -> list[Sample]:
        """The instant vector ``promql`` evaluates to now (a scalar answer is one sample
        without labels)."""
        data = self._api("query", query=promql)
        if data["resultType"] != "vector":
            return [Sample({}, float(data["result"][1]))]
        return [Sample(item["metric"], float(item["value"][1])) for item in data["result"]]

    def targets(self) -> list[dict[str, Any]]:
        """The active targets as ``/api/v1/targets`` reports them (health, last error)."""
        return list(self._api("targets", state="active")["activeTargets"])

    def close(self) -> None:
        try:
            self.stop(10)
        finally:
            self._tmp.cleanup()

    def __enter__(self) -> PrometheusServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
