"""The one settings loader (common/settings*): precedence, conversion by kind, every problem
at once with its source, TOML that loads back."""

from __future__ import annotations

import tempfile
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.settings import ConfigInvalid, Problem, check_host_ports, setting, validate
from common.settings_loader import SettingsSpec
from common.settings_text import effective_toml, quote


@dataclass(frozen=True)
class Demo:
    name: str = setting("x", "a name", group="basics")
    count: int = setting(3, "how many", ge=1, le=10)
    ratio: float = setting(0.5, "a fraction", gt=0, le=1)
    enabled: bool = setting(True, "on or off")
    peers: tuple[str, ...] = setting((), "host:port list", check=check_host_ports)
    home: Path = setting(Path("/var/x"), "a directory")  # noqa: RUF009
    memory: int = setting(512 * 1024**2, "a size", "bytes", group="amounts")
    rate: int = setting(10_000_000, "a rate", "bits")
    cpu: float = setting(0.5, "cores", "cpu")
    low: float = setting(0.2, "below high")
    high: float = setting(0.8, "above low")

    def __post_init__(self) -> None:
        rules = [] if self.low < self.high else [Problem("need low < high", ("low", "high"))]
        validate(self, "demo", rules)


SPEC = SettingsSpec(Demo, section="demo", program="landlord-demo", description="A demo.")
ENV = "LANDLORD_DEMO_"


def problems(raised: pytest.ExceptionInfo[ConfigInvalid]) -> list[str]:
    return [p.message for p in raised.value.problems]


def test_defaults_then_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "demo.toml"
    path.write_text('[demo]\nname = "file"\ncount = 4\npeers = ["a:1", "b:2"]\n'
                    'memory = "1Gi"\ncpu = "250m"\n[coordinator]\nignored = 1\n')
    config = SPEC.load(path, {ENV + "COUNT": "5", ENV + "ENABLED": "off", ENV + "RATIO": "1",
                              "UNRELATED": "x"}, {"count": "6", "name": None})
    assert (config.name, config.count, config.ratio, config.enabled) == ("file", 6, 1.0, False)
    assert config.peers == ("a:1", "b:2") and config.memory == 1024**3 and config.cpu == 0.25
    assert config.home == Path("/var/x") and config.rate == 10_000_000
    config = SPEC.load(None, {ENV + "PEERS": "a:1, b:2,", ENV + "RATE": "1gbit",
                              ENV + "HOME": "/h"}, {"enabled": False})
    assert config.peers == ("a:1", "b:2") and config.rate == 10**9
    assert config.home == Path("/h") and config.enabled is False


def test_top_level_keys_when_the_file_has_no_table(tmp_path: Path) -> None:
    path = tmp_path / "demo.toml"
    path.write_text('count = 2\n[agent]\nfoo = 1\n')
    assert SPEC.load(path).count == 2


def test_every_problem_is_one_line_naming_setting_and_source(tmp_path: Path) -> None:
    path = tmp_path / "demo.toml"
    path.write_text('count = "many"\ncuont = 1\nratio = 2\npeers = "a:1"\nlow = 0.9\n')
    with pytest.raises(ConfigInvalid) as raised:
        SPEC.load(path, {ENV + "MEMORY": "5m", ENV + "NOPE": "1", ENV + "ENABLED": "maybe"},
                  {"peers": "nowhere", "high": "0.5"})
    assert sorted(problems(raised)) == sorted([
        f"{path}:count: count: expected an integer, got a string ('many')",
        f"{path}:cuont: unknown setting (did you mean count?)",
        f"{path}:ratio: ratio must be <= 1, got 2",
        "LANDLORD_DEMO_ENABLED: enabled: expected true or false, got a string ('maybe')",
        "LANDLORD_DEMO_MEMORY: memory: '5m' is not valid; write bytes (268435456) or a size "
        "with K, M, G, T, Ki, Mi, Gi or Ti (256Mi, 1G) ('m' is ambiguous)",
        "LANDLORD_DEMO_NOPE: unknown setting",
        "--peers: peers: 'nowhere' is not host:port",
        f"{path}:low, --high: need low < high",
    ])
    assert "invalid demo configuration: " in str(raised.value)


def test_a_problem_about_a_value_that_did_not_convert_is_not_repeated() -> None:
    with pytest.raises(ConfigInvalid) as raised:
        SPEC.load(None, {}, {"low": "high", "high": "0.1"})
    assert problems(raised) == ["--low: low: 'high' is not a number"]


@pytest.mark.parametrize(("text", "needle"), [
    (None, "no such config file"),
    ("count = [", "not valid TOML"),
    ('demo = 3\n', "expected a table [demo]"),
    ('count = 2\n[demo]\nname = "n"\n', "put settings in it"),
])
def test_file_problems_are_one_clear_line(tmp_path: Path, text: str | None,
                                          needle: str) -> None:
    path = tmp_path / "demo.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigInvalid) as raised:
        SPEC.load(path)
    assert len(raised.value.problems) == 1 and needle in problems(raised)[0]
    assert str(path) in problems(raised)[0]


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ConfigInvalid, match="count must be >= 1, got 0"):
        Demo(count=0)
    with pytest.raises(ConfigInvalid, match=r"ratio must be > 0, got 0"):
        Demo(ratio=0.0)
    with pytest.raises(ConfigInvalid, match=r"is not a finite number"):
        SPEC.load(None, {ENV + "RATIO": "nan"})


def test_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert SPEC.command_line(["--print-sample-config"], {}) == 0
    sample = capsys.readouterr().out
    assert SPEC.load(_write(tmp_path / "s.toml", sample)) == Demo()
    assert "#memory = \"512Mi\"" in sample and "# --- amounts ---" in sample
    assert SPEC.command_line(["--check-config", "--count", "7", "--no-enabled"], {}) == 0
    effective = capsys.readouterr().out
    assert tomllib.loads(effective)["demo"]["count"] == 7
    assert SPEC.load(_write(tmp_path / "e.toml", effective)) == Demo(count=7, enabled=False)
    assert SPEC.command_line(["--count", "0", "--ratio", "x"], {}) == 2
    assert capsys.readouterr().err.splitlines() == [
        "landlord-demo: --ratio: ratio: 'x' is not a number",
        "landlord-demo: --count: count must be >= 1, got 0"]
    assert SPEC.command_line(["--config", str(tmp_path / "missing.toml")], {}) == 2
    assert capsys.readouterr().err.count("\n") == 1
    env_path = _write(tmp_path / "env.toml", "count = 9\n")
    config = SPEC.command_line([], {ENV + "CONFIG": str(env_path)})
    assert isinstance(config, Demo) and config.count == 9


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@given(st.text())
def test_quoted_strings_load_back(text: str) -> None:
    assert tomllib.loads(f"v = {quote(text)}")["v"] == text


hosts = st.from_regex(r"\A[a-z0-9.]{1,10}\Z")
peer = st.builds(lambda host, port: f"{host}:{port}", hosts, st.integers(0, 65535))


@given(name=st.text(max_size=20), count=st.integers(1, 10), ratio=st.floats(0.001, 1),
       memory=st.integers(0, 2**50), rate=st.integers(0, 2**40), enabled=st.booleans(),
       peers=st.lists(peer, max_size=3), cpu=st.floats(0, 512))
def test_effective_config_loads_back(name: str, count: int, ratio: float, memory: int,
                                     rate: int, enabled: bool, peers: list[str],
                                     cpu: float) -> None:
    config = Demo(name=name, count=count, ratio=ratio, memory=memory, rate=rate,
                  enabled=enabled, peers=tuple(peers), cpu=cpu)
    text = effective_toml("demo", config)
    assert set(tomllib.loads(text)["demo"]) == {f.name for f in fields(Demo)}
    with tempfile.TemporaryDirectory() as directory:
        assert SPEC.load(_write(Path(directory) / "e.toml", text)) == config
