"""Gate overhead: READY time minus (last relevant rule change + settle).

fwgate against a 1-second `nft list` polling loop doing the same job, on the
same Netbird-like bursts, each run in a fresh network namespace.

    .venv/bin/python bench/gate_overhead.py [--runs 15] [--settle 1] [--write bench/README.md]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FWGATE = os.path.join(os.path.dirname(sys.executable), "fwgate")
CONFIG = """settle: {settle}s
timeout: 60s
watch: [ip netbird, ip filter]
stages:
  - name: tunnel
    link: wt0
  - name: rules
    rules:
      - table: ip netbird
      - chain: ip filter FORWARD
        iifname: wt0
compat:
  on_incompatible: warn
  iptables: none
"""


def sh(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True)


class Netns:
    def __enter__(self) -> str:
        self.name = f"fwbench-{uuid.uuid4().hex[:8]}"
        sh("ip", "netns", "add", self.name)
        sh("ip", "netns", "exec", self.name, "ip", "link", "add", "wt0", "type", "veth",
           "peer", "name", "wt0p")
        for link in ("wt0p", "wt0"):
            sh("ip", "netns", "exec", self.name, "ip", "link", "set", link, "up")
        return self.name

    def __exit__(self, *exc) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)


def program(netns: str, pause: float) -> float:
    """Run the Netbird-like bursts; the monotonic time of the last change."""
    out = sh(sys.executable, "-m", "fwgate.programmer", "--netns", netns, "--pause", str(pause))
    return float(out.stdout.split()[-2])


def fwgate_run(netns: str, settle: float, pause: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "fwgate.yaml")
        with open(config, "w") as fh:
            fh.write(CONFIG.format(settle=settle))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(os.path.join(tmp, "notify"))
        env = dict(os.environ, NOTIFY_SOCKET=os.path.join(tmp, "notify"))
        gate = subprocess.Popen([FWGATE, "--config", config, "--netns", netns, "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ready: list[float] = []

        def listen() -> None:
            while True:
                data = sock.recv(4096)
                if b"READY=1" in data.split(b"\n"):
                    ready.append(time.monotonic())
                    return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        time.sleep(0.3)  # the gate is up and waiting, as at boot
        last = program(netns, pause)
        listener.join(60)
        gate.wait(10)
        sock.close()
        if not ready:
            raise RuntimeError(f"fwgate sent no READY: {gate.stderr.read().decode()}")
        return ready[0] - (last + settle)


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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def private_runtime_dir() -> None:
    """Point fwgate's RUNTIME_DIRECTORY (state files) at a temp dir removed at exit."""
    import atexit
    path = tempfile.mkdtemp(prefix="fwgate-bench-run-")
    os.environ["RUNTIME_DIRECTORY"] = path
    atexit.register(shutil.rmtree, path, True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--pause", type=float, default=0.3, help="between the programmer's bursts")
    parser.add_argument("--write", metavar="FILE", help="replace the results section of FILE")
    args = parser.parse_args()
    # fwgate's state files go to a directory of ours, removed at exit, not /run/fwgate.
    private_runtime_dir()
    if os.geteuid() != 0:
        print("bench: run as root (it creates network namespaces)", file=sys.stderr)
        return 4
    samples: dict[str, list[float]] = {"fwgate": [], "1 s nft-list polling": []}
    for i in range(args.runs):
        for name, runner in (("fwgate", fwgate_run), ("1 s nft-list polling", poll_run)):
            with Netns() as netns:
                samples[name].append(runner(netns, args.settle, args.pause) * 1000)
        print(f"run {i + 1}/{args.runs}: fwgate {samples['fwgate'][-1]:.1f} ms, "
              f"polling {samples['1 s nft-list polling'][-1]:.1f} ms", flush=True)
    table = render(samples, args.runs, args.settle, args.pause)
    print()
    print(table)
    if args.write:
        _replace_section(args.write, table)
    return 0


def render(samples: dict[str, list[float]], runs: int, settle: float, pause: float) -> str:
    rows = [f"| {name} | {statistics.median(v):.1f} | {percentile(v, 0.95):.1f} | "
            f"{min(v):.1f} | {max(v):.1f} |" for name, v in samples.items()]
    ratio = statistics.median(samples["1 s nft-list polling"]) / max(statistics.median(samples["fwgate"]), 1e-3)
    return "\n".join([
        f"Gate overhead = READY − (last rule change + settle), {runs} runs each, "
        f"settle {settle:g} s, bursts {pause:g} s apart, measured "
        f"{time.strftime('%Y-%m-%d')} on this machine: "
        f"{os.cpu_count()} cores, kernel {platform.release()}, Python {platform.python_version()}.",
        "",
        "| method | median ms | p95 ms | min ms | max ms |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Polling's median overhead is {ratio:.0f}× fwgate's. Targets: fwgate's median under "
        f"20 ms, p95 under 50 ms.",
    ])


def _replace_section(path: str, table: str) -> None:
    begin, end = "<!-- gate-overhead:begin -->", "<!-- gate-overhead:end -->"
    text = open(path).read()
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as fh:
        fh.write(f"{head}{begin}\n{table}\n{end}{tail}")


if __name__ == "__main__":
    sys.exit(main())
