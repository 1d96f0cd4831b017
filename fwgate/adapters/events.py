"""The nf_tables event socket: subscribed before the first dump, read in bounded
batches, each batch stamped when it was read."""
from __future__ import annotations

import errno
import socket
from collections.abc import Callable

from ..netlink.consts import NFNLGRP_NFTABLES
from ..netlink.nftables import Event, decode_events
from .nfsock import NfSocket

RCVBUF = 8 << 20
MAX_READS = 256   # datagrams per call: then back to the loop, signals and timers wait on us


class EventSocket:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.sock = NfSocket(groups=(NFNLGRP_NFTABLES,), rcvbuf=RCVBUF)
        self.sock.sock.setblocking(False)
        self.clock = clock

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list[tuple[float, tuple[Event, ...] | None]]:
        """(when read, events) per batch; events None where the socket overflowed
        (ENOBUFS: some were lost). Stamped when read, never earlier: an earlier stamp
        could end a quiet window too soon."""
        out: list[tuple[float, tuple[Event, ...] | None]] = []
        messages = []
        for _ in range(MAX_READS):
            try:
                messages += self.sock.recv_messages(socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                if messages:
                    out.append((self.clock(), tuple(decode_events(messages))))
                    messages = []
                out.append((self.clock(), None))
        if messages:
            out.append((self.clock(), tuple(decode_events(messages))))
        return out

    def close(self) -> None:
        self.sock.close()
