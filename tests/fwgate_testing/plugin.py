"""The fixtures every tier shares (registered by tests/conftest.py's pytest_plugins)."""
import os
import shutil

import pytest

from fwgate.adapters.netns import throwaway
from fwgate_testing.helpers import NotifyCapture


def _needs_root_and_tools() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "nft", "iptables"):
        if not shutil.which(tool):
            return f"needs {tool} (Debian packages iproute2, nftables, iptables)"
    return None


@pytest.fixture(autouse=True, scope="session")
def private_runtime_dir(tmp_path_factory):
    """fwgate's state files go to a temp dir, not the machine's /run/fwgate."""
    path = str(tmp_path_factory.mktemp("run-fwgate"))
    old = os.environ.get("RUNTIME_DIRECTORY")
    os.environ["RUNTIME_DIRECTORY"] = path
    yield path
    if old is None:
        os.environ.pop("RUNTIME_DIRECTORY", None)
    else:
        os.environ["RUNTIME_DIRECTORY"] = old


@pytest.fixture
def netns():
    """A fresh network namespace, deleted afterwards even when the test fails."""
    reason = _needs_root_and_tools()
    if reason:
        pytest.skip(reason)
    with throwaway("fwt") as name:
        yield name


@pytest.fixture
def notify(tmp_path):
    """A real AF_UNIX socket standing in for systemd's NOTIFY_SOCKET."""
    capture = NotifyCapture(str(tmp_path))
    yield capture
    capture.close()
