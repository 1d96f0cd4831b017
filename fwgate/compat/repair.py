"""Re-encode rules iptables-nft cannot read into what iptables itself writes. Pure.

The planner turns a snapshot's findings into replacements; adapters.probe commits
them. Each replacement inserts the new rule right before the old one
(NFTA_RULE_POSITION = old handle, no NLM_F_APPEND) and deletes the old one, in
ONE transaction guarded by the generation id the plan was made on: the chain is
never without the rule, the rule keeps its place and its raw userdata (Netbird
finds its rules by that tag and would otherwise add them again), and if anything
committed since, the kernel refuses the whole batch (ERESTART)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..model import Rule, Snapshot
from ..netlink.consts import FAMILIES
from ..netlink.messages import Msg
from ..netlink.nftables import del_rule_msg, rule_msg
from .equivalents import Equivalent, iptables_equivalent
from .reader import CompatReport

# Tables repair looks at: iptables' and ip6tables' (conntrack matches exist there).
REPAIR_FAMILIES = ("ip", "ip6")


@dataclass(frozen=True)
class Repair:
    rule: Rule               # as it is now
    equivalent: Equivalent   # what replaces its expressions
    reason: str              # why iptables-nft cannot read it now

    def messages(self) -> list[Msg]:
        """NEWRULE before the old rule, then DELRULE of the old rule."""
        r = self.rule
        family = FAMILIES[r.family]
        return [rule_msg(family, r.table, r.chain, self.equivalent.exprs, r.userdata,
                         append=False, position=r.handle, xt_compat=True),
                del_rule_msg(family, r.table, r.chain, r.handle)]


def plan_rules(candidates: Iterable[tuple[Rule, str]]) -> list[Repair]:
    """A repair for each (rule, reason) with a known exact iptables equivalent, once
    per rule. The rest is left alone."""
    out: list[Repair] = []
    seen: set[tuple] = set()
    for rule, reason in candidates:
        key = (rule.family, rule.table, rule.chain, rule.handle)
        if key in seen or rule.family not in REPAIR_FAMILIES:
            continue
        equivalent = iptables_equivalent(rule)
        if equivalent is not None:
            seen.add(key)
            out.append(Repair(rule, equivalent, reason))
    return out


def plan_repairs(snapshot: Snapshot, report: CompatReport) -> list[Repair]:
    """Repairs for every rule of the snapshot iptables-nft fails on or misreads."""
    present = {(r.family, r.table, r.chain, r.handle)
               for t in snapshot.tables.values() for r in t.rules}
    return plan_rules((f.rule, f.reason) for f in (*report.findings, *report.misread)
                      if f.repairable and (f.rule.family, f.rule.table, f.rule.chain,
                                           f.rule.handle) in present)


def batch_messages(repairs: Iterable[Repair]) -> list[Msg]:
    return [m for repair in repairs for m in repair.messages()]
