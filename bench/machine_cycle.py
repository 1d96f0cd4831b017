"""The machine's own cost of one repair at once, without a kernel (issue 22).

A guarding Machine (`on_incompatible: repair`) is fed what the executor feeds it when
Netbird adds its native rule: NEWRULE + NEWGEN in, RepairRules out, RepairDone in, then
the events of our own batch. The time is the machine's alone (judging the rule,
planning the batch, recording it, publishing the State): the pure part of the exposure
window (bench/exposure.py measures it whole, through the kernel). Each version runs
this file as a child with its own interpreter, alternating.

    .venv/bin/python bench/machine_cycle.py [--cycles 3000] [--runs 5] [--before CHECKOUT]

Issue 22's three passes recorded it with `--out bench/results/shape-v2` (then -v2b, -v2c;
see bench/shape_v2.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = "--child"


def child(cycles: int) -> dict:
    import statistics
    import time

    from fwgate import programmer as P
    from fwgate.compat.policy import ProbeResult
    from fwgate.compat.reader import CompatReport
    from fwgate.config import CompatConfig, Config
    from fwgate.core import actions as A
    from fwgate.core import inputs as I
    from fwgate.core.machine import Machine, Role
    from fwgate.model import Expr, Rule, TableRef
    from fwgate.netlink.exprs import split_expressions
    from fwgate.netlink.nftables import Event

    own, netbird = 77, 5
    table = TableRef("ip", "filter")
    exprs = tuple(Expr(n, d) for n, d in split_expressions(b"".join(P.forward_oif_rule("wt0"))))
    config = Config(settle=5.0, watch=(table,), stages=(), compat=CompatConfig("repair"))
    machine = Machine(config, 0.0, Role.GUARD, own_portids={own})
    machine.start(0.0)
    machine.handle(I.CompatDone(0.0, ProbeResult(CompatReport(), 1)))  # READY: guarding
    genid, now, times = 1, 0.0, []
    for i in range(cycles):
        genid, now = genid + 1, now + 0.001
        rule = Rule("ip", "filter", "FORWARD", 100 + i, -1, exprs, P.TAG_FORWARD_OIF)
        started = time.perf_counter()
        out = machine.handle(I.NftEvents(now, (Event("NEWRULE", table, rule=rule, portid=netbird),
                                               Event("NEWGEN", None, genid, netbird))))
        batch = next(a for a in out if isinstance(a, A.RepairRules))
        machine.handle(I.RepairDone(now, batch.repairs, genid + 1))
        times.append(time.perf_counter() - started)
        genid += 1
        machine.handle(I.NftEvents(now, (Event("NEWRULE", table, portid=own),
                                         Event("DELRULE", table, portid=own),
                                         Event("NEWGEN", None, genid, own))))
    times.sort()
    return {"median_us": statistics.median(times) * 1e6,
            "p95_us": times[int(0.95 * (len(times) - 1))] * 1e6}


def main() -> int:
    if sys.argv[1:2] == [CHILD]:
        print(json.dumps(child(int(sys.argv[2]))))
        return 0
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import arguments, child_json, save, versions
    parser = arguments(__doc__)
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.cycles, args.runs = 200, 1
    vs = versions(args.before)
    runs: dict[str, list[dict]] = {v.label: [] for v in vs}
    for run in range(args.runs):
        for v in vs:  # alternating, each version with its own interpreter and package
            runs[v.label].append(child_json([v.python, os.path.abspath(__file__), CHILD,
                                             str(args.cycles)]))
        print(f"run {run + 1}/{args.runs}: " + ", ".join(
            f"{label} {r[-1]['median_us']:.0f} µs" for label, r in runs.items()), flush=True)
    save(args, "machine_cycle", {"cycles": args.cycles, "runs": runs}, vs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
