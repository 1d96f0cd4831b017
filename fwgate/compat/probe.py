"""The compat probe in one call, for the CLI and the gate: snapshot → analyse →
(optionally) ask a real iptables binary too."""
from __future__ import annotations

from ..adapters.nfnl import NfSocket
from ..adapters.nft import snapshot
from ..model import Snapshot
from .analyser import CompatReport, analyse, report_json
from .iptables import compare, cross_check, managed, verdict_json

# Families iptables-nft writes to: iptables, ip6tables, arptables, ebtables.
COMPAT_FAMILIES = ("ip", "ip6", "arp", "bridge")


def take_report(sock: NfSocket) -> tuple[Snapshot, CompatReport]:
    snap = snapshot(sock, families=COMPAT_FAMILIES)
    return snap, analyse(snap)


def probe_json(sock: NfSocket, iptables: str | None = None, netns: str | None = None) -> dict:
    """DESIGN section 3's `fwgate compat --json` object; with an iptables binary (see
    iptables.find_iptables) also its verdict and where it disagrees, under "iptables".
    `netns` is where that binary runs (the namespace `sock` lives in)."""
    snap, report = take_report(sock)
    out = report_json(report)
    if iptables:
        verdict = cross_check(iptables, netns, managed(snap.tables, report))
        out["iptables"] = verdict_json(verdict, compare(report, verdict))
    return out
