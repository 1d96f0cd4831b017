"""One compat policy for `check`, `run` and the guard: the same ruleset and config
give the same verdict and exit code everywhere. Pure.

Blocking is what kills k3s: a rule that breaks a call kube-router dies on (its
`-C`/`-S` in ip filter, and ip6 filter on dual-stack nodes), for an iptables k3s runs
or could run. What breaks only calls that are logged and retried (kube-proxy,
flannel, kube-router's sync), what no k3s component reads (other tables, arp, bridge,
chains iptables drops), misreads and disagreements with a real binary are warnings:
loud, never silently ok, never the reason k3s is held back.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import EXIT_INCOMPATIBLE, EXIT_OK
from ..model import Rule
from ..netbird import NetbirdRules
from .binaries import Binary
from .crosscheck import CrossCheck
from .impact import Setup
from .profiles import PROFILES, Profile
from .reader import (
    IPTABLES_TABLES, CompatReport, DroppedChain, Finding, _complete, _findings, verdicts,
)
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
    binaries: tuple[Binary, ...] = ()         # the iptables judged for (empty: every version)
    notes: tuple[str, ...] = ()               # how they were found
    conflicts: tuple = ()                     # packet-mark conflicts (fwgate.marks.Conflict)
    setup: Setup | None = None                # which k3s components run, as the probe saw
    removed: tuple[Rule, ...] = ()            # dead copies of Netbird's rules, deleted in
                                              # the same batch as the repairs

    @property
    def left(self) -> tuple[Finding, ...]:
        """Rules iptables-nft fails on that nothing can re-encode."""
        return tuple(f for f in self.report.findings if not f.repairable)

    @property
    def produced_genid(self) -> int | None:
        return self.genid + 1 if self.repaired or self.removed else None

    @property
    def profiles(self) -> tuple[Profile, ...]:
        """The readers the verdict is for (the guard's per-event check should use them)."""
        return profiles_of(self.binaries)


def profiles_of(binaries: tuple[Binary, ...]) -> tuple[Profile, ...]:
    """The readers of the binaries that read nf_tables; every profile when one of them
    has no known version (or there are none)."""
    readers = [b for b in binaries if b.reads_nftables]
    if not readers or any(b.profile is None for b in readers):
        return PROFILES
    return tuple(p for p in PROFILES if p in {b.profile for b in readers})


@dataclass(frozen=True)
class Verdict:
    exit_code: int                   # EXIT_OK or EXIT_INCOMPATIBLE (never with `warn`)
    blocking: tuple[str, ...] = ()   # one line per rule k3s dies on that nothing resolves
    warnings: tuple[str, ...] = ()   # what breaks only retried calls, misreads, disagreements
    resolved: tuple[str, ...] = ()   # rules repair re-encodes (or, read-only, would)

    @property
    def degraded(self) -> bool:
        return bool(self.blocking or self.warnings)

    @property
    def summary(self) -> str:
        if self.blocking:
            head = "degraded: " if self.exit_code == EXIT_OK else ""  # let through: `warn`
            return f"{head}{len(self.blocking)} rule(s) iptables-nft cannot read: " \
                   f"{self.blocking[0]}"
        if self.warnings:
            return f"degraded: {len(self.warnings)} warning(s): {self.warnings[0]}"
        if self.resolved:
            return f"iptables-nft reads every rule ({len(self.resolved)} re-encoded)"
        return "iptables-nft reads every rule"


def _versions(f: Finding, judged: tuple[str, ...]) -> str:
    """The versions a finding holds for, when not all of those judged."""
    if not f.versions or set(judged) <= set(f.versions):
        return ""
    return f" (iptables {', '.join(f.versions)})"


def finding_line(f: Finding, judged: tuple[str, ...] = ()) -> str:
    """`ip filter FORWARD handle 11 (frwacceptoif): ct state expression: … (cmp sreg
    undef) [kube-router: iptables -t filter -C FORWARD … fails: k3s exits]`"""
    fatal = next((i for i in f.impacts if i.fatal), None)
    if fatal:
        tail = f" [{fatal.component} dies on `{fatal.command}`]"
    elif f.impacts:
        names = ", ".join(dict.fromkeys(i.component for i in f.impacts))
        sync = f"; {f.after_sync}" if f.after_sync else ""
        tail = f" [breaks {names}: logged and retried, k3s keeps running{sync}]"
    elif f.breaks:
        tail = " [no k3s component reads it]"
    else:
        tail = f" [{f.after_sync}]" if f.after_sync else ""
    return f"{f.rule.ref}: {f.reason}{_versions(f, judged or tuple(p.version for p in PROFILES))}{tail}"


def dropped_line(d: DroppedChain) -> str:
    """A base chain iptables never sees, in a table kube-router restores."""
    return f"{d.family} {d.table} {d.chain}: iptables never sees it ({d.why}); {d.after_sync}"


def repair_line(r: Repair) -> str:
    return f"{r.rule.ref}: was {r.reason}; now {r.equivalent.text}"


NOT_YET = " — not re-encoded yet (the guard does it at once; `fwgate repair` does it now)"


def judge(result: ProbeResult, on_incompatible: str, *, read_only: bool = False) -> Verdict:
    """The verdict on what the probe saw. With `repair`, a rule of a repairable shape
    this probe re-encoded (run, the guard) counts as resolved. A read-only look (`check`,
    health) judges the live ruleset: a rule k3s dies on is there until someone repairs
    it, so it blocks whatever the policy (exit 3), with what repair would do."""
    resolved, blocking, warnings = [], [], []
    judged = result.report.versions
    line = lambda f: finding_line(f, judged)  # noqa: E731
    # The binaries are believed only when every one that reads nf_tables answered.
    readers = [b for b in result.binaries if b.reads_nftables]
    ran = [c for c in result.crosschecks if c.ran]
    if len(ran) < max(len(readers), 1) or len(ran) < len(result.crosschecks):
        ran = []
    for f in result.report.findings:
        if on_incompatible == "repair" and f.repairable and read_only:
            (blocking if f.blocking else warnings).append(line(f) + NOT_YET)
        elif on_incompatible == "repair" and f.repairable:
            resolved.append(f)
        elif f.blocking and not f.uncertain and ran and all(
                all(c.refutes(i.command) for c in ran) for i in f.impacts if i.fatal):
            # Every binary k3s runs ran the calls it would die on, and none failed.
            warnings.append(line(f) + f" — but {ran[0].verdict.binary} reads it: not blocking")
        else:
            (blocking if f.blocking else warnings).append(line(f))
    pending = NOT_YET if on_incompatible == "repair" else ""
    warnings += [line(f) + (pending if f.repairable else "") for f in result.report.misread
                 if not (on_incompatible == "repair" and f.repairable and not read_only)]
    # Where a real binary failed a call k3s dies on that the reader thought fine, believe it.
    blocking += [line for check in result.crosschecks for line in check.missed()]
    warnings += [f"disagreement: {line}" for check in result.crosschecks for line in check.lines()
                 if line not in check.missed()]
    warnings += [dropped_line(d) for d in result.report.dropped_chains if d.after_sync]
    done = [repair_line(r) for r in result.repaired or result.planned] or [line(f) for f in resolved]
    # `warn` lets them through: still counted as what they are (metrics, status).
    code = EXIT_INCOMPATIBLE if blocking and (read_only or on_incompatible != "warn") else EXIT_OK
    return Verdict(code, tuple(blocking), tuple(warnings), tuple(done))


def judge_added_rule(rule: Rule, profiles: tuple[Profile, ...] = PROFILES,
                     setup: Setup = Setup()) -> Finding | None:
    """The finding on a rule just added to one of iptables' own tables, decided on
    the rule alone as its event brings it (the fast path of repair at once), or
    None when iptables-nft reads it. Memoised by the rule's shape: kube-router's
    restore re-adds every rule of ip filter at each sync."""
    if rule.table not in IPTABLES_TABLES.get(rule.family, ()):
        return None
    bad = wrong = None
    for p, v in zip(profiles, verdicts(rule, profiles)):
        if v.clean:
            continue
        b, w = _findings(rule, v)
        bad, wrong = bad or b, wrong or w
        if bad:
            break
    found = bad or wrong
    return _complete(found, tuple(p.version for p in profiles), setup) if found else None
