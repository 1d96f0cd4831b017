"""In-namespace measurements, run as a child process that enters the namespace first:
nft and iptables-save then run in it directly (no `ip netns exec` in their timings),
and fwgate's code is timed in-process, as the daemon runs it.

    python bench/inns.py --netns NS snapshot|quiet|profile [--runs N] [--out FILE]

Prints one JSON object (seconds). Older checkouts have a bench/inns.py with the same
command line and keys: 'before' is measured by the old checkout's own copy.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter

FILTER, NETBIRD = ("ip", "filter"), ("ip", "netbird")
SETTLE = 1.0
QUIET_CONFIG = f"""settle: {SETTLE:g}s
timeout: 0
watch: [ip netbird, ip filter]
stages:
  - name: rules
    rules:
      - table: ip netbird
      - chain: ip filter FORWARD
        iifname: wt0
compat:
  on_incompatible: warn
  iptables: none
"""


def run_tool(*argv: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure_snapshot(runs: int) -> dict:
    """fwgate's scoped snapshot + digest vs `nft -s list table` and `iptables-save`,
    interleaved run by run so that all three see the same machine state."""
    from fwgate import model
    from fwgate.adapters import nft
    from fwgate.adapters.nfsock import NfSocket
    from fwgate.model import TableRef
    table, watched = (TableRef(*FILTER),), (TableRef(*FILTER), TableRef(*NETBIRD))
    out: dict[str, list[float]] = {k: [] for k in (
        "snapshot", "digest", "fwgate", "fwgate_watched", "nft", "iptables_save")}
    rules = 0
    with NfSocket() as sock:
        for _ in range(runs):
            start = time.perf_counter()
            snap = nft.snapshot(sock, table)
            mid = time.perf_counter()
            model.digest(snap, table)
            end = time.perf_counter()
            out["snapshot"].append(mid - start)
            out["digest"].append(end - mid)
            out["fwgate"].append(end - start)
            rules = len(snap.tables[table[0]].rules)
            del snap
            start = time.perf_counter()
            model.digest(nft.snapshot(sock, watched), watched)
            out["fwgate_watched"].append(time.perf_counter() - start)
            out["nft"].append(run_tool("nft", "-s", "list", "table", "ip", "filter"))
            out["iptables_save"].append(run_tool("iptables-save", "-t", "filter"))
    return {"rules": rules, **out}


def carry(daemon, machine, actions: list) -> tuple[Counter, float]:
    """Carry out what the machine asks, feeding each answer back, until it asks for
    nothing more than the compat probe (the next phase, not part of the cycle).
    The actions asked for, and the seconds spent in machine.handle()."""
    from fwgate.core import actions as A
    done: Counter = Counter()
    in_machine = 0.0
    todo = list(actions)
    while todo:
        action = todo.pop(0)
        done[type(action).__name__] += 1
        if not isinstance(action, (A.RunCompat, A.Exit)):
            for answer in daemon.carry_out(action):
                start = time.perf_counter()
                todo += machine.handle(answer)
                in_machine += time.perf_counter() - start
    return done, in_machine


def measure_quiet(runs: int) -> dict:
    """A quiet probe cycle through the public seams: a Machine whose stage holds and
    whose baseline is in is asked at its window's end with nothing changed —
    Tick(machine.next_wakeup()) — and a real Daemon carries out what it asks (the
    QueryGeneration on its NfSocket) and feeds the answer back, up to the point where
    the machine asks for the compat probe. Dumps are counted: a quiet cycle must not
    dump. Each cycle gets a fresh Machine, answered the same baseline dump (the daemon
    took it once, timed: 'baseline_dump')."""
    from dataclasses import replace
    from fwgate.adapters import nft
    from fwgate.adapters.journal import Log
    from fwgate.adapters.nfsock import NfSocket
    from fwgate.adapters.notify import Notifier
    from fwgate.config import parse_config
    from fwgate.core import actions as A
    from fwgate.core import inputs as I
    from fwgate.core.machine import Machine
    from fwgate.daemon import Daemon
    from fwgate.model import TableRef
    config = parse_config(QUIET_CONFIG)
    daemon = Daemon(config, Log(stream=open(os.devnull, "w")), Notifier.disabled())
    daemon.open()
    try:
        begun = time.monotonic() - 2 * SETTLE  # its window ended a second ago
        machine = Machine(config, begun, own_portids=daemon.own_portids)
        first = machine.start(begun)
        daemon.carry_out(next(a for a in first if isinstance(a, A.Watching)))  # the scope
        dump = next(a for a in first if isinstance(a, A.Dump))
        start = time.perf_counter()
        dumped = daemon.carry_out(dump)[-1]
        baseline_dump = time.perf_counter() - start
        assert isinstance(dumped, I.Dumped), dumped
        cycles, in_machine, asked = [], [], Counter()
        for _ in range(runs):
            machine = Machine(config, begun, own_portids=daemon.own_portids)
            machine.start(begun)
            machine.handle(replace(dumped, now=begun))
            start = time.perf_counter()
            first = machine.handle(I.Tick(machine.next_wakeup()))
            ticked = time.perf_counter()
            more, rest = carry(daemon, machine, first)
            cycles.append(time.perf_counter() - start)
            in_machine.append(ticked - start + rest)
            asked += more
        genid = []
        with NfSocket() as sock:
            for _ in range(runs):
                start = time.perf_counter()
                sock.genid()
                genid.append(time.perf_counter() - start)
            ref = TableRef(*FILTER)
            rules = len(nft.snapshot(sock, [ref]).tables[ref].rules)
    finally:
        daemon.close()
    if asked["QueryGeneration"] != runs or asked["RunCompat"] != runs:
        raise RuntimeError(f"not a quiet cycle: the machine asked for {dict(asked)}")
    return {"rules": rules, "baseline_dump": baseline_dump, "cycle": cycles, "genid": genid,
            "in_machine": in_machine,
            "dumps_in_quiet_cycles": asked["Dump"],
            "asked_per_cycle": {k: v / runs for k, v in sorted(asked.items())}}


def profile(out_path: str) -> dict:
    """pyinstrument over three scoped snapshots + digests of ip filter."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return {"skipped": "pyinstrument is not installed"}
    from fwgate import model
    from fwgate.adapters import nft
    from fwgate.adapters.nfsock import NfSocket
    from fwgate.model import TableRef
    table = (TableRef(*FILTER),)
    with NfSocket() as sock:
        nft.snapshot(sock, table)  # warm up
        prof = Profiler(interval=0.0005)
        prof.start()
        for _ in range(3):
            model.digest(nft.snapshot(sock, table), table)
        prof.stop()
    with open(out_path, "w") as fh:
        fh.write("## snapshot+digest (3 runs)\n")
        fh.write(prof.output_text(unicode=True, color=False, show_all=False))
    return {"written": os.path.basename(out_path)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--netns", required=True)
    parser.add_argument("what", choices=("snapshot", "quiet", "profile"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", help="profile: where to write the text")
    args = parser.parse_args()
    from fwgate.adapters.netns import enter
    enter(args.netns)
    if args.what == "snapshot":
        result = measure_snapshot(args.runs)
    elif args.what == "quiet":
        result = measure_quiet(args.runs)
    else:
        result = profile(args.out)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
