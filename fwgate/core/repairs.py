"""Repair at once: each rule is judged as it is added, for the iptables k3s runs
(every version until a compat run has said which). Rules of a repairable shape wait
here from the event that added them until their transaction's NEWGEN, then go out as
one batch guarded by that generation. Pure.

A batch the kernel refuses (something committed first) is tried again on the newest
generation while the retry policy allows; then the queue gives up and asks for a
sweep: a full compat run, once it is our turn, finds whatever is still there.

After READY a repair may come too late for a unit that died on the rule meanwhile
(k3s): `after_ready.restart_after_repair` restarts it if it crashed, at most once per
`restart_interval` (RestartAfterRepair)."""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..compat.impact import Setup
from ..compat.profiles import PROFILES, Profile
from ..config import AfterReady
from ..model import Rule, TableRef
from ..netlink.nftables import Event
from .deferred import deferred
from .retry import MOVED_RULESET, RetryPolicy

if TYPE_CHECKING:
    from ..compat.reader import Finding
    from ..compat.repair import Repair

# The reader and the repair planner, named here, loaded at first use (fwgate.core.deferred).
compat_policy = deferred("fwgate.compat.policy")
compat_repair = deferred("fwgate.compat.repair")

RuleKey = tuple[str, str, str, int]  # family, table, chain, handle


def _key(rule: Rule) -> RuleKey:
    return (rule.family, rule.table, rule.chain, rule.handle)


class RepairQueue:
    def __init__(self, policy: RetryPolicy = MOVED_RULESET, setup: Setup | None = None):
        self.policy = policy
        self.pending: dict[RuleKey, tuple[Rule, str]] = {}
        self.genid: int | None = None  # the generation to guard the batch with, once known
        self.in_flight = False
        self.refused = 0               # batches refused in a row
        self.profiles: tuple[Profile, ...] | None = None  # the readers k3s runs, once known
        self.setup = setup             # which k3s components run: what breaks matters

    def learned(self, profiles: tuple[Profile, ...] | None, setup: Setup | None) -> None:
        """A compat run said which iptables and which components k3s runs."""
        self.profiles = profiles
        self.setup = setup or self.setup

    def read(self, events: Iterable[Event], own_portids: frozenset[int], judge: bool,
             repair: bool) -> list[Finding]:
        """A batch of events as read: rules added by others judged (when `judge`), rules
        gone forgotten, each NEWGEN noted. The findings to say at once (see `judge`)."""
        said = []
        for event in events:
            if event.table is None:
                self.committed(event.genid)
                continue
            self.forget(event)  # ours too: the worker's probe may have repaired it
            if judge and event.kind == "NEWRULE" and event.rule is not None and \
                    event.portid not in own_portids and (found := self.judge(event.rule, repair)):
                said.append(found)
        return said

    def judge(self, rule: Rule, repair: bool) -> Finding | None:
        """A rule just added: queued when it has a known re-encoding and `repair` is on.
        The finding when k3s dies on it and it stays (to be said at once), else None."""
        finding = compat_policy.judge_added_rule(rule, self.profiles or PROFILES,
                                                 self.setup or Setup())
        if finding is None:
            return None
        if repair and finding.repairable:
            self.add(rule, finding.reason)
            return None
        return finding if finding.blocking else None

    def add(self, rule: Rule, reason: str) -> None:
        self.pending[_key(rule)] = (rule, reason)
        self.genid = None  # wait for this transaction's NEWGEN

    def committed(self, genid: int | None) -> None:
        """A NEWGEN: the rules waiting are in the ruleset at this generation."""
        if self.pending and genid is not None:
            self.genid = genid

    def forget(self, event: Event) -> None:
        """A rule waiting for its repair went away first (its table with it)."""
        if not self.pending:
            return
        if event.kind == "DELRULE" and event.rule is not None:
            self.pending.pop(_key(event.rule), None)
        elif event.kind == "DELTABLE" and event.table is not None:
            gone: TableRef = event.table
            for key in [k for k in self.pending if (k[0], k[1]) == (gone.family, gone.name)]:
                del self.pending[key]

    def clear(self) -> None:
        self.pending.clear()

    def next_batch(self) -> tuple[tuple[Repair, ...], int] | None:
        """The batch to commit now and the generation guarding it, or None. A queue whose
        rules have no known re-encoding empties."""
        if not self.pending or self.genid is None or self.in_flight:
            return None
        repairs = tuple(compat_repair.plan_rules(self.pending.values()))
        if not repairs:
            self.pending.clear()
            return None
        self.in_flight = True
        return repairs, self.genid

    def done(self, repairs: Iterable[Repair], produced_genid: int | None,
             newest_genid: int | None) -> bool:
        """The batch's answer. False: carry on. True: refused too often in a row (or no
        newer generation to try on): the queue is emptied and a sweep should follow."""
        self.in_flight = False
        if produced_genid is None:
            self.refused += 1
            if self.policy.again(self.refused) and newest_genid is not None:
                self.genid = newest_genid
                return False
            self.pending.clear()
            return True
        self.refused = 0
        for r in repairs:
            self.pending.pop(_key(r.rule), None)
        return False


class RestartAfterRepair:
    def __init__(self) -> None:
        self.last = -math.inf   # the last time a unit was really restarted

    def due(self, now: float, after_ready: AfterReady) -> str | None:
        """The unit to restart (if it crashed) after a repair now, or None."""
        unit = after_ready.restart_after_repair
        if unit and now - self.last >= after_ready.restart_interval:
            return unit
        return None

    def restarted(self, now: float) -> None:
        self.last = now
