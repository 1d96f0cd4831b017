"""The compat probe's I/O: snapshot the ruleset, commit the repair batch (guarded by
the snapshot's generation), run the real iptables binaries beside the reader. What is
decided on the snapshot is fwgate.compat.probe's (pure).

`begin_probe` makes one attempt: a batch the kernel refuses because the ruleset moved
comes back as `conflict=True` with nothing changed. The machine decides itself whether
to run again (its compat runs); `probe` is the same attempt for the one-shot commands,
tried again under the same policy (fwgate.core.retry)."""
from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..compat.binaries import Binary, asked
from ..compat.crosscheck import Call, CrossCheck, calls_for
from ..compat.impact import KUBE_ROUTER_JUMPS, Setup
from ..compat.policy import ProbeResult, profiles_of
from ..compat.probe import (
    COMPAT_FAMILIES, PROBE_FAMILIES, checks_moved, look, outcome, refused,
)
from ..compat.reader import CompatReport
from ..compat.repair import Repair, batch_messages
from ..core.retry import MOVED_RULESET, RetryPolicy
from ..model import Rule, Snapshot, Table, TableRef
from ..netlink.attrs import as_str, attr_str
from ..netlink.consts import (
    FAMILIES, GETCHAIN, GETTABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_TABLE, NFTA_TABLE_NAME,
)
from ..netlink.nftables import del_rule_msg, parse_chain
from .iptables import Running, version_of
from .nfsock import NetlinkError, NfSocket
from .nft import snapshot as take_snapshot
from .sockmarks import read_outside_or_why

__all__ = ["COMPAT_FAMILIES", "PROBE_FAMILIES", "Pending", "Probed", "begin_probe",
           "commit_repairs", "probe"]


@dataclass(frozen=True)
class Probed:
    """A ProbeResult and the snapshot it was taken on (for the command bodies)."""
    result: ProbeResult
    snapshot: Snapshot


def commit_repairs(sock: NfSocket, repairs: Iterable[Repair], genid: int,
                   remove: Iterable[Rule] = ()) -> int | None:
    """Commit repairs (and delete `remove`) in one batch if the ruleset is still at
    `genid`. Returns the generation the batch produced, or None when the kernel refused
    it: something committed since (ERESTART), or a rule to replace is gone (ENOENT)."""
    deletes = [del_rule_msg(FAMILIES[r.family], r.table, r.chain, r.handle) for r in remove]
    try:
        sock.batch(batch_messages(repairs) + deletes, genid=genid)
    except NetlinkError as exc:
        if exc.errno in (errno.ERESTART, errno.ENOENT):
            return None
        raise
    return genid + 1  # guarded: nothing else committed in between


def _binary(b: Binary | str) -> Binary:
    return b if isinstance(b, Binary) else version_of(asked(b, "--iptables"))


class _Checks:
    """The binaries' calls, started as soon as the snapshot is there (read-only probes:
    they run while we read), finished once the report is."""

    def __init__(self, binaries: tuple[Binary, ...], netns: str | None):
        self.runnable = [b for b in binaries if b.argv and b.reads_nftables]
        self.netns = netns
        self.running: dict[Binary, Running] = {}
        self.moved = False   # the ruleset changed between their start and the snapshot

    def start(self, calls: list[Call]) -> None:
        for b in self.runnable:
            if b in self.running:
                self.running[b].add(calls)
            else:
                self.running[b] = Running(b, self.netns, calls)

    def finish(self, report: CompatReport, snap: Snapshot, moved: bool) -> tuple[CrossCheck, ...]:
        checks = tuple(CrossCheck.of(report, self.running[b].finish(moved), snap, b)
                       for b in self.runnable if b in self.running)
        return checks_moved(checks) if self.moved and not moved else checks


def probe(sock: NfSocket, *, repair: bool = False, dry_run: bool = False,
          binaries: Iterable[Binary | str] = (), netns: str | None = None,
          ifaces: frozenset[str] = frozenset({"wt0"}), attempts: int | None = None,
          policy: RetryPolicy = MOVED_RULESET, snapshot: Snapshot | None = None,
          setup: Setup | None = None, notes: tuple[str, ...] = (),
          marks: bool = True) -> Probed:
    """Snapshot (or use `snapshot`, taken on this socket, for the first attempt), read,
    repair (unless dry_run), cross-check; an attempt whose batch the kernel refused is
    made again while `policy` (or `attempts` in all) allows. `binaries` (Binary, or a
    path: asked for its version) run inside `netns` (the namespace `sock` lives in); the
    reader judges for their versions (every version when one is unknown). Refused every
    time: conflict=True, with nothing changed. marks=False: no packet-mark conflicts
    (`fwgate compat` shows none; they cost a pass over every rule)."""
    if attempts is not None:
        policy = RetryPolicy(retries=attempts - 1)
    binaries = tuple(_binary(b) for b in binaries)
    attempt = 0
    while True:
        attempt += 1
        # without marks, the families iptables writes to are all it reads (no inet tables)
        probed = begin_probe(sock, repair=repair, dry_run=dry_run, binaries=binaries,
                             netns=netns, ifaces=ifaces, snapshot=snapshot, setup=setup,
                             notes=notes, marks=marks,
                             families=PROBE_FAMILIES if marks else COMPAT_FAMILIES).finish()
        snapshot = None  # a second attempt looks afresh
        if not probed.result.conflict or not policy.again(attempt):
            return replace(probed, result=replace(probed.result, attempts=attempt))


class Pending:
    """A probe whose binaries are still running: finish() collects them. The caller
    may do other work in between (`fwgate check` digests and asks systemd)."""

    def __init__(self, sock: NfSocket, result: ProbeResult, snap: Snapshot,
                 checks: "_Checks | None", report: CompatReport | None, genid: int):
        self.sock, self.result, self.snap = sock, result, snap
        self.checks, self.report, self.genid = checks, report, genid

    def finish(self) -> Probed:
        if self.checks is None:
            return Probed(self.result, self.snap)
        crosschecks = self.checks.finish(self.report, self.snap, False)
        if crosschecks and self.sock.genid() != self.genid:
            crosschecks = checks_moved(crosschecks)
        return Probed(replace(self.result, crosschecks=crosschecks), self.snap)


def _layout(sock: NfSocket) -> Snapshot:
    """The ip/ip6 tables, and in `filter` kube-router's own chains, no rules: what
    calls_for needs to know which calls k3s makes, in a few milliseconds (a node with
    thousands of chains would cost a dump of them all, which the snapshot dumps again)."""
    genid = sock.genid()
    tables: dict[TableRef, Table] = {}
    for family in ("ip", "ip6"):
        for msg in sock.dump(GETTABLE, FAMILIES[family]):
            name = as_str(msg.attrs()[NFTA_TABLE_NAME])
            chains = _own_chains(sock, FAMILIES[family], name) if name == "filter" else ()
            tables[TableRef(family, name)] = Table(family, name, chains=chains)
    return Snapshot(genid, tables)


def _own_chains(sock: NfSocket, family: int, table: str) -> tuple:
    """kube-router's top-level chains in the table, asked for by name."""
    found = []
    for own in KUBE_ROUTER_JUMPS.values():
        try:
            replies = sock.request(GETCHAIN, family, payload=attr_str(NFTA_CHAIN_TABLE, table) +
                                   attr_str(NFTA_CHAIN_NAME, own))
        except NetlinkError as exc:
            if exc.errno == errno.ENOENT:
                continue
            raise
        found += [parse_chain(msg)[1] for msg in replies]
    return tuple(found)


def begin_probe(sock: NfSocket, *, repair: bool = False, dry_run: bool = False,
                binaries: Iterable[Binary | str] = (), netns: str | None = None,
                ifaces: frozenset[str] = frozenset({"wt0"}), snapshot: Snapshot | None = None,
                setup: Setup | None = None, notes: tuple[str, ...] = (),
                families: Iterable[str] = PROBE_FAMILIES, marks: bool = True) -> Pending:
    """One attempt of probe(), up to the binaries' answers. Without `snapshot`, a
    read-only probe starts the binaries before it dumps the ruleset (of `families`, at
    least the iptables ones), so they read it while we do."""
    binaries = tuple(_binary(b) for b in binaries)
    profiles = profiles_of(binaries)
    setup = setup or Setup()
    families = tuple(sorted(set(families) | set(COMPAT_FAMILIES)))
    writes = repair and not dry_run
    checks = _Checks(binaries, netns)
    early = None
    if not writes and checks.runnable and snapshot is None:
        early = _layout(sock)
        checks.start(calls_for(early, CompatReport(), setup))
    snap = snapshot if snapshot is not None else take_snapshot(sock, families=families)
    if not writes and early is None:  # nothing will change: they read while we do
        checks.start(calls_for(snap, CompatReport(), setup))
    elif early is not None and early.genid != snap.genid:
        checks.moved = True
    seen = look(snap, profiles, setup, repair=repair, ifaces=ifaces)
    genid = snap.genid
    if seen.writes and not dry_run:
        if commit_repairs(sock, seen.plan, snap.genid, seen.dead) is None:
            checks.finish(seen.report, snap, True)
            return Pending(sock, refused(seen, binaries=binaries, notes=notes), snap, None,
                           None, genid)
        genid += 1
    # The binaries see the ruleset as it is now: after the repair.
    now_report = seen.report_after(dry_run)
    later = calls_for(snap, now_report, setup)
    if writes:
        checks.start(later)
    else:  # the chains holding findings: known only now
        checks.start([c for c in later if c.kind == "list" and c.component == ""])
    outside, why = read_outside_or_why() if marks else (None, None)
    result = outcome(seen, dry_run=dry_run, binaries=binaries,
                     notes=notes + ((why,) if why else ()), setup=setup, marks=marks,
                     outside=outside)
    return Pending(sock, result, snap, checks, now_report, genid)
