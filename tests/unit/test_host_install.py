"""The host installer's decisions (scripts/install_plan.py): plan, removal, release names,
and the plan applied to a directory tree (a second plan finds nothing to do)."""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

import pytest
from host_install import Host, read_sources, wheel_members
from hypothesis import given, settings
from hypothesis import strategies as st
from install_plan import (
    CONFIG_DIR,
    DOC_DIR,
    UNIT_DIR,
    InstallError,
    Seen,
    Want,
    manifest_of,
    plan,
    read_manifest,
    release_name,
    removal_plan,
    wanted_paths,
)

P = PurePosixPath
UNITS = {"landlord-agent.service": b"[Unit]\nA\n", "landlord-coordinator.service": b"[Unit]\nC\n"}
SAMPLES = {"agent.toml": b"# agent\n", "coordinator.toml": b"# coordinator\n"}
DOCS = {"README.md": b"readme", "docs/install.md": b"install"}


def test_a_missing_path_is_made_and_a_present_one_left_alone() -> None:
    unit = Want(UNIT_DIR / "x.service", "file", content=b"new")
    link = Want(P("/usr/bin/landlord"), "link", target="../../opt/landlord/current/bin/landlord")
    assert [(a.verb, a.want.path) for a in plan([unit, link], {})] == [
        ("link", link.path), ("write", unit.path)]
    seen = {unit.path: Seen("file", content=b"new", mode=0o644),
            link.path: Seen("link", target=link.target)}
    assert plan([unit, link], seen) == []


def test_a_changed_file_or_link_is_replaced_but_an_operator_file_never() -> None:
    unit = Want(UNIT_DIR / "x.service", "file", content=b"new")
    link = Want(P("/usr/bin/landlord"), "link", target="a")
    config = Want(CONFIG_DIR / "agent.toml", "file", content=b"sample", keep=True)
    seen = {unit.path: Seen("file", content=b"old", mode=0o644),
            link.path: Seen("link", target="b"),
            config.path: Seen("file", content=b"edited by the operator", mode=0o600)}
    actions = plan([unit, link, config], seen)
    assert [(a.verb, a.want.path, a.reason) for a in actions] == [
        ("link", link.path, "points to b"), ("write", unit.path, "changed")]


def test_a_wrong_mode_is_fixed_and_a_directory_in_the_way_is_an_error() -> None:
    tls = Want(CONFIG_DIR / "tls", "dir", mode=0o700)
    assert [a.verb for a in plan([tls], {tls.path: Seen("dir", mode=0o755)})] == ["chmod"]
    unit = Want(UNIT_DIR / "x.service", "file", content=b"x")
    with pytest.raises(InstallError, match="is a directory"):
        plan([unit], {unit.path: Seen("dir", mode=0o755)})
    with pytest.raises(InstallError, match="not a directory"):
        plan([tls], {tls.path: Seen("file", content=b"")})


def test_what_an_earlier_install_made_and_is_no_longer_wanted_is_removed() -> None:
    before = wanted_paths("both", SAMPLES, UNITS, DOCS)
    now = wanted_paths("agent", SAMPLES, UNITS, DOCS)
    seen = {w.path: Seen(w.kind, content=w.content, target=w.target, mode=w.mode)
            for w in before}
    removed = [a.want.path for a in plan(now, seen, before) if a.verb == "remove"]
    # the coordinator's unit and command go; its config and tls directory are the operator's
    assert sorted(map(str, removed)) == ["/usr/bin/landlord-coordinator",
                                         str(UNIT_DIR / "landlord-coordinator.service")]


def test_uninstall_keeps_operator_files_unless_purged() -> None:
    installed = wanted_paths("both", SAMPLES, UNITS, DOCS)
    seen = {w.path: Seen(w.kind) for w in installed}
    kept = {a.want.path for a in removal_plan(installed, seen, purge=False)}
    assert CONFIG_DIR / "agent.toml" not in kept and CONFIG_DIR not in kept
    assert DOC_DIR in kept and UNIT_DIR / "landlord-agent.service" in kept
    purged = [a.want.path for a in removal_plan(installed, seen, purge=True)]
    assert CONFIG_DIR in purged
    # children before their parents
    assert purged.index(CONFIG_DIR / "agent.toml") < purged.index(CONFIG_DIR)


def test_roles_choose_units_commands_and_configs() -> None:
    def paths(role: str) -> set[str]:
        return {str(w.path) for w in wanted_paths(role, SAMPLES, UNITS, DOCS)}

    agent, coordinator, both = paths("agent"), paths("coordinator"), paths("both")
    assert "/usr/bin/landlord-agent" in agent and "/usr/bin/landlord-coordinator" not in agent
    assert str(CONFIG_DIR / "tls") in coordinator and str(CONFIG_DIR / "tls") not in agent
    assert both == agent | coordinator
    assert {str(DOC_DIR / "install.md"), "/usr/bin/landlord"} <= agent & coordinator


def test_the_manifest_round_trips_without_contents() -> None:
    wants = wanted_paths("both", SAMPLES, UNITS, DOCS)
    back = read_manifest(manifest_of(wants).decode())
    assert sorted((w.path, w.kind, w.keep) for w in back) == sorted(
        (w.path, w.kind, w.keep) for w in wants)
    assert b"[Unit]" not in manifest_of(wants)


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_a_release_is_named_by_version_and_wheel_contents(tmp_path: Path) -> None:
    a = _wheel(tmp_path / "a.whl", {"x.py": b"1", "y.py": b"2"})
    b = _wheel(tmp_path / "b.whl", {"y.py": b"2", "x.py": b"1"})  # same, other order
    c = _wheel(tmp_path / "c.whl", {"x.py": b"1", "y.py": b"3"})
    name = release_name("0.1.0", {"landlord.whl": wheel_members(a)})
    assert name.startswith("0.1.0-") and len(name) == len("0.1.0-") + 12
    assert release_name("0.1.0", {"landlord.whl": wheel_members(b)}) == name
    assert release_name("0.1.0", {"landlord.whl": wheel_members(c)}) != name
    assert release_name("0.1.0", {"other.whl": wheel_members(a)}) != name


@st.composite
def trees(draw: st.DrawFn) -> tuple[list[Want], dict[str, tuple[str, bytes]]]:
    """Wanted files/links/dirs below a few names, and what is on disk there first."""
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, min_size=1))
    wants, before = [], {}
    for name in names:
        kind = draw(st.sampled_from(["file", "link", "dir"]))
        content = draw(st.binary(max_size=8))
        wants.append(Want(P("/x") / name, kind, content=content, target=f"t-{content.hex()}",
                          mode=draw(st.sampled_from([0o644, 0o600, 0o755])),
                          keep=draw(st.booleans())))
        if kind != "dir":
            before[name] = draw(st.sampled_from([("none", b""), ("file", b"old"),
                                                 ("link", b"elsewhere")]))
    return wants, before


@settings(max_examples=60, deadline=None)
@given(trees())
def test_applying_the_plan_leaves_nothing_to_do(tmp_path_factory: pytest.TempPathFactory,
                                                tree: tuple[list[Want],
                                                            dict[str, tuple[str, bytes]]]
                                                ) -> None:
    wants, before = tree
    root = tmp_path_factory.mktemp("root")
    host = Host(root)
    (root / "x").mkdir()
    for name, (kind, data) in before.items():
        if kind == "file":
            (root / "x" / name).write_bytes(data)
        elif kind == "link":
            (root / "x" / name).symlink_to(data.decode())
    paths = [w.path for w in wants]
    for action in plan(wants, host.seen(paths)):
        host.apply(action)
    assert plan(wants, host.seen(paths)) == []
    for want in wants:
        real = root / "x" / want.path.name
        kind, data = before.get(want.path.name, ("none", b""))
        if want.keep and kind != "none":
            assert real.is_symlink() == (kind == "link")  # the operator's, untouched
        elif want.kind == "file":
            assert real.read_bytes() == want.content and not real.is_symlink()
        elif want.kind == "link":
            assert str(real.readlink()) == want.target
    for action in removal_plan(wants, host.seen(paths), purge=True):
        host.apply(action)
    assert list((root / "x").iterdir()) == []


def _directives(unit: str) -> dict[str, list[str]]:
    text = (Path(__file__).resolve().parents[2] / "systemd" / unit).read_text()
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize("unit", ["landlord-agent.service", "landlord-coordinator.service"])
def test_the_units_name_installed_documents_and_commands(unit: str) -> None:
    from install_plan import DOCS as SHIPPED

    d = _directives(unit)
    documents = [u for line in d["Documentation"] for u in line.split()]
    installed = {f"file://{DOC_DIR / P(n).name}" for n in SHIPPED}
    assert documents and set(documents) <= installed, documents
    _, _, docs = read_sources(Path(__file__).resolve().parents[2])
    assert {P(n).name for n in docs} == {P(n).name for n in SHIPPED}  # every one exists
    command = d["ExecStart"][0].split()[0]
    links = {str(w.path) for w in wanted_paths("both", SAMPLES, UNITS, DOCS) if w.kind == "link"}
    assert command in links


@pytest.mark.parametrize("unit", ["landlord-agent.service", "landlord-coordinator.service"])
def test_the_units_are_fit_for_a_fleet(unit: str) -> None:
    d = _directives(unit)
    assert d["Type"] == ["notify"] and float(d["WatchdogSec"][0]) > 0
    assert d["RestartPreventExitStatus"] == ["2"]  # a bad config is not a restart loop
    assert d["ExecReload"] == ["kill -HUP $MAINPID"]  # certificates and the CRL (SIGHUP)
    assert int(d["LimitNOFILE"][0]) >= 65536  # 1,000 agent streams need more than 1,024
    assert int(d["TasksMax"][0]) >= 1024
    if unit == "landlord-agent.service":
        assert d["KillMode"] == ["process"]  # containers and HAProxy survive a restart
    else:
        assert d["DynamicUser"] == ["yes"]
        assert d["LoadCredential"] == [f"tls:{CONFIG_DIR}/tls"]
