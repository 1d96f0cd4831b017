"""Gate overhead: READY time minus (last relevant rule change + settle).

The real `fwgate run` (each version's own CLI, in a namespace, with a notify socket)
against a 1-second `nft list` polling loop doing the same job, on the same Netbird-like
bursts (fwgate.programmer), each run in a fresh network namespace.

    .venv/bin/python bench/gate_overhead.py [--runs 15] [--settle 1] [--before CHECKOUT] [--quick]

Writes results/gate_overhead.json.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    PYTHON, Netns, Version, Watched, arguments, gate_config, needs_root, private_runtime_dir,
    save, sh, versions,
)

POLLING = "1 s nft-list polling"


def program(netns: str, pause: float) -> float:
    """Run the Netbird-like bursts (into iptables' filter table too, as on a node where
    iptables is in use at boot); the monotonic time of the last change."""
    out = sh(PYTHON, "-m", "fwgate.programmer", "--netns", netns, "--pause", str(pause),
             "--with-filter-table")
    return float(out.stdout.split()[-2])


def fwgate_run(v: Version, netns: str, settle: float, pause: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        config = gate_config(tmp, settle, timeout=60, link=True)
        gate = Watched([v.fwgate, "--config", config, "--netns", netns, "run"], tmp)
        time.sleep(0.3)  # the gate is up and waiting, as at boot
        last = program(netns, pause)
        ready = gate.first("READY=1", 60)
        gate.finish(10)
        if ready is None:
            raise RuntimeError(f"fwgate ({v.label}) sent no READY: {gate.err[-2000:]}")
        return ready - (last + settle)


def poll_run(netns: str, settle: float, pause: float, interval: float = 1.0) -> float:
    """What people write instead: list the tables every second, ready once the
    listing has not changed for `settle` and the rules are there."""
    result: list[float] = []

    def poller() -> None:
        previous, changed_at = None, time.monotonic()
        while True:
            now = time.monotonic()
            listing = subprocess.run(["ip", "netns", "exec", netns, "nft", "-s", "list", "ruleset"],
                                     capture_output=True, text=True).stdout
            digest = hashlib.sha256(listing.encode()).hexdigest()
            if digest != previous:
                previous, changed_at = digest, now
            ready = "table ip netbird" in listing and 'iifname "wt0"' in listing
            if ready and now - changed_at >= settle:
                result.append(now)
                return
            time.sleep(interval)

    thread = threading.Thread(target=poller, daemon=True)
    thread.start()
    time.sleep(0.3)
    last = program(netns, pause)
    thread.join(60)
    return result[0] - (last + settle)


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--pause", type=float, default=0.3, help="between the programmer's bursts")
    args = parser.parse_args()
    needs_root()
    private_runtime_dir()  # fwgate's state files go to a temp dir, not /run/fwgate
    runs = 2 if args.quick else args.runs
    vs = versions(args.before)
    methods = {v.label: (lambda ns, v=v: fwgate_run(v, ns, args.settle, args.pause)) for v in vs}
    methods[POLLING] = lambda ns: poll_run(ns, args.settle, args.pause)
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for i in range(runs):
        order = list(methods) if i % 2 == 0 else list(methods)[::-1]
        for name in order:
            with Netns("fwgo") as netns:
                samples[name].append(methods[name](netns) * 1000)
        print(f"run {i + 1}/{runs}: " + ", ".join(f"{n} {s[-1]:.1f} ms" for n, s in samples.items()),
              flush=True)
    save(args, "gate_overhead", {"settle_s": args.settle, "pause_s": args.pause, "runs": runs,
                                 "overhead_ms": samples}, vs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
