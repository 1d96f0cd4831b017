"""Signals as bytes on a socket the event loop's selector watches: no work in handlers."""
from __future__ import annotations

import signal
import socket


class SignalPipe:
    HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.rx, self.tx = socket.socketpair()
        self.rx.setblocking(False)
        self.tx.setblocking(False)
        self.previous = {s: signal.signal(s, lambda *_: None) for s in self.HANDLED}
        self.old_fd = signal.set_wakeup_fd(self.tx.fileno(), warn_on_full_buffer=False)

    def fileno(self) -> int:
        return self.rx.fileno()

    def pending(self) -> list[signal.Signals]:
        try:
            return [signal.Signals(n) for n in self.rx.recv(64)]
        except BlockingIOError:
            return []

    def close(self) -> None:
        signal.set_wakeup_fd(self.old_fd)
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.rx.close()
        self.tx.close()
