"""The compat probe's decisions on one snapshot, for `check`, `compat`, `repair`, the
gate and the guard: read it (for each iptables version k3s runs), plan the repairs,
find Netbird's dead copies; then say what the attempt came to. Pure: the snapshot, the
batch and the binaries are fwgate.adapters.probe's; whether to try again after the
kernel refused the batch is the one retry policy's (fwgate.core.retry)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..marks import find_conflicts
from ..model import Snapshot
from ..netbird import NetbirdRules, survey
from .binaries import Binary
from .crosscheck import CrossCheck
from .impact import Setup
from .policy import ProbeResult
from .reader import CompatReport, analyse
from .repair import Repair, plan_repairs

# Families iptables-nft writes to: iptables, ip6tables, arptables, ebtables.
COMPAT_FAMILIES = ("ip", "ip6", "arp", "bridge")
# ... and the ones packet marks are set and tested in (fwgate.marks).
PROBE_FAMILIES = COMPAT_FAMILIES + ("inet",)


@dataclass(frozen=True)
class Look:
    """What one snapshot shows: the reader's report, the repairs planned (with `repair`),
    Netbird's accept rules and, with `repair`, their dead copies to delete."""
    snapshot: Snapshot
    report: CompatReport
    plan: tuple[Repair, ...]
    netbird: NetbirdRules
    dead: tuple = ()

    @property
    def writes(self) -> bool:
        """Something to commit (unless it is a dry run)."""
        return bool(self.plan or self.dead)

    def report_after(self, dry_run: bool) -> CompatReport:
        """The findings left once the batch is in: what the binaries will see."""
        return self.report.without(r.rule for r in self.plan) if self.plan and not dry_run \
            else self.report


def look(snap: Snapshot, profiles, setup: Setup, *, repair: bool,
         ifaces: frozenset[str]) -> Look:
    report = analyse(snap, profiles, setup)
    plan = tuple(plan_repairs(snap, report)) if repair else ()
    netbird = survey(snap, ifaces)
    return Look(snap, report, plan, netbird, netbird.dead if repair else ())


def outcome(seen: Look, *, dry_run: bool, binaries: tuple[Binary, ...], notes: tuple[str, ...],
            setup: Setup, marks: bool, outside=None, attempt: int = 1) -> ProbeResult:
    """The attempt went through (its batch committed, or there was none, or a dry run).
    `outside`: the marks outside nf_tables (fwgate.marks.routing.Outside), if read."""
    netbird = seen.netbird
    removed = () if dry_run else seen.dead
    if removed:  # what is left of the copies once the dead ones are gone
        netbird = replace(netbird, untagged_copies=max(0, netbird.untagged_copies -
                                                       len(removed)), dead=())
    return ProbeResult(seen.report, seen.snapshot.genid, () if dry_run else seen.plan, (),
                       planned=seen.plan, netbird=netbird, attempts=attempt, removed=removed,
                       binaries=binaries, notes=notes,
                       conflicts=mark_conflicts(seen.snapshot, outside) if marks else (),
                       setup=setup)


def refused(seen: Look, *, binaries: tuple[Binary, ...], notes: tuple[str, ...],
            attempt: int = 1) -> ProbeResult:
    """The kernel refused the batch: the ruleset moved since the snapshot; nothing changed."""
    return ProbeResult(seen.report, seen.snapshot.genid, conflict=True, netbird=seen.netbird,
                       attempts=attempt, binaries=binaries, notes=notes)


def mark_conflicts(snap: Snapshot, outside=None) -> tuple:
    """Packet-mark conflicts in the tables marks live in (a full snapshot of them) and,
    when given, the routing rules and marked sockets outside nf_tables."""
    return find_conflicts(Snapshot(snap.genid, {ref: t for ref, t in snap.tables.items()
                                                if ref.family in ("ip", "ip6", "inet")}),
                          outside)


def checks_moved(checks: Iterable[CrossCheck]) -> tuple[CrossCheck, ...]:
    """The ruleset changed while the binaries ran: what they said is not comparable."""
    return tuple(replace(c, verdict=replace(c.verdict, moved=True), disagreements=())
                 for c in checks)
