"""Entering a named network namespace (/run/netns/NAME) for the whole process."""
from __future__ import annotations

import errno
import os

from pyroute2 import netns as _netns

from ..errors import EnvironmentProblem

NETNS_DIR = "/run/netns"


def enter(name: str) -> None:
    """Move the calling thread (call it before starting threads) into netns NAME.

    Sockets opened afterwards live in it; ones opened before stay where they were."""
    if "/" in name or name in ("", ".", ".."):
        raise EnvironmentProblem(f"--netns {name!r}: expected a namespace name from 'ip netns list'")
    if not os.path.exists(os.path.join(NETNS_DIR, name)):
        raise EnvironmentProblem(f"network namespace {name!r} does not exist ({NETNS_DIR}/{name})")
    try:
        _netns.setns(name, flags=0)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES) or exc.errno is None:
            raise EnvironmentProblem(
                f"cannot enter network namespace {name!r}: permission denied (run as root)") from None
        raise EnvironmentProblem(f"cannot enter network namespace {name!r}: {exc.strerror}") from None


def create(name: str) -> None:
    _netns.create(name)


def remove(name: str) -> None:
    try:
        _netns.remove(name)
    except FileNotFoundError:
        pass
