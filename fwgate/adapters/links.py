"""Link state over rtnetlink (pyroute2): a dump, then RTM_NEWLINK/DELLINK events."""
from __future__ import annotations

import errno

from pyroute2 import IPRoute

from ..pipeline import LinkState

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000


def _entry(msg) -> tuple[int, str, LinkState]:
    flags = msg["flags"]
    up = bool(flags & IFF_UP and flags & IFF_LOWER_UP)
    return msg["index"], msg.get("ifname") or "", LinkState(up, msg.get("operstate") or "")


class LinkWatch:
    """Links of the current network namespace, kept current by events."""

    def __init__(self) -> None:
        self.ipr = IPRoute()
        self.ipr.bind()  # subscribe before the dump, so no change falls in between
        self.by_index: dict[int, tuple[str, LinkState]] = {}
        self.resync()

    def fileno(self) -> int:
        return self.ipr.fileno()

    @property
    def links(self) -> dict[str, LinkState]:
        return {name: state for name, state in self.by_index.values()}

    def resync(self) -> None:
        self.by_index = {i: (n, s) for i, n, s in map(_entry, self.ipr.get_links())}

    def process(self) -> bool:
        """Read pending events; True if the link table changed. Keyed by index,
        so a rename drops the old name."""
        before = dict(self.by_index)
        try:
            messages = self.ipr.get()
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            self.resync()
            return True
        for msg in messages:
            event = msg.get("event")
            if event == "RTM_NEWLINK":
                index, name, state = _entry(msg)
                self.by_index[index] = (name, state)
            elif event == "RTM_DELLINK":
                self.by_index.pop(msg["index"], None)
        return before != self.by_index

    def close(self) -> None:
        self.ipr.close()
