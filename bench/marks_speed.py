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

NETBIRD = """table ip netbird {
  chain netbird-mangle-prerouting {
    type filter hook prerouting priority mangle; policy accept;
    iifname "wt0" ct state new meta mark set 0x1bd20
  }
  chain netbird-acl-forward-filter {
    type filter hook forward priority filter; policy accept;
    meta mark 0x1bd20 accept
    iifname "wt0" drop
  }
}
"""


def kube_router_filter(pods: int) -> str:
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":KUBE-ROUTER-FORWARD - [0:0]", ":KUBE-NWPLCY-COMMON - [0:0]"]
    rules = ['-A FORWARD -m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" '
             '-j KUBE-ROUTER-FORWARD',
             '-A KUBE-NWPLCY-COMMON -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT']
    for i in range(pods):
        fw, pol = f"KUBE-POD-FW-{i:016X}", f"KUBE-NWPLCY-{i:016X}"
        pod, peer = f"10.42.{(i >> 8) & 255}.{i & 255}", f"10.43.{(i >> 8) & 255}.{i & 255}"
        name = f'POD name:web-{i} namespace: ns-{i % 97}'
        match = f"-s {peer}/32 -p tcp --dport {8000 + i % 1000}"
        lines += [f":{fw} - [0:0]", f":{pol} - [0:0]"]
        rules += [
            f'-A KUBE-ROUTER-FORWARD -d {pod}/32 -m comment --comment "to {name}" -j {fw}',
            f'-A KUBE-ROUTER-FORWARD -s {pod}/32 -m comment --comment "from {name}" -j {fw}',
            f"-A {fw} -j KUBE-NWPLCY-COMMON",
            f'-A {fw} -d {pod}/32 -m comment --comment "run through nw policy allow-{i}" -j {pol}',
            f'-A {pol} {match} -m comment --comment "ACCEPT from peers of allow-{i}" '
            f"-j MARK --set-xmark 0x10000/0x10000",
            f'-A {pol} {match} -m comment --comment "ACCEPT from peers of allow-{i}" '
            f"-m mark --mark 0x10000/0x10000 -j RETURN",
            f'-A {fw} -m comment --comment "rule to log dropped traffic {name}" '
            f"-m mark ! --mark 0x10000/0x10000 -m limit --limit 10/min -j NFLOG --nflog-group 100",
            f'-A {fw} -m comment --comment "rule to REJECT traffic destined for {name}" '
            f"-m mark ! --mark 0x10000/0x10000 -j REJECT",
            f"-A {fw} -j MARK --set-xmark 0x0/0x10000",
            f'-A {fw} -m comment --comment "set mark to ACCEPT traffic that comply to network '
            f'policies" -j MARK --set-xmark 0x20000/0x20000']
    rules.append('-A KUBE-ROUTER-FORWARD -m mark --mark 0x20000/0x20000 -j ACCEPT')
    return "\n".join(lines + rules + ["COMMIT", ""])


def kube_proxy_nat(services: int) -> str:
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":POSTROUTING ACCEPT [0:0]", ":KUBE-SERVICES - [0:0]", ":KUBE-MARK-MASQ - [0:0]"]
    rules = ['-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
             '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
             "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"]
    for i in range(services):
        svc, sep = f"KUBE-SVC-{i:016X}", f"KUBE-SEP-{i:016X}"
        vip, ep = f"10.96.{(i >> 8) & 255}.{i & 255}", f"10.44.{(i >> 8) & 255}.{i & 255}"
        lines += [f":{svc} - [0:0]", f":{sep} - [0:0]"]
        rules += [f'-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment "ns/svc-{i}" '
                  f"-m tcp --dport 80 -j {svc}",
                  f"-A {svc} ! -s 10.42.0.0/16 -d {vip}/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ",
                  f"-A {svc} -j {sep}",
                  f"-A {sep} -s {ep}/32 -j KUBE-MARK-MASQ",
                  f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {ep}:80"]
    return "\n".join(lines + rules + ["COMMIT", ""])


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
        sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=NETBIRD)
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
