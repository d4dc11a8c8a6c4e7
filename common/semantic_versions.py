"""Semantic versions and npm ranges: the one place that imports the two semver libraries.

``semver`` (the card's choice) parses and orders versions and computes bumps;
``semantic_version`` gives npm range semantics (``^``, ``~``, x-ranges, hyphen ranges,
``||``), which ``semver`` lacks. Everyone else calls the functions below.
"""

from __future__ import annotations

from functools import lru_cache

import semantic_version
import semver

from common.errors import InvalidArgument, InvalidVersion
from common.input_bounds import MAX_RANGE_CHARS, MAX_VERSION_CHARS, quoted

__all__ = ["Version", "check_range", "parse_version", "satisfies", "version_order_key"]

Version = semver.Version


def parse_version(text: str) -> Version:
    """A strict SemVer version of at most ``MAX_VERSION_CHARS``, or ``InvalidVersion``
    saying what a version looks like (a version is also a header value and a label)."""
    if isinstance(text, str) and len(text) > MAX_VERSION_CHARS:
        raise InvalidVersion(f"version {quoted(text)} is longer than {MAX_VERSION_CHARS} "
                             "characters", version=quoted(text))
    if isinstance(text, str):
        try:
            return semver.Version.parse(text)
        except ValueError:
            pass
    hint = " (drop the leading 'v')" if isinstance(text, str) and text[:1] in "vV" else ""
    raise InvalidVersion(
        f"{quoted(text)} is not a semantic version{hint}; write MAJOR.MINOR.PATCH such as "
        "1.4.2, optionally with -prerelease and +build (2.0.0-rc.1+build.7)",
        version=quoted(text),
    )


def version_order_key(version: str) -> tuple[int, Version | str]:
    """Semver order; tags that are not semver sort before every semver tag."""
    try:
        return (1, semver.Version.parse(version))
    except ValueError:
        return (0, version)


@lru_cache(maxsize=4096)
def _spec(text: str) -> semantic_version.NpmSpec:
    try:
        if len(text) > MAX_RANGE_CHARS:
            raise ValueError(text)
        return semantic_version.NpmSpec(text)
    except ValueError:
        raise InvalidArgument(
            f"version range {quoted(text)} is not an npm range of at most {MAX_RANGE_CHARS} "
            "characters; write e.g. ^1.2.0, ~1.2, 1.x, "
            "1.2.0 - 1.4.0, >=1.0.0 <2.0.0 or ranges joined with ||",
            range=quoted(text),
        ) from None


@lru_cache(maxsize=4096)
def _npm_version(text: str) -> semantic_version.Version:
    try:
        return semantic_version.Version(text)
    except ValueError:
        raise InvalidVersion(f"{quoted(text)} is not a semver version",
                             version=quoted(text)) from None


def check_range(range_text: str) -> None:
    """Refuse a range that is not an npm range (``InvalidArgument`` with examples)."""
    _spec(range_text)


def satisfies(version: str, range_text: str) -> bool:
    """Whether ``version`` is inside the npm range ``range_text``."""
    return _npm_version(version) in _spec(range_text)
