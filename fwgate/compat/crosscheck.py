"""What a real iptables binary said, set beside the reader's prediction. Pure.

fwgate.adapters.iptables runs the binary; this module holds its verdict and the
comparison, so a disagreement between model and binary is a finding."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..model import Table, TableRef
from .reader import CompatReport


@dataclass(frozen=True)
class ChainListing:
    """`iptables -t TABLE -S CHAIN`."""

    family: str
    table: str
    chain: str
    exit_code: int
    error: str | None = None   # stderr, one line per message

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class TableSave:
    """`iptables-save -t TABLE`."""

    family: str
    table: str
    exit_code: int
    saved: bool                # the table came out whole ("*TABLE" ... "COMMIT")
    note: str | None = None    # e.g. "# Table `filter' is incompatible, use 'nft' tool."

    @property
    def outcome(self) -> str:
        if self.saved:
            return "saved"
        return "aborted" if self.exit_code else "left out"


@dataclass(frozen=True)
class IptablesVerdict:
    binary: str
    version: str | None
    chains: tuple[ChainListing, ...] = ()
    saves: tuple[TableSave, ...] = ()
    skipped: tuple[str, ...] = ()   # what could not be checked, and why

    @property
    def refused_chains(self) -> tuple[ChainListing, ...]:
        return tuple(c for c in self.chains if not c.ok)

    @property
    def left_out_tables(self) -> tuple[TableSave, ...]:
        return tuple(s for s in self.saves if not s.saved)


@dataclass(frozen=True)
class Disagreement:
    family: str
    table: str
    chain: str | None     # None: about iptables-save of the whole table
    analyser: str
    iptables: str


def compare(report: CompatReport, verdict: IptablesVerdict) -> list[Disagreement]:
    """Where the analyser's prediction and the binary's behaviour differ, per chain
    (the exit code of -S) and per table (what iptables-save did)."""
    out: list[Disagreement] = []
    for c in verdict.chains:
        expected = report.listing_exit(c.family, c.table, c.chain)
        if expected != c.exit_code:
            out.append(Disagreement(c.family, c.table, c.chain,
                                    f"-S exits {expected}" if expected is not None else "cannot tell",
                                    f"-S exits {c.exit_code}" + (f": {c.error}" if c.error else "")))
    for s in verdict.saves:
        expected = report.save_outcome(s.family, s.table)
        if expected != s.outcome:
            out.append(Disagreement(s.family, s.table, None, f"iptables-save: {expected}",
                                    f"iptables-save: {s.outcome}" + (f" ({s.note})" if s.note else "")))
    return out


@dataclass(frozen=True)
class CrossCheck:
    """One binary's verdict beside the reader's report."""

    verdict: IptablesVerdict
    disagreements: tuple[Disagreement, ...]
    predicted: frozenset[tuple[str, str, str]]   # chains the reader expected to fail

    @classmethod
    def of(cls, report: CompatReport, verdict: IptablesVerdict) -> "CrossCheck":
        return cls(verdict, tuple(compare(report, verdict)),
                   frozenset((f.rule.family, f.rule.table, f.rule.chain) for f in report.findings))

    @property
    def ran(self) -> bool:
        """False when the binary did not even answer --version: its silence proves nothing
        (k3s's bundled iptables before k3s first ran cannot set itself up in our sandbox)."""
        return self.verdict.version is not None

    def lines(self) -> list[str]:
        out = []
        for d in self.disagreements:
            where = f"{d.family} {d.table}" + (f" {d.chain}" if d.chain else "")
            out.append(f"{where}: reader says {d.analyser}, {self.verdict.binary} says {d.iptables}")
        return out

    def missed(self) -> list[str]:
        """Chains the binary refused that the reader thought it could read."""
        if not self.ran:
            return []
        refused = {(c.family, c.table, c.chain) for c in self.verdict.refused_chains}
        return [line for d, line in zip(self.disagreements, self.lines())
                if (d.family, d.table, d.chain) in refused - self.predicted]


def verdict_json(verdict: IptablesVerdict, disagreements: Iterable[Disagreement] = ()) -> dict:
    return {
        "binary": verdict.binary,
        "version": verdict.version,
        "refused_chains": [{"family": c.family, "table": c.table, "chain": c.chain,
                            "exit_code": c.exit_code, "error": c.error}
                           for c in verdict.refused_chains],
        "tables": [{"family": s.family, "table": s.table, "save": s.outcome, "note": s.note}
                   for s in verdict.saves],
        "skipped": list(verdict.skipped),
        "disagreements": [{"family": d.family, "table": d.table, "chain": d.chain,
                           "analyser": d.analyser, "iptables": d.iptables}
                          for d in disagreements],
    }


def managed(tables: dict[TableRef, Table], report: CompatReport) -> list[Table]:
    """The snapshot's tables the report calls iptables-managed, for cross_check()."""
    return [tables[ref] for ref in report.managed_tables if ref in tables]
