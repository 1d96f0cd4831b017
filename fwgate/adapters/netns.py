"""Entering a named network namespace (/run/netns/NAME) for the whole process."""
from __future__ import annotations

import ctypes
import errno
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def throwaway(prefix: str = "fwt", *, wt0: bool = False) -> Iterator[str]:
    """A network namespace of our own, /run/netns/PREFIX-xxxxxxxx, for tests, the bench
    and the demo: yields its name, removes it on the way out, also when the body raises.

    wt0: also a veth pair wt0/wt0p, both up (no wireguard needed: a veth stands in for
    Netbird's tunnel). Nothing here touches the caller's own namespace."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    create(name)
    try:
        if wt0:
            call_in(name, _add_wt0)
        yield name
    finally:
        remove(name)


def _add_wt0() -> None:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        ipr.link("add", ifname="wt0", kind="veth", peer="wt0p")
        for ifname in ("wt0p", "wt0"):
            ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")


def call_in(name: str, fn, *args, **kwargs):
    """fn(*args, **kwargs) in a thread of its own that entered netns NAME (setns moves
    one thread); its result, or its exception raised here."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            enter(name)
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=work, name=f"netns-{name}")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")
