"""Footprint while waiting: fwgate (each version, run in the namespace as under systemd,
and with --netns) and the polling loop, side by side in one namespace holding a
10k-rule `ip filter`, through a quiet window: resident memory, CPU, start-up.

    .venv/bin/python bench/footprint.py [--window 60] [--runs 3] [--before CHECKOUT] [--quick]

fwgate runs through bench/fwgate_probe.py of its own checkout (the real CLI plus a line
on stderr at its first nf_tables query). Writes results/footprint.json.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BENCH, PYTHON, Netns, Version, Watched, arguments, build_ruleset, gate_config, median,
    needs_root, private_runtime_dir, save, versions,
)

RULES = 10000
POLLER = "poller"


def argv_for(variant: str, vs: dict[str, Version], netns: str, config: str, settle: float
             ) -> list[str]:
    """variant: 'poller', or '<label>' (in the namespace) or '<label> --netns'."""
    if variant == POLLER:
        return ["ip", "netns", "exec", netns, PYTHON, os.path.join(BENCH, "poller.py"),
                "--settle", str(settle)]
    v = vs[variant.split()[0]]
    probe = [v.python, v.script("fwgate_probe.py"), "--config", config]
    if variant.endswith("--netns"):
        return probe + ["--netns", netns, "run"]
    return ["ip", "netns", "exec", netns, *probe, "run"]


def first_probe(err: str) -> float | None:
    return next((float(l.split()[1]) for l in err.splitlines() if l.startswith("FIRST_PROBE ")),
                None)


def startups(variants: list[str], vs: dict, netns: str, tmp: str, runs: int) -> dict:
    """One at a time: exec → first nf_tables query ('startup'), exec → first STATUS=
    ('probed': sent once the first snapshot of 10k rules is in)."""
    out = {name: {"startup": [], "probed": []} for name in variants}
    config = gate_config(tmp, 3600)
    for i in range(runs):
        for name in (variants if i % 2 == 0 else variants[::-1]):
            w = Watched(argv_for(name, vs, netns, config, 3600), tmp)
            at = w.first("STATUS=", 30)
            w.terminate()
            first = first_probe(w.err)
            if first is not None:
                out[name]["startup"].append(first - w.started)
            if at is not None:
                out[name]["probed"].append(at - w.started)
    return out


def imports(vs: dict, netns: str, tmp: str) -> dict:
    """`python -X importtime` of one real start-up, to its first STATUS: the biggest
    imports (cumulative; top level and their direct children), per version."""
    out = {}
    config = gate_config(tmp, 3600)
    for label, v in vs.items():
        w = Watched(["ip", "netns", "exec", netns, v.python, "-X", "importtime",
                     v.script("fwgate_probe.py"), "--config", config, "run"], tmp)
        w.first("STATUS=", 30)
        w.terminate()
        costs = {}
        for line in w.err.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
            if m and len(m.group(3)) <= 3:
                costs[m.group(4)] = int(m.group(2)) / 1e6
        out[label] = sorted(costs.items(), key=lambda kv: -kv[1])[:10]
    return out


def windows(variants: list[str], vs: dict, netns: str, tmp: str, window: float, runs: int
            ) -> dict:
    """All side by side through a quiet window: RSS sampled every 50 ms (the poller's
    with its running nft child), CPU from /proc from 2 s after the first probe."""
    out = {name: {"rss_median": [], "rss_max": [], "cpu_pct": [], "nft_maxrss": []}
           for name in variants}
    config = gate_config(tmp, window)
    for _ in range(runs):
        gates = {name: Watched(argv_for(name, vs, netns, config, window), tmp) for name in variants}
        begun = [w.first("STATUS=", 60) or time.monotonic() for w in gates.values()]
        time.sleep(max(0.0, max(begun) + 2.0 - time.monotonic()))  # past the first probe
        cpu0 = {name: w.cpu_seconds() for name, w in gates.items()}
        t0 = time.monotonic()
        samples: dict[str, list[int]] = {name: [] for name in gates}
        end = min(begun) + window - 3.0  # stop before the earliest window can end
        while time.monotonic() < end:
            for name, w in gates.items():
                samples[name].append(w.rss_kib())
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        for name, w in gates.items():
            out[name]["cpu_pct"].append(100 * (w.cpu_seconds() - cpu0[name]) / elapsed)
            out[name]["rss_median"].append(median(samples[name]) / 1024)
            out[name]["rss_max"].append(max(samples[name]) / 1024)
        for w in gates.values():
            w.first("READY=1", window + 60)
            w.finish(60)
        peak = next((json.loads(l) for l in gates[POLLER].err.splitlines() if l.startswith("{")),
                    {}).get("children_maxrss_kib")
        if peak:
            out[POLLER]["nft_maxrss"].append(peak / 1024)
        print("window: " + "; ".join(f"{name} {out[name]['rss_max'][-1]:.1f} MB "
                                     f"{out[name]['cpu_pct'][-1]:.3f}% cpu" for name in gates),
              flush=True)
    return out


def interpreter_start() -> float:
    times = []
    for _ in range(7):
        start = time.monotonic()
        subprocess.run([PYTHON, "-c", "pass"], check=True)
        times.append(time.monotonic() - start)
    return median(times)


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--window", type=float, default=60.0, help="the quiet window, seconds")
    parser.add_argument("--runs", type=int, default=3, help="windows")
    parser.add_argument("--startups", type=int, default=9)
    args = parser.parse_args()
    needs_root()
    private_runtime_dir()
    if args.quick:
        args.window, args.runs, args.startups = 10.0, 1, 2
    vs = {v.label: v for v in versions(args.before)}
    variants = [f"{label}{mode}" for label in vs for mode in ("", " --netns")] + [POLLER]
    with Netns("fwfoot") as netns, tempfile.TemporaryDirectory() as tmp:
        build_ruleset(netns, RULES)
        data = {"rules": RULES, "window_s": args.window,
                "startup": startups(variants, vs, netns, tmp, args.startups),
                "imports": imports(vs, netns, tmp),
                "python_start_s": interpreter_start(),
                "waiting": windows(variants, vs, netns, tmp, args.window, args.runs)}
    save(args, "footprint", data, list(vs.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
