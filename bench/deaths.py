"""k3s deaths per Netbird re-init: repair alone against prevention.

    .venv/bin/python bench/deaths.py [--reinits 50] [--rules 0,10000,50000] [--quick]

In a namespace it makes: an `ip filter` table of k3s's size (kube-router and
kube-proxy rules, from iptables-restore), `fwgate guard` on the shipped config,
and a loop running kube-router's two fatal calls (`iptables -t filter -C FORWARD
<its jump>`, `iptables -t filter -S FORWARD`; DESIGN 1b) back to back, as fast as
they go. Then Netbird-like firewall re-inits (fwgate.programmer --reinit), `every`
seconds apart, two ways:

- repair: the agent finds no iptables on its PATH and writes its native ct rule,
  which the guard re-encodes as soon as it reads the event;
- prevention: the agent finds an nf_tables iptables on its PATH (as a node where the
  package's Recommends: brought Debian's iptables) and writes through it.

A re-init counts as a death when any fatal call that ended within `every` seconds
after the re-init's close failed as kube-router dies on it. Writes
results/deaths.json.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    AFTER, FWGATE, PYTHON, ROOT, Netns, arguments, filter_table, needs_root,
    private_runtime_dir, save, sh,
)

CONFIG = os.path.join(ROOT, "config", "fwgate.yaml")  # the shipped defaults, unedited
JUMP = ["-m", "comment", "--comment", "kube-router netpol - TEMCG2JMHZYE7H7T",
        "-j", "KUBE-ROUTER-FORWARD"]
# A node with kube-router's jump and nothing else ("0 rules").
MINIMAL = "\n".join(["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]",
                     ":OUTPUT ACCEPT [0:0]", ":KUBE-ROUTER-FORWARD - [0:0]",
                     "-A FORWARD " + " ".join(f'"{a}"' if " " in a else a for a in JUMP),
                     "COMMIT", ""])


class KubeRouterLoop(threading.Thread):
    """kube-router's fatal calls at full speed; (end time, call, fatal) for each."""

    def __init__(self, netns: str):
        super().__init__(daemon=True)
        self.netns, self.calls, self.stop = netns, [], False

    def run(self) -> None:
        base = ["ip", "netns", "exec", self.netns, "iptables", "-t", "filter"]
        while not self.stop:
            for call in (["-C", "FORWARD", *JUMP], ["-S", "FORWARD"]):
                done = subprocess.run(base + call, capture_output=True, text=True)
                # As kube-router judges them: -C may say "no such rule" (exit 1), nothing else.
                fatal = done.returncode != 0 and not (
                    call[0] == "-C" and done.returncode == 1
                    and "does a matching rule exist" in done.stderr)
                self.calls.append((time.monotonic(), call[0], fatal))


WATCHDOG_SEC = 6.0  # fwgate-guard.service's WatchdogSec=


def _drain(sock: socket.socket, pings: list[float]) -> None:
    """Read the notify socket as systemd does; stamp each WATCHDOG=1."""
    try:
        while (message := sock.recv(4096)):
            if b"WATCHDOG=1" in message:
                pings.append(time.monotonic())
    except OSError:
        pass


def run(rules: int, reinits: int, every: float, prevented: bool) -> dict:
    with Netns("fwdeaths") as ns, tempfile.TemporaryDirectory(prefix="fwdeaths-") as tmp:
        sh("ip", "netns", "exec", ns, "iptables-restore",
           input=filter_table(rules) if rules else MINIMAL)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(os.path.join(tmp, "notify"))
        env = dict(os.environ, NOTIFY_SOCKET=os.path.join(tmp, "notify"),
                   RUNTIME_DIRECTORY=private_runtime_dir(),
                   WATCHDOG_USEC=str(int(WATCHDOG_SEC * 1e6)))
        env.pop("JOURNAL_STREAM", None)
        log = open(os.path.join(tmp, "guard.log"), "w+")
        guard = subprocess.Popen([FWGATE, "--config", CONFIG, "--netns", ns, "guard"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=log, text=True)
        loop = KubeRouterLoop(ns)
        try:
            notify.settimeout(120)
            while b"READY=1" not in notify.recv(4096):
                pass
            pings: list[float] = []
            threading.Thread(target=_drain, args=(notify, pings), daemon=True).start()
            loop.start()
            agent = [PYTHON, "-m", "fwgate.programmer", "--netns", ns, "--pause", "0",
                     "--reinit", str(reinits), "--every", str(every)]
            # Without prevention the agent finds no iptables: a PATH without one.
            agent_env = dict(os.environ, PATH="/usr/sbin:/usr/bin" if prevented else "/nonexistent")
            done = subprocess.run(agent + (["--iptables-from-path"] if prevented else []),
                                  capture_output=True, text=True, env=agent_env,
                                  timeout=reinits * (every + 10) + 120)
            if done.returncode:
                raise RuntimeError(f"the Netbird-like agent failed:\n{done.stderr[-3000:]}")
            time.sleep(every)
        finally:
            loop.stop = True
            loop.join(timeout=60)
            guard.send_signal(signal.SIGTERM)
            guard.wait(timeout=30)
            log.seek(0)
            err = log.read()
            log.close()
            notify.close()
        repairs = err.count("repaired ip filter")
    stamps = [float(line.split()[0]) for line in done.stdout.splitlines() if line.endswith("reinit")]
    fatal = [t for t, _, bad in loop.calls if bad]
    deaths = sum(1 for t in stamps if any(t - every / 2 <= f < t + every / 2 for f in fatal))
    # Would systemd's watchdog have killed a busy guard? The longest silence between pings.
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    return {"rules": rules, "prevented": prevented, "reinits": len(stamps), "every_s": every,
            "calls": len(loop.calls), "fatal_calls": len(fatal), "deaths": deaths,
            "deaths_per_reinit": round(deaths / max(1, len(stamps)), 3), "repairs": repairs,
            "watchdog_pings": len(pings), "watchdog_max_gap_s": round(max(gaps), 3) if gaps else None,
            "watchdog_sec": WATCHDOG_SEC}


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--reinits", type=int, default=50)
    parser.add_argument("--rules", default="0,10000,50000", help="ip filter sizes, comma-separated")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between re-inits")
    args = parser.parse_args()
    needs_root()
    sizes = [int(x) for x in args.rules.split(",")]
    if args.quick:
        args.reinits, sizes = 5, [0]
    results = []
    for rules in sizes:
        for prevented in (False, True):
            found = run(rules, args.reinits, args.every, prevented)
            print(json.dumps(found), flush=True)
            results.append(found)
    save(args, "deaths", {"runs": results}, [AFTER])
    return 0


if __name__ == "__main__":
    sys.exit(main())
