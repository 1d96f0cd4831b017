"""Link state over rtnetlink: events say *that* a link changed; pyroute2 reads back what.

Reading the link table again on each event (a handful of links) keeps us right
however events are batched, coalesced or dropped."""
from __future__ import annotations

import errno
import socket

from pyroute2 import IPRoute

from ..model import LinkState

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
RTMGRP_LINK = 0x1


def _entry(msg) -> tuple[str, LinkState]:
    flags = msg["flags"]
    up = bool(flags & IFF_UP and flags & IFF_LOWER_UP)
    # get_attr, not msg.get("ifname"): the short names are pyroute2 0.8+ only, and
    # Debian 12's python3-pyroute2 is 0.7.2 (None there: the tunnel stage never held).
    return (msg.get_attr("IFLA_IFNAME") or "",
            LinkState(up, msg.get_attr("IFLA_OPERSTATE") or ""))


class LinkWatch:
    """Links of the current network namespace, kept current by RTM_*LINK events."""

    def __init__(self) -> None:
        # Subscribe before the first dump, so no change can fall in between.
        self.monitor = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.monitor.bind((0, RTMGRP_LINK))
        self.monitor.setblocking(False)
        self.ipr = IPRoute()
        self.links: dict[str, LinkState] = {}
        self.resync()

    def fileno(self) -> int:
        return self.monitor.fileno()

    def resync(self) -> None:
        self.links = dict(map(_entry, self.ipr.get_links()))

    def process(self) -> bool:
        """Drain pending events, read the links back; True if they changed."""
        while True:
            try:
                self.monitor.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:  # dropped events: the dump below covers them
                    raise
        before = self.links
        self.resync()
        return before != self.links

    def close(self) -> None:
        self.ipr.close()
        self.monitor.close()
