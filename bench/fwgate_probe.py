"""`fwgate` as the footprint benchmark runs it: the real CLI, plus one line on stderr,
`FIRST_PROBE <monotonic>`, when it first asks the kernel anything about nf_tables
(the generation id that opens every snapshot): start-up ends there.

    python bench/fwgate_probe.py [--lean] FWGATE-ARGS...

--lean previews the daemon change recommended in bench/results.md: GateLoop keeps
a lean snapshot (only the rules its conditions read; every rule still digested).
"""
from __future__ import annotations

import sys
import time

from fwgate.adapters import nfnl

_genid = nfnl.NfSocket.genid
_seen = False


def _first_genid(self) -> int:
    global _seen
    if not _seen:
        _seen = True
        print(f"FIRST_PROBE {time.monotonic():.6f}", file=sys.stderr, flush=True)
    return _genid(self)


def _lean() -> None:
    from fwgate import daemon, model
    from fwgate.adapters import nft
    from fwgate.config import ChainExists

    def _snapshot(self):
        keep = [(c.table, c.chain) for s in self.stages for c in s.conditions
                if isinstance(c, ChainExists)]
        snap = nft.snapshot(self.nl, self.interest, keep_rules=keep)
        return snap, model.digest(snap, tuple(self.watched))

    daemon.GateLoop._snapshot = _snapshot


def main() -> int:
    nfnl.NfSocket.genid = _first_genid
    args = sys.argv[1:]
    if args[:1] == ["--lean"]:
        args = args[1:]
        _lean()
    from fwgate.cli import main as fwgate_main
    sys.argv = ["fwgate", *args]
    return fwgate_main(args)


if __name__ == "__main__":
    sys.exit(main())
