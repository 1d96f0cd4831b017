"""The loop people write instead of fwgate, as a process of its own so that its
footprint can be measured like fwgate's: every `--interval` seconds list the
ruleset with `nft -s list ruleset`, call it settled once the listing has not
changed for `--settle` seconds and Netbird's rules are there, then send READY=1
(to NOTIFY_SOCKET, like fwgate; STATUS= after every poll).

    ip netns exec NS python bench/poller.py [--settle 5] [--interval 1]

On stderr: `FIRST_PROBE <monotonic>` as it starts its first poll, and on exit the
peak resident memory of its nft children (KiB).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import time


def notify(text: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(text.encode(), "\0" + address[1:] if address.startswith("@") else address)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    previous, changed_at = None, time.monotonic()
    print(f"FIRST_PROBE {changed_at:.6f}", file=sys.stderr, flush=True)
    try:
        while True:
            now = time.monotonic()
            listing = subprocess.run(["nft", "-s", "list", "ruleset"], capture_output=True,
                                     text=True).stdout
            digest = hashlib.sha256(listing.encode()).hexdigest()
            if digest != previous:
                previous, changed_at = digest, now
            present = "table ip netbird" in listing and 'iifname "wt0"' in listing
            quiet = now - changed_at
            if present and quiet >= args.settle:
                notify(f"READY=1\nSTATUS=settled after {quiet:.1f}s")
                return 0
            notify(f"STATUS=polling: quiet {quiet:.1f}s of {args.settle:g}s")
            time.sleep(args.interval)
    finally:
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(json.dumps({"children_maxrss_kib": peak}), file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
