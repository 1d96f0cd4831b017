"""How long find_conflicts() takes on a 50k-rule node, beside the dump it runs on.

    .venv/bin/python bench/marks_speed.py [--rules 50000] [--quick] [--out DIR]

The guard runs it after every check, on the snapshot the check took: it must cost
well under that dump. And the command an operator runs, `fwgate conflicts` (a whole
process: start, dump, routing rules and marked sockets, analysis), against `nft -s list
ruleset` on the same node: at most half of it. The two run interleaved, medians of
--runs rounds. The ruleset is kube-router's pod firewalls and network policies
(their mark writes and tests, with per-pod comments and per-policy addresses, so few
rules repeat byte for byte), kube-proxy's services (KUBE-MARK-MASQ jumps), and
Netbird's tables. Writes results/marks_speed.json.
"""
from __future__ import annotations

import statistics
import sys
import time

import subprocess

from common import AFTER, FWGATE, arguments, needs_root, save, sh  # noqa: E402

from fwgate.adapters.netns import call_in, throwaway  # noqa: E402
from fwgate_testing.rulesets import (  # noqa: E402
    MARKS_NETBIRD, kube_proxy_nat, kube_router_filter,
)

def whole_processes(ns: str, runs: int) -> dict:
    """`fwgate conflicts --json` and `nft -s list ruleset` as processes, interleaved."""
    def timed(argv: list[str]) -> float:
        t0 = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True)
        took = time.perf_counter() - t0
        if out.returncode not in (0, 1):
            raise SystemExit(f"{argv[0]}: exit {out.returncode}: {out.stderr.strip()}")
        return took
    fwgate = [FWGATE, "--netns", ns, "conflicts", "--json"]
    # nft has no --netns: `ip netns exec` costs its own start, so measure it alone too
    nft, enter = ["ip", "netns", "exec", ns, "nft", "-s", "list", "ruleset"], \
        ["ip", "netns", "exec", ns, "true"]
    ours, theirs, entering = [], [], []
    timed(fwgate), timed(nft)   # warm the page cache for both
    for _ in range(runs):
        ours.append(timed(fwgate))
        theirs.append(timed(nft))
        entering.append(timed(enter))
    nft_ms = statistics.median(theirs) - statistics.median(entering)
    fwgate_ms = statistics.median(ours)
    return {"process_runs": runs, "fwgate_conflicts_ms": round(fwgate_ms * 1000, 1),
            "nft_list_ms": round(nft_ms * 1000, 1),
            "netns_exec_ms": round(statistics.median(entering) * 1000, 1),
            "process_per_nft": round(fwgate_ms / nft_ms, 2)}


def measure(rules: int, runs: int) -> dict:
    from fwgate.adapters.nfsock import NfSocket
    from fwgate.adapters.nft import snapshot
    from fwgate.marks import find_conflicts
    from fwgate.marks.model import _DECODED as decoded

    def run():
        dumps, analyses = [], []
        decoded.clear()   # the first analysis starts cold, as in a fresh guard
        with NfSocket() as sock:
            for _ in range(6):
                t0 = time.perf_counter()
                snap = snapshot(sock, families=("ip", "ip6", "inet"))
                t1 = time.perf_counter()
                found = find_conflicts(snap)
                t2 = time.perf_counter()
                dumps.append(t1 - t0)
                analyses.append(t2 - t1)
        return sum(len(t.rules) for t in snap.tables.values()), found, dumps, analyses

    with throwaway("fwmarks") as ns:
        pods, services = rules * 6 // 10 // 10, rules * 4 // 10 // 5
        sh("ip", "netns", "exec", ns, "iptables-restore", input=kube_router_filter(pods))
        sh("ip", "netns", "exec", ns, "iptables-restore", "-n", input=kube_proxy_nat(services))
        sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=MARKS_NETBIRD)
        total, found, dumps, analyses = call_in(ns, run)
        processes = whole_processes(ns, runs)
    dump, cold, warm = statistics.median(dumps), analyses[0], statistics.median(analyses[1:])
    return {"rules": total, "conflicts": len(found),
            "pairs": sorted({f"{c.writer.owner} -> {c.reader.owner}" for c in found}),
            "dump_ms": round(dump * 1000, 1), "cold_ms": round(cold * 1000, 1),
            "warm_ms": round(warm * 1000, 1),
            "cold_per_dump": round(cold / dump, 2), "warm_per_dump": round(warm / dump, 2),
            **processes}


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--rules", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    needs_root()
    result = measure(2000 if args.quick else args.rules, 3 if args.quick else args.runs)
    print(result, flush=True)
    save(args, "marks_speed", result, [AFTER])
    return 0


if __name__ == "__main__":
    sys.exit(main())
