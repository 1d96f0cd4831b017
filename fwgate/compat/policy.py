"""One compat policy for `check`, `run` and the guard: the same ruleset and config
give the same verdict and exit code everywhere. Pure."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import EXIT_INCOMPATIBLE, EXIT_OK
from ..model import Rule
from ..netbird import NetbirdRules
from .crosscheck import CrossCheck
from .reader import IPTABLES_TABLES, CompatReport, Finding, judge_rule
from .repair import Repair

POLICIES = ("fail", "warn", "repair")


@dataclass(frozen=True)
class ProbeResult:
    """What one compat probe saw on one snapshot: the reader's report, the repairs
    committed on it, and what real iptables binaries said."""

    report: CompatReport
    genid: int                                # the generation the snapshot was taken at
    repaired: tuple[Repair, ...] = ()         # committed in one batch: it produced genid + 1
    crosschecks: tuple[CrossCheck, ...] = ()
    conflict: bool = False                    # every repair attempt was refused: still moving
    planned: tuple[Repair, ...] = ()          # what repair would re-encode (dry run: all of it)
    netbird: NetbirdRules | None = None
    attempts: int = 1                         # snapshots taken: > 1 when the ruleset moved

    @property
    def left(self) -> tuple[Finding, ...]:
        """Rules iptables-nft fails on that nothing can re-encode."""
        return tuple(f for f in self.report.findings if not f.repairable)

    @property
    def produced_genid(self) -> int | None:
        return self.genid + 1 if self.repaired else None


@dataclass(frozen=True)
class Verdict:
    exit_code: int                   # EXIT_OK or EXIT_INCOMPATIBLE
    blocking: tuple[str, ...] = ()   # one line per unreadable rule nothing resolves
    warnings: tuple[str, ...] = ()   # unreadable rules let through (warn), disagreements
    resolved: tuple[str, ...] = ()   # rules repair re-encodes (or, read-only, would)

    @property
    def degraded(self) -> bool:
        return bool(self.blocking or self.warnings)

    @property
    def summary(self) -> str:
        if self.blocking:
            return f"{len(self.blocking)} rule(s) iptables-nft cannot read: {self.blocking[0]}"
        if self.warnings:
            return f"degraded: {len(self.warnings)} rule(s) iptables-nft cannot read: " \
                   f"{self.warnings[0]}"
        if self.resolved:
            return f"iptables-nft reads every rule ({len(self.resolved)} re-encoded)"
        return "iptables-nft reads every rule"


def finding_line(f: Finding) -> str:
    return f"{f.rule.ref}: {f.reason}"


def repair_line(r: Repair) -> str:
    return f"{r.rule.ref}: was {r.reason}; now {r.equivalent.text}"


def judge(result: ProbeResult, on_incompatible: str) -> Verdict:
    """The verdict on what the probe saw. With `repair`, a rule of a repairable shape
    counts as resolved whether this probe re-encoded it (run, the guard) or only
    looked (check): what is left is what nothing can repair."""
    resolved, unresolved = [], []
    for f in result.report.findings:
        (resolved if on_incompatible == "repair" and f.repairable else unresolved).append(f)
    lines = [finding_line(f) for f in unresolved]
    # Where a real binary refused a chain the reader thought fine, believe the binary.
    lines += [line for check in result.crosschecks for line in check.missed()]
    done = [repair_line(r) for r in result.repaired or result.planned] or \
        [finding_line(f) for f in resolved]
    if on_incompatible == "warn":
        return Verdict(EXIT_OK, (), tuple(lines), tuple(done))
    return Verdict(EXIT_INCOMPATIBLE if lines else EXIT_OK, tuple(lines), (), tuple(done))


def judge_added_rule(rule: Rule) -> Finding | None:
    """The finding on a rule just added to one of iptables' own tables, decided on
    the rule alone as its event brings it (the fast path of repair at once), or
    None when iptables-nft reads it."""
    if rule.table not in IPTABLES_TABLES.get(rule.family, ()):
        return None
    bad, misread = judge_rule(rule)
    return bad or misread
