"""nf_tables as the executor asks it, on one request socket: a scoped snapshot, the
ruleset's generation, a repair batch guarded by a generation, the compat probe.

The executor (fwgate.daemon) holds two of these, the loop's and the worker's; the
tests hold an in-memory kernel with the same methods."""
from __future__ import annotations

from collections.abc import Iterable

from ..model import Snapshot, TableRef
from .nfsock import NfSocket
from .nft import snapshot


class NfKernel:
    def __init__(self, sock: NfSocket | None = None) -> None:
        self.sock = sock or NfSocket()

    @property
    def portid(self) -> int:
        """What the events of this socket's transactions carry."""
        return self.sock.portid

    def snapshot(self, scope: Iterable[TableRef], keep_rules=None) -> Snapshot:
        """Raises DumpInterrupted when the ruleset moved under every attempt."""
        return snapshot(self.sock, scope, keep_rules=keep_rules)

    def genid(self) -> int:
        return self.sock.genid()

    def commit_repairs(self, repairs, genid: int) -> int | None:
        """The generation the batch produced; None when the kernel refused it (the
        ruleset moved on since `genid`, or a rule to replace is gone)."""
        from .probe import commit_repairs  # not at start: the first snapshot comes first
        return commit_repairs(self.sock, repairs, genid)

    def probe(self, *, repair: bool, binaries, netns: str | None, ifaces: frozenset[str],
              setup, notes: tuple[str, ...]):
        """One attempt of the compat probe, its ProbeResult: snapshot, read, repair (when
        asked), cross-check. When the ruleset moved under its repair (conflict=True,
        nothing changed), the machine decides whether to run it again."""
        from .probe import begin_probe
        return begin_probe(self.sock, repair=repair, binaries=binaries, netns=netns,
                           ifaces=ifaces, setup=setup, notes=notes).finish().result

    def close(self) -> None:
        self.sock.close()
