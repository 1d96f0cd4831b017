"""Re-encode rules iptables-nft cannot read into what iptables itself writes.

The planner is pure (snapshot + report → repairs). `apply_repairs` is the thin
I/O edge: snapshot, analyse, plan, then commit every replacement in ONE
nf_tables transaction guarded by the snapshot's generation id. Each replacement
inserts the new rule right before the old one (NFTA_RULE_POSITION = old handle,
no NLM_F_APPEND) and deletes the old one, so the chain is never without the
rule and the rule keeps its place and its raw userdata (Netbird finds its rules
by that tag and would otherwise add them again). If anything changed since the
snapshot, the kernel refuses the batch (ERESTART) and we start over.
"""
from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass

from ..adapters import nfnl
from ..adapters.nft import snapshot
from ..adapters.nfnl import FAMILIES, NLM_F_CREATE, NetlinkError, attr, attr_str, attr_u32, \
    attr_u64, nested
from ..config import TableRef
from ..errors import FwgateError
from ..model import Rule, Snapshot
from .analyser import CompatReport, Finding, analyse, finding_json
from .equivalents import Equivalent, iptables_equivalent

# Tables repair looks at: iptables' and ip6tables' (conntrack matches exist there).
REPAIR_FAMILIES = ("ip", "ip6")
DEFAULT_ATTEMPTS = 5

Msg = tuple[int, int, int, bytes]


class RepairConflict(FwgateError):
    """The ruleset kept changing under us: every attempt was refused."""


@dataclass(frozen=True)
class Repair:
    rule: Rule               # as it is now
    equivalent: Equivalent   # what replaces its expressions
    reason: str              # why iptables-nft cannot read it now

    def messages(self) -> list[Msg]:
        """NEWRULE before the old rule, then DELRULE of the old rule."""
        r = self.rule
        family = FAMILIES[r.family]
        parts = [attr_str(nfnl.NFTA_RULE_TABLE, r.table), attr_str(nfnl.NFTA_RULE_CHAIN, r.chain),
                 nested(nfnl.NFTA_RULE_EXPRESSIONS, *self.equivalent.exprs),
                 # iptables sends NFTA_RULE_COMPAT (proto 0, no flags) with xt matches
                 nested(nfnl.NFTA_RULE_COMPAT, attr_u32(1, 0), attr_u32(2, 0)),
                 attr_u64(nfnl.NFTA_RULE_POSITION, r.handle)]
        if r.userdata is not None:
            parts.append(attr(nfnl.NFTA_RULE_USERDATA, r.userdata))
        delete = (attr_str(nfnl.NFTA_RULE_TABLE, r.table) + attr_str(nfnl.NFTA_RULE_CHAIN, r.chain)
                  + attr_u64(nfnl.NFTA_RULE_HANDLE, r.handle))
        return [(nfnl.NEWRULE, family, NLM_F_CREATE, b"".join(parts)),
                (nfnl.DELRULE, family, 0, delete)]


def plan_repairs(snapshot: Snapshot, report: CompatReport) -> list[Repair]:
    """A repair for every rule iptables-nft fails on or misreads that has a known
    exact iptables equivalent. The rest is left alone."""
    present = {(r.family, r.table, r.chain, r.handle)
               for t in snapshot.tables.values() for r in t.rules}
    out: list[Repair] = []
    seen: set[tuple] = set()
    for finding in (*report.findings, *report.misread):
        r = finding.rule
        key = (r.family, r.table, r.chain, r.handle)
        if key in seen or key not in present or not finding.repairable:
            continue
        equivalent = iptables_equivalent(r)
        if equivalent is not None:
            seen.add(key)
            out.append(Repair(r, equivalent, finding.reason))
    return out


@dataclass(frozen=True)
class RepairResult:
    repaired: tuple[Repair, ...]    # committed (or, with dry_run, planned)
    left: tuple[Finding, ...]       # rules iptables-nft fails on that we cannot re-encode
    attempts: int                   # snapshots taken; > 1 when the ruleset moved under us
    genid: int                      # the generation the repairs were planned on
    dry_run: bool = False


def apply_repairs(sock: nfnl.NfSocket, scope: Iterable[TableRef] | None = None,
                  dry_run: bool = False, attempts: int = DEFAULT_ATTEMPTS) -> RepairResult:
    """Snapshot → analyse → plan → one genid-guarded batch; again if refused."""
    scope = tuple(scope) if scope is not None else None
    for attempt in range(1, attempts + 1):
        snap = snapshot(sock, scope, families=() if scope is not None else REPAIR_FAMILIES)
        report = analyse(snap)
        plan = plan_repairs(snap, report)
        left = tuple(f for f in report.findings if not f.repairable)
        if plan and not dry_run:
            try:
                sock.batch([m for repair in plan for m in repair.messages()], genid=snap.genid)
            except NetlinkError as exc:
                if exc.errno == errno.ERESTART:
                    continue  # something committed since the snapshot: look again
                raise
        return RepairResult(tuple(plan), left, attempt, snap.genid, dry_run)
    raise RepairConflict(f"the ruleset changed during each of {attempts} repair attempts; "
                         f"nothing was changed")


def repair_json(result: RepairResult) -> dict:
    return {
        "dry_run": result.dry_run,
        "attempts": result.attempts,
        "repaired": [{"family": r.rule.family, "table": r.rule.table, "chain": r.rule.chain,
                      "handle": r.rule.handle, "position": r.rule.position,
                      "userdata": r.rule.userdata_text(), "reason": r.reason,
                      "now": r.equivalent.text} for r in result.repaired],
        "left": [finding_json(f) for f in result.left],
    }
