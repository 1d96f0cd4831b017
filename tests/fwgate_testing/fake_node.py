"""The real executor (fwgate.daemon.Daemon) over an in-memory node, for pure-logic tests.

The node stands in for what the daemon sleeps on and asks (adapters.sources.Sources): a
kernel holding a generation id, Netbird's table and the rules of `ip filter`, its event
queue, the wt0 link, the units, signals, and a virtual clock that moves only when the
daemon waits. The worker is the real one (a thread and a socket pair): after READY the
compat probe runs there, as in production. Time stands still while it runs, so a probe
takes no virtual time and the runs are repeatable.

    node = FakeNode(config)
    node.run([(1.0, "link_up"), (2.0, "table_add"), (3.0, "change", False)])
    node.ready_at, node.exit.exit_code, node.kinds()

A timeline entry is (time, what) or (time, what, notify): notify=False commits without
an event (a change made before fwgate subscribed, or one the kernel never announced).
`what`: link_up, link_down, table_add, table_del, change (Netbird's table), netbird_rule
(Netbird's native `frwacceptoif` rule in ip filter FORWARD), events_lost (ENOBUFS),
stop (SIGTERM), interrupt (SIGINT), reload (SIGHUP; the third element is the new
Config), unit_failed:UNIT (the unit crashed: the next restart finds it failed).
"""
from __future__ import annotations

import math
import os
import select
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

from fwgate import model
from fwgate import programmer as P
from fwgate.adapters.journal import Log
from fwgate.adapters.notify import Notifier
from fwgate.adapters.worker import Worker
from fwgate.compat.policy import ProbeResult
from fwgate.compat.reader import CompatReport
from fwgate.config import Config, LinkUp
from fwgate.core import actions as A
from fwgate.core.readiness import Role
from fwgate.daemon import Daemon, Result
from fwgate.model import Chain, Expr, LinkState, Rule, Snapshot, Table, TableRef
from fwgate.netlink.exprs import split_expressions
from fwgate.netlink.nftables import Event

NETBIRD = TableRef("ip", "netbird")
FILTER = TableRef("ip", "filter")
OWN, NETBIRD_PORT = 77, 4242      # the netlink ports of our transactions and of Netbird's
WORKER_WAIT = 60.0                # real seconds a probe on the worker may take
SPIN_LIMIT = 100                  # wake-ups in a row at one instant with nothing to do


class Horizon(Exception):
    """The node's time ran out: the daemon stops there (a guard never ends by itself)."""


def netbird_oif_rule(handle: int) -> Rule:
    """Netbird's native FORWARD rule, as fwgate.programmer writes it (DESIGN section 1)."""
    blob = b"".join(P.forward_oif_rule("wt0"))
    exprs = tuple(Expr(n, d) for n, d in split_expressions(blob))
    return Rule("ip", "filter", "FORWARD", handle, -1, exprs, P.TAG_FORWARD_OIF)


def no_findings(kernel: "FakeKernel") -> ProbeResult:
    return ProbeResult(CompatReport(), kernel.generation)


class FakeKernel:
    """nf_tables as the executor asks it (adapters.kernel.NfKernel's methods), in memory.
    Also what the tests measure: when foreign changes came, how long each repaired rule
    stood (`repair_windows`: its commit to its replacement)."""

    def __init__(self, clock: Callable[[], float],
                 compat: Callable[["FakeKernel"], ProbeResult] = no_findings) -> None:
        self.clock, self.compat = clock, compat
        self.generation, self.netbird_changes, self.table_handle = 1, 0, 0
        self.table = False
        self.filter_rules: dict[int, Rule] = {}
        self.next_handle = 10
        self.events: list[tuple[Event, ...] | None] = []   # None: the socket overflowed
        self.changed_at: list[float] = []      # foreign changes, announced or not
        self.added_at: dict[int, float] = {}
        self.repair_windows: list[float] = []
        self.probes: list[tuple[bool, str]] = []   # (repair asked, the thread it ran on)

    # -- what the executor asks ---------------------------------------------------------

    portid = OWN

    def snapshot(self, scope, keep_rules=None) -> Snapshot:
        scope = tuple(scope)
        return Snapshot(self.generation, {ref: t for ref, t in self._tables().items()
                                          if ref in scope}, scope)

    def genid(self) -> int:
        return self.generation

    def commit_repairs(self, repairs, genid: int) -> int | None:
        if genid != self.generation:
            return None  # ERESTART: something committed since
        now = self.clock()
        for repair in repairs:
            old = self.filter_rules.pop(repair.rule.handle)
            self.repair_windows.append(now - self.added_at[old.handle])
            new = Rule("ip", "filter", "FORWARD", self.next_handle, -1, (), old.userdata)
            self.next_handle += 1
            self.filter_rules[new.handle] = new
        self._commit([Event("NEWRULE", FILTER), Event("DELRULE", FILTER)], True, OWN)
        return self.generation

    def probe(self, *, repair: bool, **_ignored) -> ProbeResult:
        self.probes.append((repair, threading.current_thread().name))
        return self.compat(self)

    # -- what the node does ---------------------------------------------------------------

    def _tables(self) -> dict[TableRef, Table]:
        tables = {}
        if self.table:
            # Netbird's changes show in its table's content; a re-created table gets a
            # new handle, as in the kernel.
            tables[NETBIRD] = Table("ip", "netbird", handle=self.table_handle,
                                    sets=(("changes", str(self.netbird_changes).encode()),))
        if self.filter_rules:
            tables[FILTER] = Table("ip", "filter", chains=(Chain("FORWARD", 1, 2, 0),),
                                   rules=tuple(self.filter_rules.values()))
        return tables

    def digest(self) -> str:
        return model.digest(self.snapshot((NETBIRD, FILTER)), (NETBIRD, FILTER))

    def _commit(self, events: list[Event], notify: bool, portid: int,
                before: str | None = None) -> None:
        self.generation += 1
        # A foreign change: announced, or one that moved the ruleset (a silent no-op is none).
        if portid != OWN and (notify or before != self.digest()):
            self.changed_at.append(self.clock())
        if notify:
            stamped = [Event(e.kind, e.table, None, portid, None, e.rule) for e in events]
            self.events.append(tuple(stamped + [Event("NEWGEN", None, self.generation, portid)]))

    def change(self, what: str, notify: bool) -> None:
        before = self.digest()
        if what == "netbird_rule":
            rule = netbird_oif_rule(self.next_handle)
            self.next_handle += 1
            self.filter_rules[rule.handle] = rule
            self.added_at[rule.handle] = self.clock()
            self._commit([Event("NEWRULE", FILTER, rule=rule)], notify, NETBIRD_PORT, before)
            return
        if what == "table_add":
            self.table_handle += 0 if self.table else 1
            self.table = True
        elif what == "table_del":
            self.table = False
        elif what == "change":
            self.netbird_changes += 1
        else:
            raise ValueError(f"no such change: {what}")
        self._commit([Event("NEWRULE", NETBIRD)], notify, NETBIRD_PORT, before)


class _Events:
    def __init__(self, node: "FakeNode") -> None:
        self.node = node

    def read(self):
        queued, self.node.kernel.events = self.node.kernel.events, []
        return [(self.node.clock(), batch) for batch in queued]


class _Signals:
    def __init__(self) -> None:
        self.queued: list[signal.Signals] = []

    def pending(self) -> list[signal.Signals]:
        out, self.queued = self.queued, []
        return out


class _Watchers:
    def __init__(self, node: "FakeNode") -> None:
        self.node = node
        self.open: set[str] = set()
        self.moved: set[str] = set()

    def open_for(self, config: Config) -> dict[str, dict]:
        conditions = [c for s in config.stages for c in s.conditions]
        out: dict[str, dict] = {}
        if "links" not in self.open and any(isinstance(c, LinkUp) for c in conditions):
            self.open.add("links")
            out["links"] = self.node.links()
        wanted = set(config.units_watched())
        if wanted and not wanted <= self.node.units_watched:
            self.open.add("units")
            self.node.units_watched = wanted
            out["units"] = self.node.unit_states()
        return out

    def changed(self, what: str) -> dict | None:
        self.moved.discard(what)
        return self.node.links() if what == "links" else self.node.unit_states()


class ConfigFile:
    """A config source whose file says something else at each reload."""

    def __init__(self, configs: list[Config]) -> None:
        self.configs = list(configs)

    def reload(self) -> Config:
        return self.configs.pop(0)


@dataclass
class Recorded:
    at: float
    action: A.Action


class RecordingDaemon(Daemon):
    """The daemon as it is; every action it carries out noted with the node's time."""

    def __init__(self, *args, recorded: list[Recorded], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recorded = recorded

    def carry_out(self, action: A.Action):
        self.recorded.append(Recorded(self.clock(), action))
        return super().carry_out(action)


class FakeNode:
    """What the daemon sleeps on (adapters.sources.Sources' attributes), in memory."""

    def __init__(self, config: Config, role: Role = Role.GATE, keep_guarding: bool = False,
                 compat: Callable[[FakeKernel], ProbeResult] = no_findings,
                 units: dict[str, str] | None = None, notifier: Notifier | None = None) -> None:
        self.config, self.role, self.keep_guarding = config, role, keep_guarding
        self.notifier = notifier or Notifier.disabled()
        self.now = 0.0
        self.kernel = FakeKernel(self.clock, compat)
        self.worker_kernel = self.kernel           # one kernel, asked on two sockets
        self.own_portids = frozenset({OWN})
        self.events, self.signals, self.watchers = _Events(self), _Signals(), _Watchers(self)
        self.worker: Worker | None = None
        self.link_up = False
        self.units = dict(units or {})
        self.units_watched: set[str] = set()
        self.restarts: list[tuple[float, str, str | None]] = []
        self.recorded: list[Recorded] = []
        self.exit: Result | None = None
        self.ready_at: float | None = None
        self.daemon: RecordingDaemon | None = None
        self._timeline: list[tuple] = []
        self._horizon = math.inf
        self._spins = 0

    # -- the run -----------------------------------------------------------------------------

    def clock(self) -> float:
        return self.now

    def run(self, timeline=(), horizon: float = 1000.0) -> None:
        """Run the daemon until it exits or the node's time reaches `horizon`."""
        entries = [(tuple(e) + (True,))[:3] for e in timeline]
        # popped from the end: earliest first, entries at one time in the order given
        in_order = sorted(range(len(entries)), key=lambda i: (entries[i][0], i))
        self._timeline = [entries[i] for i in reversed(in_order)]
        self._horizon = horizon
        self.daemon = RecordingDaemon(
            self.config, Log(journal=False, stream=open(os.devnull, "w")), self.notifier,
            self.role, keep_guarding=self.keep_guarding,
            config_source=ConfigFile([]), clock=self.clock,
            open_sources=self._open, restart_unit=self._restart_unit,
            recorded=self.recorded)
        try:
            self.exit = self.daemon.run()
        except Horizon:
            self.exit = None
        finally:
            self.daemon.log.stream.close()
        self.ready_at = self.daemon.ready_at

    @property
    def machine(self):
        return self.daemon.machine

    def _open(self, clock) -> "FakeNode":
        self.worker = Worker()
        return self

    def _restart_unit(self, unit: str) -> str | None:
        was = self.units.get(unit)
        answer = was if was == "failed" else None   # restarted only when it had crashed
        if answer:
            self.units[unit] = "active"
        self.restarts.append((self.now, unit, answer))
        return answer

    # -- Sources -------------------------------------------------------------------------------

    def watch(self, config: Config) -> dict[str, dict]:
        return self.watchers.open_for(config)

    def ready(self, timeout: float | None) -> list[str]:
        """What is readable, moving the node's time on to the next thing that happens
        (a timeline entry) or to the end of `timeout`, whichever comes first."""
        if self.worker.thread is not None:   # a probe runs: time stands still until it ends
            readable, _, _ = select.select([self.worker], [], [], WORKER_WAIT)
            assert readable, f"the worker's probe took over {WORKER_WAIT:g}s"
            return ["worker"]
        now_readable = self._readable()
        if now_readable:
            self._spins = 0
            return now_readable
        deadline = self.now + (math.inf if timeout is None else timeout)
        upcoming = self._timeline[-1][0] if self._timeline else math.inf
        if min(deadline, upcoming) >= self._horizon:
            self.now = max(self.now, self._horizon)
            raise Horizon()
        if upcoming <= deadline:
            self.now = max(self.now, upcoming)
            while self._timeline and self._timeline[-1][0] <= self.now:
                self._happen(*self._timeline.pop()[1:])
            self._spins = 0
            return self._readable()
        # A daemon that keeps asking to be woken now, with nothing to do, would busy-loop.
        self._spins = self._spins + 1 if deadline <= self.now else 0
        assert self._spins < SPIN_LIMIT, f"no progress at {self.now}: {self.recorded[-5:]}"
        self.now = deadline
        return []

    def _readable(self) -> list[str]:
        out = ["nft"] if self.kernel.events else []
        out += ["signals"] if self.signals.queued else []
        return out + sorted(self.watchers.moved)

    def _happen(self, what: str, detail) -> None:
        if what in ("link_up", "link_down"):
            self.link_up = what == "link_up"
            self.watchers.moved.add("links")
        elif what == "events_lost":
            self.kernel.events.append(None)
        elif what in ("stop", "interrupt", "reload"):
            self.signals.queued.append({"stop": signal.SIGTERM, "interrupt": signal.SIGINT,
                                        "reload": signal.SIGHUP}[what])
            if what == "reload":
                self.daemon.config_source.configs.append(detail)
        elif what.startswith("unit_failed:"):
            self.units[what.split(":", 1)[1]] = "failed"
        else:
            self.kernel.change(what, notify=detail)

    def links(self) -> dict[str, LinkState]:
        return {"wt0": LinkState(self.link_up)}

    def unit_states(self) -> dict[str, str]:
        return dict(self.units)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()

    # -- what the tests read ---------------------------------------------------------------------

    @property
    def actions(self) -> list[A.Action]:
        return [r.action for r in self.recorded]

    def actions_from(self, at: float) -> list[A.Action]:
        return [r.action for r in self.recorded if r.at >= at]

    def kinds(self, actions=None) -> list[str]:
        return [type(a).__name__ for a in (self.actions if actions is None else actions)]

    def journal(self) -> list[str]:
        return [a.kind for a in self.actions if isinstance(a, A.Journal)]

    @property
    def repair_windows(self) -> list[float]:
        return self.kernel.repair_windows

    @property
    def changed_at(self) -> list[float]:
        return self.kernel.changed_at

    @property
    def table(self) -> bool:
        return self.kernel.table
