"""The coordinator's web view in a real browser (Debian's chromium, headless, through
chromium-driver and selenium) during canaries on a real cluster under load.

etcd, a coordinator, two real agents (Docker + HAProxy on 127.0.0.71-72) and a client per
host entry point. e2e/webview 1.0.0 runs; a canary to 1.1.0 moves 20 % -> 50 % -> 100 %,
and the page, opened on the coordinator's metrics address at /ui/, must show each host's
measured share of 1.1.0 near 20 % and then near 50 % (in the values it exposes and in the
line it draws), then the rollout promoted. A canary to 2.0.0 (20 % of its answers are
errors) fails its first step and is rolled back: the page says so.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_cluster.processes import free_port_on_all
from selenium import webdriver
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.e2e.real_cluster import host_id
from tests.e2e.real_load import Load, real_cluster, serving
from tests.e2e.test_cli_rollouts import publish
from tests.e2e.test_cli_units import LANDLORD, Cli
from tests.support import eventually

HOSTS = {host_id("wv1"): "127.0.0.71", host_id("wv2"): "127.0.0.72"}
UNIT = "e2e/webview"
STEPS = (20, 50, 100)
TOLERANCE = 10.0  # points of share; a fresh step's window holds a few seconds of requests
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# the chart's geometry (coordinator/web/static/view.js): y of a share v in the SVG
TOP, PLOT_HEIGHT = 8, 180 - 8 - 20

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), (
        "install chromium and chromium-driver (scripts/services.sh install)")
    profile = tempfile.mkdtemp(prefix="landlord-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # no background traffic: there is no outside network, and Chromium keeps trying
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def view() -> Iterator[tuple[Cli, str, int]]:
    """The cluster, the web view's URL, and 1.0.0 serving on both hosts under load."""
    assert LANDLORD.exists(), f"{LANDLORD} is missing: install the project (make venv)"
    settings = {"heartbeat_interval": 2.0, "liveness_grace": 10.0, "stop_grace": 2.0}
    with real_cluster(settings=settings, hosts=HOSTS) as real:
        cli = Cli(real.coordinator.address, real.cli_env())
        eventually(lambda: len([h for h in cli.json("hosts", "list")["hosts"]
                                if h["status"] == "alive"]) == len(HOSTS),
                   timeout=60, interval=0.5, message="both hosts alive")
        port = free_port_on_all(list(HOSTS.values()))
        publish(cli, UNIT, "1.0.0", port)
        publish(cli, UNIT, "1.1.0", port)
        publish(cli, UNIT, "2.0.0", port, "--env", "ERROR_RATE=0.2", "--breaking", "new API")
        first = cli.run("deploy", UNIT, "1.0.0", "--building", "demo", "--replicas", "2",
                        "--wait",
                        "--output", "json", timeout=120)
        assert first.returncode == 0, (first.stdout[-2000:], first.stderr)
        eventually(lambda: serving(port, HOSTS.values()), timeout=60, interval=0.5,
                   message="every entry point serves")
        load = Load(port, addresses=tuple(HOSTS.values())).start(max_seconds=240)
        try:
            yield cli, f"http://{real.coordinator.metrics_address}/ui/", port
        finally:
            load.close()


def _deploy(cli: Cli, version: str, steps: str) -> str:
    started = cli.json("deploy", UNIT, version, "--strategy", "canary", "--replicas", "2",
                       "--steps", steps,
                       "--monitor", "10s", "--step-delay", "1s", "--max-error-rate", "5%",
                       "--min-requests", "20")["rollout"]
    return str(started["rollout_id"])


def _drawn_share(points: str) -> float:
    """The share the line's last point is drawn at (the chart's y axis read back)."""
    y = float(points.split()[-1].split(",")[1])
    return 100.0 - (y - TOP) / PLOT_HEIGHT * 100.0


def _canary_on_every_host(driver: WebDriver, rollout_id: str, step: int,
                          target: float) -> dict[str, float]:
    """Per host, the canary's measured share the chart shows at ``step`` (asserts it is
    within TOLERANCE of ``target``, in the values and in the drawing)."""
    main = driver.find_element(By.ID, "rollout")
    assert main.get_attribute("data-rollout-id") == rollout_id
    assert driver.find_element(By.ID, "step").get_attribute("data-step") == str(step)
    shown = {}
    for host in HOSTS:
        line = driver.find_element(
            By.CSS_SELECTOR, f'figure[data-host="{host}"] polyline.measured[data-version="1.1.0"]')
        assert float(line.get_attribute("data-target") or "nan") == target, host
        last = float(line.get_attribute("data-last") or "nan")
        assert abs(last - target) <= TOLERANCE, (host, step, last)
        assert abs(_drawn_share(line.get_attribute("points") or "") - last) < 0.2
        # the hosts table shows the same figure next to the target
        row = driver.find_element(
            By.CSS_SELECTOR, f'#hosts tr[data-host="{host}"][data-version="1.1.0"]')
        assert float(row.get_attribute("data-measured") or "nan") == pytest.approx(last, abs=5)
        shown[host] = last
    return shown


def test_the_chart_follows_each_step_and_shows_a_rollback(
        browser: WebDriver, view: tuple[Cli, str, int]) -> None:
    cli, url, _ = view
    browser.get(url + "#" + UNIT.replace("/", "%2F"))
    eventually(lambda: browser.find_element(By.ID, "status").get_attribute("data-state") == "ok",
               timeout=15, interval=0.3, message="the page reads the coordinator")

    rollout = _deploy(cli, "1.1.0", ",".join(map(str, STEPS)))
    seen: list[dict[str, float]] = []
    for step, target in enumerate(STEPS[:2]):

        def shown(step: int = step, target: float = target) -> dict[str, float]:
            return _canary_on_every_host(browser, rollout, step, target)

        seen.append(eventually(shown, timeout=60, interval=0.5,
                               message=f"step {step + 1}: each host near {target}%"))
    print("measured share of 1.1.0 per host, step by step:", seen)
    for host in HOSTS:
        assert seen[1][host] - seen[0][host] >= 15, (host, seen)  # it moved with the step
        line = browser.find_element(
            By.CSS_SELECTOR, f'figure[data-host="{host}"] polyline.measured[data-version="1.1.0"]')
        steps = set((line.get_attribute("data-steps") or "").split())
        assert {"0", "1"} <= steps, (host, steps)  # one line across both steps
    assert browser.find_elements(By.CSS_SELECTOR, "svg line.step-mark")  # a mark per step
    eventually(lambda: browser.find_element(By.ID, "phase").get_attribute("data-phase")
               == "promoted", timeout=90, interval=0.5, message="1.1.0 promoted")

    failing = _deploy(cli, "2.0.0", "20,100")

    def rolled_back() -> str:
        main = browser.find_element(By.ID, "rollout")
        assert main.get_attribute("data-rollout-id") == failing
        phase = browser.find_element(By.ID, "phase")
        assert phase.get_attribute("data-phase") == "rolled_back", phase.text
        ended = browser.find_element(By.ID, "ended")
        assert ended.is_displayed() and "rolled back" in ended.text, ended.text
        return str(ended.text)

    banner = eventually(rolled_back, timeout=90, interval=0.5, message="2.0.0 rolled back")
    print("banner:", banner)
    assert browser.find_element(By.ID, "phase").text == "rolled back"
    verdicts = browser.find_elements(By.CSS_SELECTOR, '#steps tr[data-outcome="failed"]')
    assert len(verdicts) == 1 and "error rate" in verdicts[0].text, [v.text for v in verdicts]
    listed = browser.find_element(By.CSS_SELECTOR, f'nav a[data-unit="{UNIT}"]')
    assert listed.get_attribute("data-phase") == "rolled_back"
    # no script error, no refused request (the page's policy allows only its own files)
    console: list[dict[str, str]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
    errors = [e["message"] for e in console
              if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]
    assert errors == [], errors
