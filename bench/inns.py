"""In-namespace measurements, run by run_all.py as a child process that enters the
namespace first: nft and iptables-save then run in it directly (no `ip netns exec`
in their timings), and fwgate's code is timed in-process, as the daemon runs it.

    python bench/inns.py --netns NS snapshot|compat|quiet|profile [--runs N]

Prints one JSON object (seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

FILTER, NETBIRD = ("ip", "filter"), ("ip", "netbird")


def run_tool(*argv: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def nft_list() -> float:
    return run_tool("nft", "-s", "list", "table", "ip", "filter")


def iptables_save() -> float:
    return run_tool("iptables-save", "-t", "filter")


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
            out["nft"].append(nft_list())
            out["iptables_save"].append(iptables_save())
    return {"rules": rules, **out}


def measure_compat(runs: int) -> dict:
    """The compat analysis (pure, on a snapshot already taken) and the whole probe
    (snapshot of every iptables family + analysis) vs one `iptables-save`."""
    from fwgate.adapters import nft
    from fwgate.adapters.nfsock import NfSocket
    from fwgate.compat.reader import analyse
    from fwgate.compat.probe import COMPAT_FAMILIES
    out: dict[str, list[float]] = {"analyse": [], "probe": [], "iptables_save": []}
    rules = findings = 0
    with NfSocket() as sock:
        for _ in range(runs):
            start = time.perf_counter()
            snap = nft.snapshot(sock, families=COMPAT_FAMILIES)
            mid = time.perf_counter()
            report = analyse(snap)
            end = time.perf_counter()
            out["analyse"].append(end - mid)
            out["probe"].append(end - start)
            out["iptables_save"].append(iptables_save())
            rules = sum(len(t.rules) for t in snap.tables.values())
            findings = len(report.findings)
            del snap, report
    return {"rules": rules, "findings": findings, **out}


def measure_quiet(runs: int) -> dict:
    """A quiet probe cycle as GateLoop runs it when the window ends and nothing
    changed: _confirm() (one generation-id query), decide(), _publish().
    Dumps are counted: a quiet cycle must not dump."""
    from fwgate import daemon
    from fwgate.adapters.journal import Log
    from fwgate.adapters.notify import Notifier
    from fwgate.config import DEFAULTS, ChainExists, Stage, TableExists, TableRef
    from dataclasses import replace
    stages = (Stage("rules", (TableExists(TableRef(*NETBIRD)),
                              ChainExists(TableRef(*FILTER), "FORWARD", iifname="wt0"))),)
    config = replace(DEFAULTS, settle=3600.0, timeout=0.0, stages=stages,
                     watch=(TableRef(*FILTER), TableRef(*NETBIRD)))
    loop = daemon.GateLoop(config, Log(stream=open(os.devnull, "w")), Notifier.disabled(),
                           stages=stages)
    dumps = [0]
    real_snapshot = daemon.nft.snapshot

    def counting(*a, **kw):
        dumps[0] += 1
        return real_snapshot(*a, **kw)

    daemon.nft.snapshot = counting
    loop._open()
    try:
        now = loop.clock()
        loop._restart(now)
        start = time.perf_counter()
        loop._refresh(now)                      # the baseline dump after the last change
        baseline_dump = time.perf_counter() - start
        # The daemon keeps a lean snapshot (only FORWARD's rules): count them all here.
        rules = len(daemon.nft.snapshot(loop.nl, [TableRef(*FILTER)]).tables[TableRef(*FILTER)].rules)
        dumps_before = dumps[0]
        cycles = []
        genid_only = []
        for _ in range(runs):
            start = time.perf_counter()
            now = loop.clock()
            loop._confirm(now)
            loop.gate.decide(now)
            loop._publish(now)
            cycles.append(time.perf_counter() - start)
            start = time.perf_counter()
            loop.nl.genid()
            genid_only.append(time.perf_counter() - start)
        return {"rules": rules, "baseline_dump": baseline_dump, "cycle": cycles,
                "genid": genid_only, "dumps_in_quiet_cycles": dumps[0] - dumps_before}
    finally:
        daemon.nft.snapshot = real_snapshot
        loop._close()


def profile(out_path: str) -> dict:
    """pyinstrument over one scoped snapshot + digest and one compat analysis."""
    from pyinstrument import Profiler
    from fwgate import model
    from fwgate.adapters import nft
    from fwgate.adapters.nfsock import NfSocket
    from fwgate.compat.reader import analyse
    from fwgate.compat.probe import COMPAT_FAMILIES
    from fwgate.model import TableRef
    table = (TableRef(*FILTER),)
    texts = {}
    with NfSocket() as sock:
        nft.snapshot(sock, table)  # warm up
        for name, fn in (("snapshot+digest", lambda: model.digest(nft.snapshot(sock, table), table)),
                         ("compat analysis", lambda: analyse(nft.snapshot(sock, families=COMPAT_FAMILIES)))):
            prof = Profiler(interval=0.0005)
            prof.start()
            for _ in range(3):
                fn()
            prof.stop()
            texts[name] = prof.output_text(unicode=True, color=False, show_all=False)
    with open(out_path, "w") as fh:
        for name, text in texts.items():
            fh.write(f"## {name} (3 runs)\n{text}\n")
    return {"written": out_path}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--netns", required=True)
    parser.add_argument("what", choices=("snapshot", "compat", "quiet", "profile"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", help="profile: where to write the text")
    args = parser.parse_args()
    from fwgate.adapters.netns import enter
    enter(args.netns)
    if args.what == "snapshot":
        result = measure_snapshot(args.runs)
    elif args.what == "compat":
        result = measure_compat(args.runs)
    elif args.what == "quiet":
        result = measure_quiet(args.runs)
    else:
        result = profile(args.out)
    import fwgate
    result["fwgate_from"] = os.path.dirname(fwgate.__file__)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
