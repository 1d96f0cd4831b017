"""Entering a named network namespace (/run/netns/NAME) for the whole process."""
from __future__ import annotations

import ctypes
import errno
import os

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
        _setns(os.path.join(NETNS_DIR, name))
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES) or exc.errno is None:
            raise EnvironmentProblem(
                f"cannot enter network namespace {name!r}: permission denied (run as root)") from None
        raise EnvironmentProblem(f"cannot enter network namespace {name!r}: {exc.strerror}") from None


def _setns(path: str) -> None:
    # By hand rather than through pyroute2: importing it costs the daemon ~150 ms and 14 MB.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if hasattr(os, "setns"):  # Python 3.12+
            os.setns(fd, os.CLONE_NEWNET)
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def create(name: str) -> None:
    from pyroute2 import netns as _netns
    _netns.create(name)


def remove(name: str) -> None:
    from pyroute2 import netns as _netns
    try:
        _netns.remove(name)
    except FileNotFoundError:
        pass
