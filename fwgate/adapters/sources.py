"""What the executor sleeps on, behind one selector: the nf_tables event socket, the
request sockets (the loop's kernel and the worker's), the signal pipe, the worker, and the
link and unit watchers the stages ask about. The executor uses only the attributes and
methods below: the tests give it an in-memory node with the same ones."""
from __future__ import annotations

import errno
import selectors
from collections.abc import Callable

from ..config import Config
from ..errors import EnvironmentProblem
from .events import EventSocket
from .kernel import NfKernel
from .nfsock import NetlinkError, NfSocket
from .signals import SignalPipe
from .watchers import Watchers
from .worker import Worker

PARTS = ("worker", "signals", "watchers", "events", "kernel", "worker_kernel", "selector")


class Sources:
    def __init__(self, clock: Callable[[], float]) -> None:
        """Events first (subscribed before the first dump: no change falls in between),
        then the request sockets, signals, the worker."""
        for part in PARTS:
            setattr(self, part, None)
        try:
            self.events = EventSocket(clock)
            self.kernel, self.worker_kernel = NfKernel(NfSocket()), NfKernel(NfSocket())
        except NetlinkError as exc:
            self.close()
            hint = " (needs root or CAP_NET_ADMIN)" if exc.errno in (errno.EPERM, errno.EACCES) \
                else " (is nf_tables available?)"
            raise EnvironmentProblem(f"cannot use nf_tables: {exc.strerror}{hint}") from None
        self.signals, self.worker, self.watchers = SignalPipe(), Worker(), Watchers()
        self.selector = selectors.DefaultSelector()
        for what, source in (("nft", self.events), ("signals", self.signals),
                             ("worker", self.worker)):
            self.selector.register(source, selectors.EVENT_READ, what)

    @property
    def own_portids(self) -> frozenset[int]:
        """What the events of our own transactions carry."""
        return frozenset({self.kernel.portid, self.worker_kernel.portid})

    def watch(self, config: Config) -> dict[str, dict]:
        """Open the link and unit watchers the config's stages ask about: their first facts."""
        found = self.watchers.open_for(config)
        registered = {k.fd for k in self.selector.get_map().values()}
        for what, source in self.watchers.sources():
            if source.fileno() not in registered:
                self.selector.register(source, selectors.EVENT_READ, what)
        return found

    def ready(self, timeout: float | None) -> list[str]:
        """Which sources are readable ("nft", "signals", "worker", "links", "units"),
        waiting up to `timeout` seconds (None: for ever)."""
        return [key.data for key, _ in self.selector.select(timeout)]

    def close(self) -> None:
        for part in PARTS:
            if getattr(self, part, None) is not None:
                getattr(self, part).close()
