"""The rule-stability probe: has the watched scope been quiet for its window? Pure.

It joins four small parts and the scope they look at:

    QuietWindow          window.py        the last foreign change, the baseline after it
    DumpPacer            pacer.py         when the next snapshot (Dump) goes out
    GenerationConfirmer  confirm.py       at the window's end: same genid, else same digest
    TransactionCounter   transactions.py  a foreign transaction counts once, when read

The machine tells it what was read (events by kind, dumps, generations) and asks what
is due; what a change means beyond the window (the record, the guard's next check, the
stages) stays the machine's."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..config import ChainExists, Config
from ..model import TableRef
from ..netlink.nftables import Event
from . import actions as A
from .confirm import Answer, GenerationConfirmer
from .pacer import DumpPacer
from .transactions import TransactionCounter
from .window import Baseline, QuietWindow


@dataclass(frozen=True)
class Scope:
    """What is watched (a change restarts the window) and what else is dumped (the
    tables the stages' conditions read, keeping only the rules of `keep_rules`)."""
    watched: frozenset[TableRef]
    interest: tuple[TableRef, ...]
    keep_rules: tuple[tuple[TableRef, str], ...] = ()

    @classmethod
    def of(cls, config: Config, with_stages: bool) -> Scope:
        stages = config.stages if with_stages else ()
        return cls(frozenset(config.watch),
                   config.tables_of_interest() if stages else tuple(config.watch),
                   tuple((c.table, c.chain) for s in stages for c in s.conditions
                         if isinstance(c, ChainExists)))

    def dump(self) -> A.Dump:
        return A.Dump(self.interest, tuple(sorted(self.watched)), self.keep_rules)


class StabilityProbe:
    def __init__(self, scope: Scope, now: float):
        self.last_seen_genid: int | None = None   # of the newest transaction read
        self.restart(scope, now)

    def restart(self, scope: Scope, now: float) -> None:
        """A new config: a new scope, the window from now (the generation seen stays)."""
        self.scope = scope
        self.window = QuietWindow(now)
        self.pacer = DumpPacer(now)
        self.confirm = GenerationConfirmer()
        self.transactions = TransactionCounter()

    @property
    def last_change(self) -> float:
        return self.window.last_change

    @property
    def changes(self) -> int:
        """Foreign changes to the watched scope since the window began."""
        return self.window.changes

    @property
    def rules_since(self) -> float:
        """When the state the last snapshot shows began (a rule condition holds since)."""
        return self.pacer.rules_since

    # -- what was read ----------------------------------------------------------------

    def read(self, now: float, events: Iterable[Event], own_portids: frozenset[int]) -> int:
        """A batch of events as read: how many foreign changes to the watched scope it
        holds (the window restarted at each). Events carrying one of `own_portids` are
        our own transactions."""
        changes = 0
        for event in events:
            if event.table is None:  # NEWGEN closes a transaction
                if self.committed(event.genid):
                    changes += 1
                    self.changed(now)
            elif event.portid in own_portids:
                self.own_event(event.table)
            else:
                self.foreign_event(now, event.table)
        if self.read_ends():
            changes += 1
            self.changed(now)
        return changes

    def own_event(self, table: TableRef) -> None:
        """Our own repair: take the baseline again; the window runs on."""
        if table in self.scope.watched or table in self.scope.interest:
            self.window.own_change()
            self.confirm.changed()
            self.pacer.invalidate()

    def foreign_event(self, now: float, table: TableRef) -> None:
        if table in self.scope.watched:
            self.transactions.touch()
            self.pacer.changed(now)
        elif table in self.scope.interest:
            self.pacer.changed(now)

    def committed(self, genid: int) -> bool:
        """A NEWGEN: True when it closed a foreign transaction on the watched scope not
        counted yet (a change)."""
        self.last_seen_genid = genid
        return self.transactions.closed()

    def read_ends(self) -> bool:
        """The events read end mid-transaction: True when it counts as a change now."""
        return self.transactions.read_ends()

    def changed(self, now: float) -> None:
        """A foreign change: the window restarts."""
        self.window.change(now)
        self.confirm.changed()

    def settle_again(self, now: float) -> None:
        """The ruleset moved under every repair attempt: the window restarts, a new
        snapshot is wanted, but no change is counted (none was seen)."""
        self.window.change(now, count=False)
        self.confirm.changed()
        self.pacer.changed(now)

    def events_lost(self, now: float) -> None:
        self.window.lost_events(now)
        self.confirm.changed()
        self.pacer.changed(now)
        self.transactions.forget()

    def dump_failed(self, now: float) -> None:
        """The ruleset moved under every dump tried: a change too."""
        self.pacer.failed()
        self.changed(now)
        self.pacer.changed(now)

    def dumped(self, now: float, genid: int, digest: str, cost: float) -> Answer:
        """A snapshot came in. QUIET: it confirms the window; CHANGED: the scope moved
        without an event we saw (the window restarts from it)."""
        # Current only if no transaction we have seen came after it.
        current = self.last_seen_genid is None or genid >= self.last_seen_genid
        self.pacer.dumped(now, cost, current)
        answer = self.confirm.on_dump(genid, digest, current, self.window)
        if answer is Answer.QUIET:
            return answer
        if answer is Answer.CHANGED:
            self.window.change_behind_our_back(now, genid, digest)
        if self.window.baseline is None and current:
            self.window.set_baseline(genid, digest)
        return answer

    def generation(self, now: float, genid: int) -> Answer:
        answer = self.confirm.on_generation(genid, self.window)
        if answer is Answer.NEED_DIGEST:
            self.pacer.ask_now(now)  # something committed: did the watched scope change?
        return answer

    # -- what is due --------------------------------------------------------------------

    def dump_due(self) -> float:
        return self.pacer.due()

    def start_dump(self, now: float) -> A.Dump | None:
        return self.scope.dump() if self.pacer.start(now) else None

    def window_end(self, due: float | None) -> float | None:
        """When the window `due` matters: once its baseline is in (a pending dump or
        question comes first)."""
        if due is None or self.pacer.stale or self.confirm.busy:
            return None
        return due

    def ask_at_end(self, now: float, due: float | None) -> bool:
        """The window has run: True (and a question out) when the generation should be
        asked, to see whether the scope is as it was after the last change."""
        if due is not None and now >= due and self.window.baseline is not None and \
                not self.confirm.busy and not self.pacer.stale:
            self.confirm.ask_genid()
            return True
        return False

    @property
    def baseline(self) -> Baseline | None:
        return self.window.baseline
