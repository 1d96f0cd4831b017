"""One job at a time in a thread of its own, its end a byte on a socket the event
loop's selector watches."""
from __future__ import annotations

import queue
import socket
import sys
import threading
from collections.abc import Callable


class Worker:
    def __init__(self) -> None:
        self.woken, self.wake = socket.socketpair()
        self.woken.setblocking(False)
        self.thread: threading.Thread | None = None
        self.results: queue.SimpleQueue = queue.SimpleQueue()

    def fileno(self) -> int:
        return self.woken.fileno()

    def start(self, job: Callable[[], object]) -> None:
        def run() -> None:
            try:
                self.results.put(job())
            except BaseException as exc:  # handed to the loop, as if the job ran there
                self.results.put(exc)
            self.wake.send(b"!")
        self.thread = threading.Thread(target=run, name="fwgate-worker", daemon=True)
        # While a job runs it holds the interpreter in turns: hand it back to the event
        # loop within a millisecond (the default is 5), so the loop never waits long on it.
        self.switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(0.001)
        self.thread.start()

    def result(self) -> object:
        """What the finished job returned (or raised, as the exception); the loop
        calls it when fileno() is readable."""
        self.woken.recv(64)
        self._joined()
        return self.results.get()

    def _joined(self) -> None:
        self.thread.join()
        self.thread = None
        sys.setswitchinterval(self.switch_interval)  # only a running job needs it short

    def close(self) -> None:
        if self.thread is not None:
            self._joined()
        self.woken.close()
        self.wake.close()
