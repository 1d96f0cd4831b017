"""The executor: sockets, timers and signals in; the machine's actions out.

It sleeps on the nf_tables event socket, rtnetlink, D-Bus and a signal pipe, and
wakes for them, for the machine's next deadline, or for the keep-alive tick
(EXTEND_TIMEOUT_USEC, WATCHDOG, a fresh STATUS). Every decision is the machine's
(fwgate.core.machine); this module only carries out what it asks and feeds back
what happened.

Actions are carried out at once, in order, each answer fed back before anything
else is read; but for one: a compat probe the machine marks `background` (after
READY nothing waits on it; a snapshot and analysis of every iptables table, a second
or so at 50k rules) runs in a worker thread on a socket of its own, so events are
read and repairs made at once meanwhile. The executor reads nothing of the machine's
but its actions and `next_wakeup()`; what it keeps itself is what it did (READY sent:
no more start-timeout extensions) and what an action told it (`Watching`: the scope
whose last foreign change its result reports).

Everything it touches comes in as a value: the sources it sleeps on and the kernel it
asks (`open_sources`, adapters.sources.Sources: the event socket, two NfKernels, the
signal pipe, the worker, the link and unit watchers), the clock, the unit control
(`restart_unit`), where the config comes from on SIGHUP (`config_source`), and which
iptables k3s runs (`k3s_iptables`). The tests run this same loop over an in-memory node
(tests/fwgate_testing/fake_node.py).
"""
from __future__ import annotations

import importlib
import math
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from . import model
from .adapters.configfile import ConfigSource
from .adapters.k3s import K3sIptables, unasked
from .adapters.journal import Log
from .adapters.kernel import NfKernel
from .adapters.nfsock import DumpInterrupted
from .adapters.notify import Notifier
from .adapters.sources import Sources
from .adapters.statefile import StateWriter
from .config import METRICS_AUTO, Config, ConfigError
from .core import actions as A
from .core import inputs as I
from .core.deferred import load
from .core.machine import Machine
from .core.readiness import Role
from .errors import EnvironmentProblem, FwgateError
from .model import Facts
from .netbird import NetbirdEnvironment

KEEPALIVE = 2.0        # seconds between EXTEND_TIMEOUT_USEC/STATUS ticks while working
EXTEND_BY = 4 * KEEPALIVE


@dataclass
class Result:
    exit_code: int
    status: str
    ready_at: float | None = None          # time.monotonic() of READY=1
    last_rule_change: float | None = None  # monotonic time of the last foreign watched change


class Daemon:
    """Runs one Machine to its Exit: `fwgate run`, `fwgate guard`, the demo."""

    def __init__(self, config: Config, log: Log, notifier: Notifier, role: Role = Role.GATE, *,
                 keep_guarding: bool | None = None,
                 config_source: ConfigSource | None = None,
                 k3s_iptables: Callable[[Config], K3sIptables] = unasked,
                 netns: str | None = None,
                 state_file: str | None = None, metrics_file: str | None = None,
                 tick: float = KEEPALIVE, clock: Callable[[], float] = time.monotonic,
                 open_sources: Callable[[Callable[[], float]], Sources] = Sources,
                 restart_unit: Callable[[str], str | None] | None = None,
                 on_status: Callable[[str], None] | None = None,
                 read_netbird: Callable[[], NetbirdEnvironment] | None = None,
                 config_error: str | None = None, crash_streak: int = 0):
        self.config, self.log, self.notifier, self.role = config, log, notifier, role
        self.keep_guarding, self.netns = keep_guarding, netns
        self.config_source = config_source  # read again on SIGHUP; None: no reloading
        # Asked again for every probe: an upgrade may replace the binaries under a guard.
        self.k3s_iptables = k3s_iptables
        self.state = StateWriter(state_file, metrics_file, log.warning,
                                 metrics_if_dir=config.metrics_textfile == METRICS_AUTO)
        self.tick, self.clock, self.on_status = tick, clock, on_status
        self.open_sources = open_sources
        self.restart_unit = restart_unit or _restart_if_crashed
        self.read_netbird = read_netbird or _read_netbird
        self.config_error = config_error  # the file was bad: `config` is a fallback
        self.crash_streak = crash_streak  # predecessors in a row that died before guarding
        self.ready_at: float | None = None     # READY=1 went out: the gate's job is done
        self.watched: frozenset[model.TableRef] = frozenset()  # as the machine says (Watching)
        self.last_change: float | None = None
        self.unsaved: A.SaveState | None = None
        self.warm = False

    # -- set-up ---------------------------------------------------------------------

    def open(self) -> None:
        self.io = self.open_sources(self.clock)

    @property
    def own_portids(self) -> frozenset[int]:
        return self.io.own_portids

    def close(self) -> None:
        if getattr(self, "io", None) is not None:
            self.io.close()

    def _watch(self) -> dict[str, dict]:
        """The first facts of the link and unit watchers the stages ask about."""
        return self.io.watch(self.config) if self.role is Role.GATE else {}

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> Result:
        self.open()
        try:
            return self._loop()
        finally:
            self.close()

    def _loop(self) -> Result:
        now = self.clock()
        facts = Facts(**self._watch())
        self.machine = Machine(self.config, now, self.role, own_portids=self.own_portids,
                               keep_guarding=self.keep_guarding,
                               wall_offset=time.time() - time.monotonic(), pid=os.getpid(),
                               netns=self.netns, facts=facts, config_error=self.config_error,
                               crash_streak=self.crash_streak)
        queue: deque[I.Input] = deque()
        done = self._execute(self.machine.start(now), queue)
        next_tick = now
        while done is None:
            while queue and done is None:
                done = self._execute(self.machine.handle(queue.popleft()), queue)
            if done is not None:
                break
            now = self.clock()
            if now >= next_tick:  # before READY: keep-alive, live STATUS; then a watchdog
                before_ready = self.ready_at is None
                self.notifier.keepalive(before_ready, EXTEND_BY)
                queue.append(I.Tick(now))
                due = before_ready or self.notifier.watchdog_interval
                next_tick = now + self.notifier.tick_interval(self.tick) if due else math.inf
                continue
            wake = min(self.machine.next_wakeup(), next_tick)
            self._save()
            queue.extend(self._wait(max(0.0, wake - self.clock())) or [I.Tick(self.clock())])
        self._save()
        return Result(done.code, done.status, self.ready_at, self.last_change)

    def _wait(self, timeout: float) -> list[I.Input]:
        out: list[I.Input] = []
        for what in self.io.ready(None if math.isinf(timeout) else timeout):
            now = self.clock()
            if what == "nft":
                out += self._read_events()
            elif what == "signals":
                out += self._on_signals(now)
            elif what == "worker":
                out += self._worker_done()
            elif (facts := self.io.watchers.changed(what)) is not None:
                out.append(I.LinksChanged(now, facts) if what == "links"
                           else I.UnitsChanged(now, facts))
        return out

    def _read_events(self) -> list[I.Input]:
        out: list[I.Input] = []
        for at, events in self.io.events.read():
            if events is None:
                out.append(I.EventsLost(at))
                continue
            if any(e.table in self.watched and e.portid not in self.own_portids
                   for e in events if e.table is not None):
                self.last_change = at
            out.append(I.NftEvents(at, events))
        return out

    def _on_signals(self, now: float) -> list[I.Input]:
        out: list[I.Input] = []
        for sig in self.io.signals.pending():
            if sig != signal.SIGHUP:
                out.append(I.Stop(now, sig.name))
            elif self.config_source is not None:
                try:
                    self.config = self.config_source.reload()
                except ConfigError as exc:
                    out.append(I.ConfigRejected(now, str(exc)))
                    continue
                found = self._watch()
                out += [I.LinksChanged(now, found["links"])] if "links" in found else []
                out += [I.UnitsChanged(now, found["units"])] if "units" in found else []
                out.append(I.Reload(now, self.config))
        return out

    # -- actions ------------------------------------------------------------------------

    def _execute(self, actions: list[A.Action], queue: deque) -> A.Exit | None:
        """Carry out the actions in order; answers go on the queue. An Exit ends the
        run once the rest of its batch (state, journal) is done."""
        done = None
        for action in actions:
            if isinstance(action, A.Exit):
                done = action
            else:
                queue.extend(self.carry_out(action))
        return done

    def carry_out(self, action: A.Action) -> list[I.Input]:
        """Do what one action asks; the inputs it answers with (none for most). An
        answer comes after the events read with it: the kernel queues a transaction's
        notifications before its commit returns."""
        now = self.clock
        match action:
            case A.Dump():
                started = now()
                try:
                    snap = self.io.kernel.snapshot(action.scope, keep_rules=action.keep_rules)
                except DumpInterrupted:
                    return [*self._read_events(), I.DumpFailed(now())]
                digest = model.digest(snap, action.digest_scope)
                cost = now() - started  # the machine paces its dumps by it
                answer = [*self._read_events(), I.Dumped(now(), snap, digest, cost)]
                if not self.warm:
                    self.warm = _warm_up()
                return answer
            case A.QueryGeneration():
                genid = self.io.kernel.genid()
                return [*self._read_events(), I.Generation(now(), genid)]
            case A.RunCompat() if action.background:
                self.io.worker.start(lambda: self._probe(self.io.worker_kernel, action))
                return []
            case A.RunCompat():
                return [*self._read_events(), I.CompatDone(now(), self._probe(self.io.kernel, action))]
            case A.RepairRules():
                produced = self.io.kernel.commit_repairs(action.repairs, action.genid)
                refused = [] if produced else self._read_events()  # what came first decides
                return [*refused, I.RepairDone(now(), action.repairs, produced)]
            case A.Watching():
                self.watched = action.tables
            case A.Notify():
                fields = dict(action.fields)
                self.ready_at = now() if "READY" in fields else self.ready_at
                self.notifier.send(**fields)
                if "STATUS" in fields and self.on_status:
                    self.on_status(str(fields["STATUS"]))
            case A.Journal():
                self.log.event(action.kind, action.stage, action.message, action.elapsed_ms,
                               action.genid, action.digest, action.level)
            case A.Log():
                self.log(action.level, action.message)
            case A.SaveState():  # the latest wins; written before the loop sleeps
                self.unsaved = action
            case A.RestartUnit():
                return [self._restart(action.unit)]
            case A.ReadNetbird():
                return [I.NetbirdRead(now(), self.read_netbird())]
        return []

    def _save(self) -> None:
        """Write the state the machine last published: once per wake-up, not once per
        transition, and never between an event and what it asks for (a repair, READY)."""
        if self.unsaved is not None:
            self.state.save(self.unsaved.state)
            self.unsaved = None

    def _probe(self, kernel: NfKernel, action: A.RunCompat):
        k3s = self.k3s_iptables(self.config)
        return kernel.probe(repair=action.repair, binaries=k3s.binaries, netns=self.netns,
                            ifaces=self.config.tunnel_links(), setup=k3s.setup, notes=k3s.notes)

    def _worker_done(self) -> list[I.Input]:
        result = self.io.worker.result()
        if isinstance(result, (FwgateError, OSError, DumpInterrupted)):
            # A binary gone in an upgrade, the ruleset never still: a guard keeps going.
            reason = str(result) or type(result).__name__
            return [*self._read_events(), I.CompatFailed(self.clock(), reason)]
        if isinstance(result, BaseException):
            raise result
        return [*self._read_events(), I.CompatDone(self.clock(), result)]

    def _restart(self, unit: str) -> I.UnitRestarted:
        try:
            return I.UnitRestarted(self.clock(), unit, self.restart_unit(unit))
        except EnvironmentProblem as exc:
            return I.UnitRestarted(self.clock(), unit, None, str(exc))


def _warm_up() -> bool:
    """Load the compat reader, the probe and the mark model while the first quiet window
    runs (tens of milliseconds): not at start, where they would hold up the first
    snapshot, nor at the window's end, where they would hold up READY. The machine
    names them at its top, deferred (fwgate.core.deferred): this runs their code."""
    for module in ("fwgate.compat.policy", "fwgate.compat.repair", "fwgate.adapters.probe",
                   "fwgate.marks"):
        load(importlib.import_module(module))
    return True


def _read_netbird() -> NetbirdEnvironment:
    from .adapters.netbird import netbird_environment
    return netbird_environment()


def _restart_if_crashed(unit: str) -> str | None:
    from .adapters.systemd import restart_if_crashed
    return restart_if_crashed(unit)
