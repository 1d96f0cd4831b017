"""The executor: sockets, timers and signals in; the machine's actions out.

It sleeps on the nf_tables event socket, rtnetlink, D-Bus and a signal pipe, and
wakes for them, for the machine's next deadline, or for the keep-alive tick
(EXTEND_TIMEOUT_USEC, WATCHDOG, a fresh STATUS). Every decision is the machine's
(fwgate.core.machine); this module only carries out what it asks and feeds back
what happened.

Actions are carried out at once, in order, each answer fed back before anything
else is read; but for one: after READY the compat probe (a snapshot and analysis
of every iptables table, a second or so at 50k rules) runs in a worker thread on
a socket of its own, so events are read and repairs made at once meanwhile.
"""
from __future__ import annotations

import errno
import math
import os
import queue
import selectors
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from . import model
from .adapters import nft, statefile
from .adapters.journal import Log
from .adapters.nfsock import DumpInterrupted, NetlinkError, NfSocket
from .adapters.notify import Notifier
from .compat.impact import Setup
from .compat.probe import commit_repairs, probe
from .config import Config, ConfigError, LinkUp, UnitActive
from .core import actions as A
from .core import inputs as I
from .core.machine import Machine, Role
from .errors import EnvironmentProblem, FwgateError
from .model import Facts
from .netbird import explain_fallback
from .netlink.consts import NFNLGRP_NFTABLES
from .netlink.nftables import decode_events

EVENT_RCVBUF = 8 << 20
KEEPALIVE = 2.0        # seconds between EXTEND_TIMEOUT_USEC/STATUS ticks while working
EXTEND_BY = 4 * KEEPALIVE
MAX_READS = 256        # event datagrams read per wake-up before looking at the rest


@dataclass
class Result:
    exit_code: int
    status: str
    ready_at: float | None = None          # time.monotonic() of READY=1
    last_rule_change: float | None = None  # monotonic time of the last foreign watched change


class _Signals:
    """Signals become bytes on a socket the selector watches: no work in handlers."""

    HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.rx, self.tx = socket.socketpair()
        self.rx.setblocking(False)
        self.tx.setblocking(False)
        self.previous = {s: signal.signal(s, lambda *_: None) for s in self.HANDLED}
        self.old_fd = signal.set_wakeup_fd(self.tx.fileno(), warn_on_full_buffer=False)

    def pending(self) -> list[int]:
        try:
            return list(self.rx.recv(64))
        except BlockingIOError:
            return []

    def close(self) -> None:
        signal.set_wakeup_fd(self.old_fd)
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.rx.close()
        self.tx.close()


class Daemon:
    """Runs one Machine to its Exit: `fwgate run`, `fwgate guard`, the demo."""

    def __init__(self, config: Config, log: Log, notifier: Notifier, role: Role = Role.GATE, *,
                 keep_guarding: bool | None = None,
                 k3s: Callable[[], tuple[tuple, tuple[str, ...], Setup]] | None = None,
                 reload: Callable[[], Config] | None = None, netns: str | None = None,
                 state_file: str | None = None, metrics_file: str | None = None,
                 tick: float = KEEPALIVE, clock: Callable[[], float] = time.monotonic,
                 on_status: Callable[[str], None] | None = None,
                 explain_netbird: Callable[[], tuple[str, ...]] | None = None):
        self.config, self.log, self.notifier, self.role = config, log, notifier, role
        self.keep_guarding, self.reload = keep_guarding, reload
        # The iptables binaries k3s runs, how they were found, which k3s components run:
        # asked again for every probe (an upgrade may replace them under a running guard).
        self.k3s = k3s or (lambda: ((), (), Setup()))
        self.netns, self.state_file, self.metrics_file = netns, state_file, metrics_file
        self.tick, self.clock, self.on_status = tick, clock, on_status
        self.explain_netbird = explain_netbird or _explain_netbird
        self.links = self.units = None
        self.ready_at: float | None = None
        self.last_change: float | None = None
        self._state_warned = False
        self._probing: threading.Thread | None = None
        self._probed: queue.SimpleQueue = queue.SimpleQueue()

    # -- set-up ---------------------------------------------------------------------

    def open(self) -> None:
        """The sockets: nf_tables events (subscribed before the first dump, so no
        change falls in between), requests, the worker's requests, signals."""
        try:
            self.events = NfSocket(groups=(NFNLGRP_NFTABLES,), rcvbuf=EVENT_RCVBUF)
            self.events.sock.setblocking(False)
            self.nl = NfSocket()
            self.worker_nl = NfSocket()
        except NetlinkError as exc:
            hint = " (needs root or CAP_NET_ADMIN)" if exc.errno in (errno.EPERM, errno.EACCES) \
                else " (is nf_tables available?)"
            raise EnvironmentProblem(f"cannot use nf_tables: {exc.strerror}{hint}") from None
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.events.sock, selectors.EVENT_READ, "nft")
        self.signals = _Signals()
        self.selector.register(self.signals.rx, selectors.EVENT_READ, "signals")
        self.woken, self.wake = socket.socketpair()  # the worker's "done"
        self.woken.setblocking(False)
        self.selector.register(self.woken, selectors.EVENT_READ, "worker")

    @property
    def own_portids(self) -> frozenset[int]:
        return frozenset({self.nl.portid, self.worker_nl.portid})

    def _watchers(self, now: float) -> list[I.Input]:
        """Open the link and unit watchers the stages ask about (those not open yet);
        their first facts."""
        conditions = [c for s in self.config.stages for c in s.conditions] \
            if self.role is Role.GATE else []
        out: list[I.Input] = []
        if self.links is None and any(isinstance(c, LinkUp) for c in conditions):
            from .adapters.links import LinkWatch
            self.links = LinkWatch()
            self.selector.register(self.links.fileno(), selectors.EVENT_READ, "links")
            out.append(I.LinksChanged(now, self.links.links))
        units = [c.unit for c in conditions if isinstance(c, UnitActive)]
        if units and (self.units is None or set(units) - set(self.units.units)):
            from .adapters.systemd import UnitWatch
            if self.units is not None:
                self.selector.unregister(self.units.fileno())
                self.units.close()
            self.units = UnitWatch(units)
            self.selector.register(self.units.fileno(), selectors.EVENT_READ, "units")
            out.append(I.UnitsChanged(now, self.units.states))
        return out

    def close(self) -> None:
        if self._probing is not None:
            self._probing.join()
        for part in (getattr(self, n, None) for n in ("signals", "links", "units", "events", "nl",
                                                      "worker_nl", "woken", "wake")):
            if part is not None:
                part.close()
        if getattr(self, "selector", None):
            self.selector.close()

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> Result:
        self.open()
        try:
            return self._loop()
        finally:
            self.close()

    def _loop(self) -> Result:
        # The probe's worker holds the interpreter in turns: hand it back to the event
        # loop within a millisecond (the default is 5), so a repair never waits long.
        sys.setswitchinterval(0.001)
        now = self.clock()
        facts = Facts()
        for first in self._watchers(now):
            facts = replace(facts, **({"links": first.links} if isinstance(first, I.LinksChanged)
                                      else {"units": first.units}))
        self.machine = Machine(self.config, now, self.role, own_portids=self.own_portids,
                               keep_guarding=self.keep_guarding,
                               wall_offset=time.time() - time.monotonic(), pid=os.getpid(),
                               netns=self.netns, facts=facts, setup=self.k3s()[2])
        queue: deque[I.Input] = deque()
        exit_action = self._execute(self.machine.start(now), queue)
        next_tick = now
        while exit_action is None:
            while queue and exit_action is None:
                exit_action = self._execute(self.machine.handle(queue.popleft()), queue)
            if exit_action is not None:
                break
            now = self.clock()
            if now >= next_tick:
                self._keepalive()
                queue.append(I.Tick(now))
                next_tick = now + self._tick_interval() if self._tick_due() else math.inf
                continue
            wake = min(self.machine.next_wakeup(), next_tick)
            queue.extend(self._wait(max(0.0, wake - self.clock())))
            if not queue:
                queue.append(I.Tick(self.clock()))
        return Result(exit_action.code, exit_action.status, self.ready_at, self.last_change)

    def _tick_interval(self) -> float:
        interval = self.notifier.watchdog_interval
        return min(self.tick, interval) if interval else self.tick

    def _tick_due(self) -> bool:
        """Before READY: keep-alive and live STATUS; after it, only a watchdog needs us."""
        return self.machine.before_ready or bool(self.notifier.watchdog_interval)

    def _keepalive(self) -> None:
        fields: dict[str, object] = {}
        if self.machine.before_ready:  # after READY it would stretch a runtime limit instead
            fields["EXTEND_TIMEOUT_USEC"] = int(EXTEND_BY * 1e6)
        if self.notifier.watchdog_interval:
            fields["WATCHDOG"] = 1
        if fields:
            self.notifier.send(**fields)

    def _wait(self, timeout: float) -> list[I.Input]:
        out: list[I.Input] = []
        for key, _ in self.selector.select(None if math.isinf(timeout) else timeout):
            now = self.clock()
            if key.data == "nft":
                out += self._read_events()
            elif key.data == "links" and self.links.process():
                out.append(I.LinksChanged(now, self.links.links))
            elif key.data == "units" and self.units.process():
                out.append(I.UnitsChanged(now, self.units.states))
            elif key.data == "signals":
                out += self._on_signals(now)
            elif key.data == "worker":
                out += self._worker_done()
        return out

    def _read_events(self) -> list[I.Input]:
        """Drain the event socket (bounded: signals and timers wait on us). Events are
        stamped when read, never earlier: that could end a window too soon."""
        out: list[I.Input] = []
        messages = []
        for _ in range(MAX_READS):
            try:
                messages += self.events.recv_messages(socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                if messages:
                    out.append(I.NftEvents(self.clock(), tuple(decode_events(messages))))
                    messages = []
                out.append(I.EventsLost(self.clock()))
        if messages:
            events = tuple(decode_events(messages))
            now = self.clock()
            if any(e.table in self.machine.watched and e.portid != self.nl.portid
                   for e in events if e.table is not None):
                self.last_change = now
            out.append(I.NftEvents(now, events))
        return out

    def _on_signals(self, now: float) -> list[I.Input]:
        out: list[I.Input] = []
        for signum in self.signals.pending():
            if signum != signal.SIGHUP:
                out.append(I.Stop(now, signal.Signals(signum).name))
            elif self.reload is not None:
                try:
                    config = self.reload()
                except ConfigError as exc:
                    self.log.error(f"SIGHUP: keeping the running config: {exc}")
                    continue
                self.config = config
                out += self._watchers(now)
                out.append(I.Reload(now, config))
        return out

    # -- actions ------------------------------------------------------------------------

    def _execute(self, actions: list[A.Action], queue: deque) -> A.Exit | None:
        """Carry out the actions in order; answers go on the queue. An Exit ends the
        run once the rest of its batch (state, journal) is done."""
        exit_action = None
        for action in actions:
            if isinstance(action, A.Exit):
                exit_action = action
            else:
                queue.extend(self.carry_out(action))
        return exit_action

    def carry_out(self, action: A.Action) -> list[I.Input]:
        """Do what one action asks; the inputs it answers with (none for most)."""
        return getattr(self, "_do_" + type(action).__name__)(action)

    def _drained(self) -> list[I.Input]:
        """Events up to now: the kernel queues a transaction's notifications before its
        commit returns, so an answer is only read together with them."""
        return self._read_events()

    def _do_Dump(self, action: A.Dump) -> list[I.Input]:
        started = self.clock()
        try:
            snap = nft.snapshot(self.nl, action.scope, keep_rules=action.keep_rules)
        except DumpInterrupted:
            return [*self._drained(), I.DumpFailed(self.clock())]
        digest = model.digest(snap, action.digest_scope)
        cost = self.clock() - started
        return [*self._drained(), I.Dumped(self.clock(), snap, digest, cost)]

    def _do_QueryGeneration(self, action: A.QueryGeneration) -> list[I.Input]:
        genid = self.nl.genid()
        return [*self._drained(), I.Generation(self.clock(), genid)]

    def _do_RunCompat(self, action: A.RunCompat) -> list[I.Input]:
        if self.machine.ready_sent:  # nothing waits on it: keep reading events meanwhile
            self._probing = threading.Thread(target=self._probe_in_worker, args=(action,),
                                             name="compat-probe", daemon=True)
            self._probing.start()
            return []
        return [*self._drained(), I.CompatDone(self.clock(), self._probe(self.nl, action))]

    def _probe(self, sock: NfSocket, action: A.RunCompat):
        binaries, notes, setup = self.k3s()
        return probe(sock, repair=action.repair, binaries=binaries, netns=self.netns,
                     ifaces=self.config.tunnel_links(), setup=setup, notes=notes).result

    def _probe_in_worker(self, action: A.RunCompat) -> None:
        try:
            self._probed.put(self._probe(self.worker_nl, action))
        except BaseException as exc:  # handed to the loop, as if it ran there
            self._probed.put(exc)
        self.wake.send(b"!")

    def _worker_done(self) -> list[I.Input]:
        try:
            self.woken.recv(64)
        except BlockingIOError:
            return []
        self._probing.join()
        self._probing = None
        result = self._probed.get()
        if isinstance(result, (FwgateError, OSError, DumpInterrupted)):
            # A binary gone in an upgrade, the ruleset never still: a guard keeps going.
            return [*self._drained(), I.CompatFailed(self.clock(), str(result) or
                                                     type(result).__name__)]
        if isinstance(result, BaseException):
            raise result
        return [*self._drained(), I.CompatDone(self.clock(), result)]

    def _do_RepairRules(self, action: A.RepairRules) -> list[I.Input]:
        try:
            produced = commit_repairs(self.nl, action.repairs, action.genid)
        except NetlinkError as exc:
            if exc.errno != errno.ENOENT:
                raise
            produced = None  # the rule went away meanwhile: the machine looks again
        if produced is None:  # refused: what came first decides what to do next
            return [*self._drained(), I.RepairDone(self.clock(), action.repairs, None)]
        return [I.RepairDone(self.clock(), action.repairs, produced)]

    def _do_Notify(self, action: A.Notify) -> list[I.Input]:
        fields = dict(action.fields)
        if "READY" in fields:
            self.ready_at = self.clock()
        self.notifier.send(**fields)
        if "STATUS" in fields and self.on_status:
            self.on_status(str(fields["STATUS"]))
        return []

    def _do_Journal(self, action: A.Journal) -> list[I.Input]:
        self.log.event(action.kind, action.stage, action.message, action.elapsed_ms,
                       action.genid, action.digest)
        return []

    def _do_Log(self, action: A.Log) -> list[I.Input]:
        self.log(action.level, action.message)
        return []

    def _do_SaveState(self, action: A.SaveState) -> list[I.Input]:
        try:
            if self.state_file:
                statefile.write_atomically(self.state_file, action.state_json)
            if self.metrics_file:
                statefile.write_atomically(self.metrics_file, action.metrics)
        except OSError as exc:
            if not self._state_warned:  # say it once
                self.log.warning(f"cannot write {exc.filename}: {exc.strerror}")
                self._state_warned = True
        return []

    def _do_RestartUnit(self, action: A.RestartUnit) -> list[I.Input]:
        from .adapters.systemd import restart_if_crashed
        try:
            was = restart_if_crashed(action.unit)
        except EnvironmentProblem as exc:
            return [I.UnitRestarted(self.clock(), action.unit, None, str(exc))]
        return [I.UnitRestarted(self.clock(), action.unit, was)]

    def _do_ExplainNetbird(self, action: A.ExplainNetbird) -> list[I.Input]:
        return [I.NetbirdExplained(self.clock(), self.explain_netbird())]


def _explain_netbird() -> tuple[str, ...]:
    from .adapters.netbird import netbird_environment
    return explain_fallback(netbird_environment())
