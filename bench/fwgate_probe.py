"""`fwgate` as the footprint benchmark runs it: the real CLI, plus one line on stderr,
`FIRST_PROBE <monotonic>`, when it first asks the kernel anything about nf_tables
(the generation id that opens every snapshot): start-up ends there.

    python bench/fwgate_probe.py FWGATE-ARGS...
"""
from __future__ import annotations

import sys
import time

from fwgate.adapters.nfsock import NfSocket

_genid = NfSocket.genid
_seen = False


def _first_genid(self) -> int:
    global _seen
    if not _seen:
        _seen = True
        print(f"FIRST_PROBE {time.monotonic():.6f}", file=sys.stderr, flush=True)
    return _genid(self)


def main() -> int:
    NfSocket.genid = _first_genid
    args = sys.argv[1:]
    from fwgate.cli import main as fwgate_main
    sys.argv = ["fwgate", *args]
    return fwgate_main(args)


if __name__ == "__main__":
    sys.exit(main())
