"""pytest fixtures that boot Debian's systemd in a throwaway nspawn container.

Fixtures:
  systemd_rootfs     (session)  path of the cached rootfs; built once per session
  container          (function) a booted Container, project checkout bound read-only
  container_factory  (function) make(**Container kwargs) -> booted Container, torn down after
                                (rootfs=PATH boots another suite's rootfs, e.g. trixie's)
  debs               (session)  the .deb builds under test (see debs.py)
  archives           (session)  {suite: local apt archive with what the .deb needs}
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# No __init__.py here on purpose: a package named "systemd" would shadow the python-systemd
# module. What these tests share lives in fwgate_testing.node.
from fwgate_testing.node import archive as _archive
from fwgate_testing.node import debs as _debs
from fwgate_testing.node import rootfs as _rootfs
from fwgate_testing.node.container import Container, project_binds


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "systemd container tests need root (systemd-nspawn, cgroups, namespaces)"
    if not shutil.which("systemd-nspawn"):
        return "systemd-nspawn missing (apt-get install systemd-container)"
    if not _rootfs.rootfs_path().is_dir() and not shutil.which("debootstrap"):
        return "debootstrap missing to build the test rootfs (apt-get install debootstrap)"
    return None


@pytest.fixture(scope="session")
def systemd_rootfs() -> Path:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        return _rootfs.build()
    except RuntimeError as exc:
        pytest.fail(f"building the systemd test rootfs failed: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def debs(systemd_rootfs, tmp_path_factory) -> dict[str, Path]:
    """{"X": .deb of the checkout's version, "X+1": .deb of the next one,
    "X again": X built a second time, elsewhere (reproducibility)}."""
    if os.geteuid() != 0:
        pytest.skip("building the .deb needs root")
    up = _debs.upstream_version()
    return {"X": _debs.build_deb(tmp_path_factory.mktemp("debs"), f"{up}-1"),
            "X+1": _debs.build_deb(tmp_path_factory.mktemp("debs"), f"{_debs.next_version(up)}-1"),
            "X again": _debs.build_deb(tmp_path_factory.mktemp("debs-again"), f"{up}-1")}


@pytest.fixture(scope="session")
def archives(debs) -> dict[str, Path]:
    """{suite: a local apt archive holding what fwgate's Depends and Recommends and the
    tests' node_exporter need beyond that suite's rootfs} (archive.py)."""
    try:
        return {suite: _archive.build(suite, [debs["X"]], extra=_debs.ARCHIVE_EXTRA)
                for suite in _rootfs.SUITES}
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"fetching the packages fwgate depends on failed: {exc}", pytrace=False)


@pytest.fixture
def container_factory(systemd_rootfs):
    """make(**kwargs) boots a Container (default binds: the checkout, read-only)."""
    made: list[Container] = []

    def make(**kwargs) -> Container:
        kwargs.setdefault("binds_ro", project_binds())
        c = Container(kwargs.pop("rootfs", systemd_rootfs), **kwargs)
        made.append(c)
        try:
            c.__enter__()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        return c

    yield make
    for c in reversed(made):
        c.close()


@pytest.fixture
def container(container_factory) -> Container:
    return container_factory()


@pytest.hookimpl(tryfirst=True)  # before -m deselects, so the mark counts
def pytest_collection_modifyitems(session, config, items):
    """Mark container tests "systemd"; build the rootfs once, up front, if any
    selected test uses it.

    Building here (not lazily in the first test) keeps the ~1 min debootstrap
    out of the first test's timing; failures still surface via the fixture.
    Every suite's rootfs (bookworm, trixie) when a test installs the package.
    """
    users = [i for i in items if "systemd_rootfs" in getattr(i, "fixturenames", ())]
    for item in users:
        item.add_marker(pytest.mark.systemd)
    deselected = config.getoption("markexpr", "") == "not systemd"
    if users and not deselected and _skip_reason() is None:
        suites = (_rootfs.SUITES if any("archives" in getattr(i, "fixturenames", ())
                                         for i in users) else (_rootfs.SUITE,))
        for suite in suites:
            try:
                _rootfs.build(suite=suite)
            except RuntimeError:
                pass  # reported by the fixtures with a clear message
