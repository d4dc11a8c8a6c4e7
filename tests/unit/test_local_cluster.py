"""The cluster launcher's pure parts (scripts/local_cluster): config values, pid files,
and what the load saw judged against the rollout records."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from local_cluster.daemons import toml_value
from local_cluster.load import Answer, failed
from local_cluster.processes import ROOT, recorded_processes
from local_cluster.releases import (
    RELEASE_COMMITS,
    ReleaseMissing,
    git_dir,
    previous_release,
    release_revision,
)
from local_cluster.report import classify_failures, rollback_seconds, share_of, switch_seconds


def test_toml_values() -> None:
    assert [toml_value(v) for v in (True, 3, 0.5, "a\"b", ["x", 2])] == [
        "true", "3", "0.5", '"a\\"b"', '["x", 2]']


def test_recorded_processes_keeps_live_matching_pids_and_drops_the_rest(tmp_path: Path) -> None:
    me = Path(sys.executable).name
    (tmp_path / "alive.pid").write_text(f"{os.getpid()} {me}\n")
    (tmp_path / "other-program.pid").write_text(f"{os.getpid()} landlord-agent\n")
    (tmp_path / "gone.pid").write_text("999999999 landlord-agent\n")
    (tmp_path / "garbage.pid").write_text("not a pid\n")
    found = recorded_processes(tmp_path)
    assert list(found) == ["alive"] and found["alive"][0] == me
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alive.pid"]


def _answer(at: float, status: int, version: str, host: str = "h1") -> Answer:
    return Answer(at=at, host=host, status=status, version=version, sent=at - 0.1)


def test_failures_split_by_cause() -> None:
    answers = [_answer(1, 200, "1.0.0"), _answer(2, 500, "2.0.0"), _answer(3, 0, ""),
               _answer(4, 502, "1.0.0")]
    assert [a.at for a in failed(answers)] == [2, 3, 4]
    failures = classify_failures(answers, "2.0.0")
    assert (failures.total, failures.bad_version_5xx, failures.switching) == (3, 1, 2)
    assert abs(answers[0].latency - 0.1) < 1e-9


def test_share_rollback_and_switch_times() -> None:
    answers = [_answer(1, 200, "1.0.0"), _answer(2, 200, "2.0.0"), _answer(3, 500, "2.0.0"),
               _answer(4, 200, "1.0.0"), _answer(5, 0, "")]
    assert share_of(answers, "2.0.0") == (50.0, 4)
    assert share_of([_answer(1, 0, "")], "2.0.0") == (None, 0)
    assert rollback_seconds(answers, 2.5, "1.0.0") == 2.5  # the failed request at 5
    assert rollback_seconds(answers[:4], 2.5, "1.0.0") == 0.5
    assert rollback_seconds(answers, 9, "1.0.0") is None
    assert switch_seconds(answers, "2.0.0") == 3  # first 2.0.0 at 2, last other at 5
    assert switch_seconds(answers, "3.0.0") is None


def test_a_release_whose_tag_is_missing_is_an_error_saying_how_to_get_it(tmp_path: Path) -> None:
    repo = tmp_path / "clone"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    with pytest.raises(ReleaseMissing, match=r"git tag v9\.9\.9 is not in .*git fetch --tags"):
        previous_release("v9.9.9", checkout=repo, cache=tmp_path / "releases")
    assert not (tmp_path / "releases").exists()  # nothing half-built
    assert git_dir(repo) == (repo / ".git").resolve()


def test_a_release_is_built_from_its_tag_else_from_the_commit_it_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "clone"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "one"], check=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    monkeypatch.setitem(RELEASE_COMMITS, "v9.9.9", head)
    assert release_revision(git_dir(repo), "v9.9.9") == head  # a clone without tags
    subprocess.run(["git", "-C", str(repo), "tag", "v9.9.9"], check=True)
    assert release_revision(git_dir(repo), "v9.9.9") == "refs/tags/v9.9.9"
    monkeypatch.setitem(RELEASE_COMMITS, "v9.9.8", "0" * 40)  # not in this history
    with pytest.raises(ReleaseMissing, match=r"git tag v9\.9\.8 is not in"):
        release_revision(git_dir(repo), "v9.9.8")


def test_each_known_release_commit_is_that_release() -> None:
    for tag, commit in RELEASE_COMMITS.items():
        shown = subprocess.run(["git", "show", f"{commit}:pyproject.toml"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout
        assert f'version = "{tag.removeprefix("v")}"' in shown, tag
