"""The exposure window: how long an unparsable rule lives before the guard replaces it.

    .venv/bin/python bench/exposure.py [--reinits 1000] [--rules 10000] [--quick]

In a namespace it makes: an `ip filter` table of k3s's size (kube-router and
kube-proxy rules, from iptables-restore), an `ip6 filter` one, `fwgate guard` on
the shipped config, then Netbird-like firewall re-inits (fwgate.programmer
--reinit: close, then Netbird's bursts with its native rules in both filter
tables). A third process listens to nf_tables events and stamps each
transaction as it is read: exposure = the commit that added a rule iptables-nft
cannot parse, to the commit that deleted it (fwgate's repair: it replaces the rule
in one transaction). Both stamps come from the same listener on the same clock,
so the delivery delay cancels out. The goal (issue 11): p95 <= 50 ms, ip and ip6.

Writes results/exposure-<N>k.json (N: thousands of ip filter rules). --before is
accepted and ignored: older code has no guard.
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
    AFTER, FWGATE, PYTHON, ROOT, Netns, arguments, filter_table, needs_root, percentile,
    private_runtime_dir, save, sh,
)

from fwgate.adapters.netns import enter  # noqa: E402
from fwgate.adapters.nfsock import NfSocket  # noqa: E402
from fwgate.netlink.consts import NFNLGRP_NFTABLES  # noqa: E402
from fwgate.netlink.nftables import decode_events  # noqa: E402
from fwgate.netbird import TAGS  # noqa: E402

CONFIG = os.path.join(ROOT, "config", "fwgate.yaml")  # the shipped defaults, unedited
CT_TAG = b"frwacceptoif"  # the rule iptables-nft cannot parse (ct state)


class Listener(threading.Thread):
    """Stamps every transaction as read: (time, kind, family, handle, portid, tag)."""

    def __init__(self, netns: str):
        super().__init__(daemon=True)
        self.netns, self.seen, self.ready = netns, [], threading.Event()
        self.stop = False

    def run(self) -> None:
        enter(self.netns)
        with NfSocket(groups=(NFNLGRP_NFTABLES,), rcvbuf=32 << 20) as sock:
            sock.sock.settimeout(0.2)
            self.ready.set()
            while not self.stop:
                try:
                    messages = sock.recv_messages()
                except socket.timeout:
                    continue
                now = time.monotonic()
                for e in decode_events(messages):
                    if e.kind in ("NEWRULE", "DELRULE") and e.rule is not None \
                            and e.rule.table == "filter":
                        tag = bytes(e.rule.userdata) if e.rule.userdata else None
                        self.seen.append((now, e.kind, e.rule.family, e.rule.handle, e.portid,
                                          tag, "ct" in e.rule.expr_names))


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass


def ip6_filter_table(n_rules: int) -> str:
    """A dual-stack node's ip6 filter: kube-router's jumps and per-pod rules, kube-proxy's
    conntrack rules (which keep IPv6 conntrack in use, as on a real node)."""
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":KUBE-ROUTER-FORWARD - [0:0]", ":KUBE-FORWARD - [0:0]",
             '-A FORWARD -m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" '
             "-j KUBE-ROUTER-FORWARD",
             '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
             "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
             '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
             "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
    for i in range(n_rules):
        lines.append(f'-A KUBE-ROUTER-FORWARD -d fd00:10:42::{i:x}/128 -m comment --comment '
                     f'"rule to permit the traffic to pods {i}" -m mark --mark 0x10000/0x10000 '
                     f"-j ACCEPT")
    return "\n".join(lines + ["COMMIT", ""])


def exposures(seen: list[tuple], guard_ports: set[int]) -> dict[str, list[float]]:
    """Per family: seconds from each unparsable rule's NEWRULE to the DELRULE by fwgate."""
    added: dict[tuple[str, int], float] = {}
    out: dict[str, list[float]] = {"ip": [], "ip6": []}
    never = 0
    for at, kind, family, handle, portid, tag, has_ct in seen:
        if kind == "NEWRULE" and has_ct and tag == CT_TAG:
            added[(family, handle)] = at
        elif kind == "DELRULE" and (family, handle) in added:
            start = added.pop((family, handle))
            if portid in guard_ports:
                out[family].append(at - start)
            else:
                never += 1  # Netbird deleted it first: fwgate never got to it
    out["unrepaired"] = [float(never + len(added))]
    return out


def run(reinits: int, rules: int, every: float) -> dict:
    with Netns("fwexpose") as ns, tempfile.TemporaryDirectory(prefix="fwexpose-") as notify_dir:
        sh("ip", "netns", "exec", ns, "iptables-restore", input=filter_table(rules))
        sh("ip", "netns", "exec", ns, "ip6tables-restore", input=ip6_filter_table(rules // 10))
        listener = Listener(ns)
        listener.start()
        listener.ready.wait()
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(os.path.join(notify_dir, "notify"))
        env = dict(os.environ, NOTIFY_SOCKET=os.path.join(notify_dir, "notify"),
                   RUNTIME_DIRECTORY=private_runtime_dir())
        env.pop("JOURNAL_STREAM", None)
        log = open(os.path.join(notify_dir, "guard.log"), "w+")  # never a full pipe
        guard = subprocess.Popen([FWGATE, "--config", CONFIG, "--netns", ns, "guard"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            notify.settimeout(60)
            while b"READY=1" not in notify.recv(4096):
                pass
            # Keep reading, as systemd does: STATUS= comes with every check.
            threading.Thread(target=_drain, args=(notify,), daemon=True).start()
            started = time.monotonic()
            agent = subprocess.run([PYTHON, "-m", "fwgate.programmer", "--netns", ns, "--ip6",
                                    "--pause", "0", "--reinit", str(reinits), "--every",
                                    str(every)], capture_output=True, text=True,
                                   timeout=reinits * (every + 5) + 60)
            if agent.returncode:
                raise RuntimeError(f"the Netbird-like agent failed:\n{agent.stderr[-3000:]}")
            took = time.monotonic() - started
            time.sleep(1.0)  # the last repairs' events
        finally:
            guard.send_signal(signal.SIGTERM)
            guard.wait(timeout=30)
            log.seek(0)
            err = log.read()
            log.close()
            listener.stop = True
            listener.join()
            notify.close()
        # fwgate's own transactions: ports that deleted a tagged rule and are not Netbird's.
        netbird_ports = {p for _, k, _, _, p, tag, ct in listener.seen if k == "NEWRULE" and ct}
        guard_ports = {p for _, k, _, _, p, tag, _ in listener.seen
                       if k == "DELRULE" and tag in TAGS} - netbird_ports
        found = exposures(listener.seen, guard_ports)
    result = {"reinits": reinits, "rules": rules, "ip6_rules": rules // 10, "every_s": every,
              "took_s": round(took, 1), "unrepaired": int(found["unrepaired"][0])}
    for family in ("ip", "ip6"):
        ms = [x * 1000 for x in found[family]]
        result[family] = {"n": len(ms), "p50_ms": round(percentile(ms, 0.5), 2),
                          "p95_ms": round(percentile(ms, 0.95), 2),
                          "max_ms": round(max(ms), 2),
                          "samples_ms": [round(x, 3) for x in ms]} if ms else {"n": 0}
    if "Traceback" in err:
        raise RuntimeError(f"fwgate guard failed:\n{err[-2000:]}")
    return result


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--reinits", type=int, default=1000)
    parser.add_argument("--rules", type=int, default=10000, help="ip filter rules around it")
    parser.add_argument("--every", type=float, default=0.25, help="seconds between re-inits")
    args = parser.parse_args()
    needs_root()
    if args.quick:
        args.reinits, args.rules = 20, 1000
    result = run(args.reinits, args.rules, args.every)
    print(json.dumps({k: v for k, v in result.items() if k not in ("ip", "ip6")}))
    for family in ("ip", "ip6"):
        print(family, {k: v for k, v in result[family].items() if k != "samples_ms"})
    save(args, f"exposure-{args.rules // 1000}k", result, [AFTER])
    return 0


if __name__ == "__main__":
    sys.exit(main())
