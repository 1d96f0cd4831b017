"""The one compat probe, for `check`, `compat`, `repair`, the gate and the guard:
snapshot once, read, repair (one batch, guarded by the snapshot's generation),
cross-check with real iptables binaries. The I/O edge of the compat package;
the decisions are reader, repair and policy's."""
from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass

from ..adapters.iptables import cross_check
from ..adapters.nfsock import NetlinkError, NfSocket
from ..adapters.nft import snapshot
from ..model import Snapshot
from ..netbird import survey
from .crosscheck import CrossCheck, managed
from .policy import ProbeResult
from .reader import analyse
from .repair import Repair, batch_messages, plan_repairs

# Families iptables-nft writes to: iptables, ip6tables, arptables, ebtables.
COMPAT_FAMILIES = ("ip", "ip6", "arp", "bridge")
ATTEMPTS = 5


@dataclass(frozen=True)
class Probed:
    """A ProbeResult and the snapshot it was taken on (for the command bodies)."""
    result: ProbeResult
    snapshot: Snapshot


def commit_repairs(sock: NfSocket, repairs: Iterable[Repair], genid: int) -> int | None:
    """Commit repairs in one batch if the ruleset is still at `genid`. Returns the
    generation the batch produced, or None when the kernel refused it (ERESTART)."""
    try:
        sock.batch(batch_messages(repairs), genid=genid)
    except NetlinkError as exc:
        if exc.errno == errno.ERESTART:
            return None
        raise
    return genid + 1  # guarded: nothing else committed in between


def probe(sock: NfSocket, *, repair: bool = False, dry_run: bool = False,
          binaries: Iterable[str] = (), netns: str | None = None,
          ifaces: frozenset[str] = frozenset({"wt0"}), attempts: int = ATTEMPTS) -> Probed:
    """Snapshot, read, repair (unless dry_run), cross-check. `binaries` run inside `netns`
    (the namespace `sock` lives in). A repair refused on every attempt comes back as
    conflict=True, with nothing changed."""
    binaries = tuple(binaries)
    for attempt in range(1, attempts + 1):
        snap = snapshot(sock, families=COMPAT_FAMILIES)
        report = analyse(snap)
        plan = tuple(plan_repairs(snap, report)) if repair else ()
        if plan and not dry_run and commit_repairs(sock, plan, snap.genid) is None:
            continue  # something committed since the snapshot: look again
        # The binaries see the ruleset as it is now: after the repair.
        now_report = report.without(r.rule for r in plan) if plan and not dry_run else report
        checks = tuple(CrossCheck.of(now_report, cross_check(b, netns, managed(snap.tables, report)))
                       for b in binaries)
        return Probed(ProbeResult(report, snap.genid, () if dry_run else plan, checks,
                                  planned=plan, netbird=survey(snap, ifaces), attempts=attempt),
                      snap)
    return Probed(ProbeResult(report, snap.genid, conflict=True, netbird=survey(snap, ifaces),
                              attempts=attempts), snap)
