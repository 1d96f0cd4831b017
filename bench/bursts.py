"""Bursts: while `fwgate run` waits (settle 3 s, watching `ip filter` and `ip netbird`
over a 10k-rule filter table), bench/burst.py commits 10 000 one-rule transactions in
about a second into `ip netbird`. 'frozen' runs SIGSTOP fwgate for a burst of 60 000, so
the kernel must drop events (ENOBUFS): fwgate must say so, resync, and still settle only
after the last change. Each version's own CLI, alternating, a fresh namespace per run.

    .venv/bin/python bench/bursts.py [--runs 3] [--frozen-runs 2] [--before CHECKOUT] [--quick]

Writes results/bursts.json.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BENCH, PYTHON, Netns, Version, Watched, arguments, build_ruleset, gate_config, needs_root,
    private_runtime_dir, save, sh, versions,
)

SETTLE = 3.0
_CHANGES = re.compile(r"(\d+) changes?")


def burst_run(v: Version, base_rules: int, count: int, frozen: bool) -> dict:
    with Netns("fwburst") as netns, tempfile.TemporaryDirectory() as tmp:
        build_ruleset(netns, base_rules, repair=False)
        burst = ["ip", "netns", "exec", netns, PYTHON, os.path.join(BENCH, "burst.py")]
        sh(*burst, "--prepare")
        w = Watched([v.fwgate, "--config", gate_config(tmp, SETTLE, timeout=300), "--netns",
                     netns, "run"], tmp)
        w.first("STATUS=", 30)
        if frozen:
            w.proc.send_signal(signal.SIGSTOP)
        cpu0 = w.cpu_seconds()
        done = json.loads(sh(*burst, "--count", str(count), "--seconds", str(count / 10000)).stdout)
        if frozen:
            w.proc.send_signal(signal.SIGCONT)
        ready = w.first("READY=1", 300)
        cpu = w.cpu_seconds() - cpu0 if w.proc.poll() is None else None
        code = w.finish(60)
    # fwgate's count of changes, from its STATUS lines; caught up when it stopped moving
    counts = [(at, int(m.group(1))) for at, text in w.statuses()
              for m in [_CHANGES.search(text)] if m]
    final = counts[-1][1] if counts else 0
    caught_up = next((at for at, c in counts if c == final), None)
    r = {"version": v.label, "frozen": frozen, "exit": code, "count": count,
         "burst_s": done["last"] - done["first"], "changes_seen": final,
         "resyncs": w.err.count("overflowed the socket; resyncing"), "ready": ready is not None,
         "ready_after_last_s": (ready - done["last"]) if ready else None,
         "early": ready is not None and ready < done["last"] + SETTLE,
         "lag_s": (caught_up - done["last"]) if caught_up and not frozen else None,
         "cpu_s": cpu, "settle_s": SETTLE}
    if caught_up and not frozen:  # from the first commit until fwgate's count stopped moving
        r["handled_per_s"] = final / max(caught_up - done["first"], 1e-6)
    return r


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frozen-runs", type=int, default=2)
    parser.add_argument("--base-rules", type=int, default=10000)
    args = parser.parse_args()
    needs_root()
    private_runtime_dir()
    if args.quick:
        args.runs, args.frozen_runs, args.base_rules = 1, 1, 1000
    vs = versions(args.before)
    results = []
    for i, frozen in enumerate([False] * args.runs + [True] * args.frozen_runs):
        for v in (vs if i % 2 == 0 else vs[::-1]):
            r = burst_run(v, args.base_rules, 60000 if frozen else 10000, frozen)
            results.append(r)
            print(f"burst: {json.dumps(r)}", flush=True)
    save(args, "bursts", {"base_rules": args.base_rules, "runs": results}, vs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
