"""What a real iptables binary said, set beside the reader's prediction. Pure.

The binary runs what k3s runs (kube-router's fatal start-up calls in `filter`, and the
iptables-save of every table kube-router, kube-proxy and flannel save), plus `-S` of
each chain the reader found a rule in; fwgate.adapters.iptables runs them. For each
call the reader predicts an exit code (or, for iptables-save, an outcome); a binary
that does otherwise is a disagreement, reported loudly, and where it matters the
binary is believed (policy.judge).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..model import Snapshot, Table, TableRef
from .binaries import Binary
from .impact import (
    KUBE_PROXY, KUBE_ROUTER, KUBE_ROUTER_JUMPS, Setup, jump_spec, shell,
)
from .reader import (
    _FATAL, BREAKS_CHECK, BUILTIN_CHAINS, IPTABLES_TABLES, CompatReport, Finding, dropped_chains,
)

MAX_CHAIN_LISTINGS = 16   # -S of chains holding findings, beyond kube-router's own calls


@dataclass(frozen=True)
class Call:
    """One command, as a k3s component runs it (`tool` is iptables or ip6tables)."""

    family: str
    table: str
    kind: str                  # check (-C) | list (-S CHAIN) | first (-S CHAIN 1) | save
    chain: str | None = None
    spec: tuple[str, ...] = ()
    component: str = KUBE_ROUTER
    fatal: bool = True         # k3s dies when it fails
    exists: bool = True        # the chain exists (`-S CHAIN 1` exits 1 when it does not)

    @property
    def tool(self) -> str:
        return ("ip6tables" if self.family == "ip6" else "iptables") + \
            ("-save" if self.kind == "save" else "")

    @property
    def args(self) -> list[str]:
        if self.kind == "save":
            return ["-t", self.table]
        if self.kind == "check":
            return ["-t", self.table, "-C", self.chain, *self.spec]
        return ["-t", self.table, "-S", self.chain] + (["1"] if self.kind == "first" else [])

    @property
    def text(self) -> str:
        return shell([self.tool, *self.args])

    def failed(self, exit_code: int) -> bool:
        """What the component takes for a failure: -C exits 1 when the rule is missing
        (it then inserts it), `-S CHAIN 1` exits 1 when the chain is missing (it then
        creates it)."""
        if self.kind == "check" or (self.kind == "first" and not self.exists):
            return exit_code not in (0, 1)
        return exit_code != 0


@dataclass(frozen=True)
class Ran:
    call: Call
    exit_code: int
    error: str | None = None   # stderr
    outcome: str | None = None  # iptables-save: saved | left out | aborted
    note: str | None = None    # iptables-save's "# Table `filter' is incompatible" line


@dataclass(frozen=True)
class IptablesVerdict:
    binary: str                 # how it is shown: path (version, mode)
    version: str | None         # `--version`'s first line
    runs: tuple[Ran, ...] = ()
    skipped: tuple[str, ...] = ()   # what could not be checked, and why
    moved: bool = False         # the ruleset changed while it ran: nothing to compare

    @property
    def refused(self) -> tuple[Ran, ...]:
        return tuple(r for r in self.runs if r.call.kind != "save" and
                     r.call.failed(r.exit_code))


@dataclass(frozen=True)
class Disagreement:
    family: str
    table: str
    chain: str | None     # None: about iptables-save of the whole table
    analyser: str
    iptables: str
    command: str = ""
    fatal: bool = False   # the call is one k3s dies on
    failed: bool = False  # the binary failed it (the component sees an error)


# --- the calls ---------------------------------------------------------------------------

def calls_for(snapshot: Snapshot, report: CompatReport, setup: Setup = Setup()) -> list[Call]:
    """kube-router's fatal calls in ip (and ip6) filter, an iptables-save of each
    iptables table there is in ip/ip6, and -S of the chains holding findings."""
    out: list[Call] = []
    for family in ("ip", "ip6"):
        table = snapshot.tables.get(TableRef(family, "filter"))
        if table is not None and setup.network_policy:
            for builtin, own in KUBE_ROUTER_JUMPS.items():
                exists = table.chain(own) is not None
                out.append(Call(family, "filter", "first", own, exists=exists))
                if exists:  # kube-router creates it first: -C of a jump to nowhere is a usage error
                    out.append(Call(family, "filter", "check", builtin, tuple(jump_spec(builtin))))
                out.append(Call(family, "filter", "list", builtin))
        for name in IPTABLES_TABLES[family]:
            if TableRef(family, name) in snapshot.tables:
                component = KUBE_ROUTER if name == "filter" else KUBE_PROXY
                out.append(Call(family, name, "save", component=component, fatal=False))
    listed = {(c.family, c.table, c.chain) for c in out if c.kind == "list"}
    more = dict.fromkeys((f.rule.family, f.rule.table, f.rule.chain) for f in report.findings
                         if f.rule.family in ("ip", "ip6"))
    extra = [w for w in more if w not in listed][:MAX_CHAIN_LISTINGS]
    out += [Call(fam, table, "list", chain, component="", fatal=False)
            for fam, table, chain in extra]
    return out


# --- predictions ---------------------------------------------------------------------------

def _code(f: Finding) -> int:
    return _FATAL.get(f.iptables_error, 3)


def _walk(findings: Iterable[Finding], end: int) -> frozenset[int]:
    """Exit codes of parsing rules in order up to the first that certainly fails; `end`
    when none does."""
    codes: set[int] = set()
    for f in sorted(findings, key=lambda f: f.rule.position):
        codes.add(_code(f))
        if not f.uncertain:
            return frozenset(codes)
    return frozenset(codes | {end})


def predict(report: CompatReport, snapshot: Snapshot, call: Call) -> frozenset:
    """Exit codes the reader expects for the call (outcomes, for iptables-save);
    empty when it cannot tell (a rule it could not decode)."""
    fam, name, chain = call.family, call.table, call.chain
    found = [f for f in report.findings if (f.rule.family, f.rule.table) == (fam, name)]
    if any(f.iptables_error is None and not f.unlisted for f in found):
        return frozenset()  # unreadable to us
    if call.kind == "save":
        if any(f.unlisted for f in found):
            return frozenset({"left out"})
        errors = [f for f in found if f.iptables_error]
        if not errors:
            return frozenset({"saved"})
        return frozenset({"aborted"} | ({"saved"} if all(f.uncertain for f in errors) else set()))
    table = snapshot.tables.get(TableRef(fam, name))
    exists = table is not None and table.chain(chain) is not None
    gone = dropped_chains(table) if table is not None else {}
    builtin = chain in BUILTIN_CHAINS.get((fam, name), {})
    if not exists or chain in gone:
        # iptables fakes its built-in chains (empty); others do not exist for it
        return frozenset({0 if builtin else 1}) if call.kind != "check" else frozenset({1})
    mine = [f for f in found if f.rule.chain == chain]
    if call.kind == "check":
        jump = report.kube_router_jumps.get((fam, chain))
        walked = [f for f in mine if BREAKS_CHECK in f.breaks
                  and (jump is None or f.rule.position < jump)]
        return _walk(walked, 1 if jump is None else 0)
    if any(f.unlisted for f in mine):
        return frozenset({1})
    if call.kind == "first":
        return _walk([f for f in mine if f.rule.position == 0 and f.iptables_error], 0)
    return _walk([f for f in mine if f.iptables_error], 0)


def compare(report: CompatReport, snapshot: Snapshot, verdict: IptablesVerdict
            ) -> list[Disagreement]:
    """Where the reader's prediction and the binary's behaviour differ."""
    if verdict.moved:
        return []
    out: list[Disagreement] = []
    for ran in verdict.runs:
        call = ran.call
        expected = predict(report, snapshot, call)
        actual = ran.outcome if call.kind == "save" else ran.exit_code
        if not expected or actual in expected:
            continue
        shown = " or ".join(str(x) for x in sorted(expected, key=str))
        if call.kind == "save":
            out.append(Disagreement(call.family, call.table, None, f"iptables-save: {shown}",
                                    f"iptables-save: {actual}" + (f" ({ran.note})" if ran.note else ""),
                                    call.text, False, actual != "saved"))
        else:
            out.append(Disagreement(call.family, call.table, call.chain, f"exits {shown}",
                                    f"exits {actual}" + (f": {ran.error}" if ran.error else ""),
                                    call.text, call.fatal, call.failed(actual)))
    return out


@dataclass(frozen=True)
class CrossCheck:
    """One binary's answers beside the reader's report."""

    verdict: IptablesVerdict
    disagreements: tuple[Disagreement, ...]
    predicted: frozenset[tuple[str, str, str]]   # chains the reader expected to fail
    binary: Binary | None = None

    @classmethod
    def of(cls, report: CompatReport, verdict: IptablesVerdict, snapshot: Snapshot | None = None,
           binary: Binary | None = None) -> "CrossCheck":
        report = report.for_version(binary.profile.version) \
            if binary is not None and binary.profile is not None and \
            binary.profile.version in report.versions else report
        snap = snapshot if snapshot is not None else Snapshot(0)
        return cls(verdict, tuple(compare(report, snap, verdict)),
                   frozenset((f.rule.family, f.rule.table, f.rule.chain) for f in report.findings),
                   binary)

    @property
    def ran(self) -> bool:
        """False when the binary did not even answer --version: its silence proves nothing."""
        return self.verdict.version is not None

    def lines(self) -> list[str]:
        out = []
        for d in self.disagreements:
            where = f"{d.family} {d.table}" + (f" {d.chain}" if d.chain else "")
            out.append(f"{where}: `{d.command}`: reader says {d.analyser}, "
                       f"{self.verdict.binary} {d.iptables}")
        return out

    def missed(self) -> list[str]:
        """Calls k3s dies on that the binary failed and the reader thought fine: the
        binary is believed."""
        if not self.ran:
            return []
        return [line for d, line in zip(self.disagreements, self.lines()) if d.fatal and d.failed]

    def refutes(self, command: str) -> bool:
        """The binary ran this call and it did not fail."""
        return self.ran and not self.verdict.moved and any(
            r.call.text == command and not r.call.failed(r.exit_code) for r in self.verdict.runs)


def verdict_json(verdict: IptablesVerdict, disagreements: Iterable[Disagreement] = (),
                 binary: Binary | None = None) -> dict:
    return {
        "binary": verdict.binary,
        "version": verdict.version,
        "path": binary.path if binary else None,
        "source": binary.source if binary else None,
        "role": binary.role if binary else None,
        "mode": binary.mode if binary else None,
        "moved": verdict.moved,
        "runs": [{"command": r.call.text, "component": r.call.component, "fatal": r.call.fatal,
                  "exit_code": r.exit_code, "outcome": r.outcome, "error": r.error}
                 for r in verdict.runs],
        "refused_chains": [{"family": r.call.family, "table": r.call.table, "chain": r.call.chain,
                            "command": r.call.text, "exit_code": r.exit_code, "error": r.error}
                           for r in verdict.refused],
        "tables": [{"family": r.call.family, "table": r.call.table, "save": r.outcome,
                    "note": r.note} for r in verdict.runs if r.call.kind == "save"],
        "skipped": list(verdict.skipped),
        "disagreements": [{"family": d.family, "table": d.table, "chain": d.chain,
                           "command": d.command, "fatal": d.fatal,
                           "analyser": d.analyser, "iptables": d.iptables}
                          for d in disagreements],
    }


def managed(tables: dict[TableRef, Table], report: CompatReport) -> list[Table]:
    """The snapshot's tables the report calls iptables-managed."""
    return [tables[ref] for ref in report.managed_tables if ref in tables]
