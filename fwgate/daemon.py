"""The one loop: netlink sockets, D-Bus, timers and signals → the gate → sd_notify.

It sleeps on file descriptors and wakes only for events, for the gate's next
deadline, or for the keep-alive tick (EXTEND_TIMEOUT_USEC, WATCHDOG, STATUS).
"""
from __future__ import annotations

import errno
import math
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import model
from .adapters import nft
from .adapters.journal import Log
from .adapters.nfnl import NFNLGRP_NFTABLES, DumpInterrupted, NetlinkError, NfSocket
from .adapters.notify import Notifier
from .config import Config, LinkUp, Stage, UnitActive
from .errors import EnvironmentProblem
from .pipeline import Facts, Failed, Gate, NeedConfirm, Ready, RunCompat, Wait

EVENT_RCVBUF = 8 << 20
KEEPALIVE = 2.0        # seconds between EXTEND_TIMEOUT_USEC/STATUS ticks while working
EXTEND_BY = 4 * KEEPALIVE
DEBOUNCE = 0.02        # dump once the event stream has paused this long


@dataclass
class CompatOutcome:
    incompatible: list[str] = field(default_factory=list)  # one line per unreadable rule
    repaired: int = 0


CompatHook = Callable[[NfSocket], CompatOutcome]


def no_compat(_sock: NfSocket) -> CompatOutcome:
    return CompatOutcome()


@dataclass
class GateResult:
    exit_code: int
    status: str
    ready_at: float | None = None          # time.monotonic() of READY=1
    last_rule_change: float | None = None  # monotonic time we saw the last watched change


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


class GateLoop:
    def __init__(self, config: Config, log: Log, notifier: Notifier,
                 compat: CompatHook = no_compat, stages: tuple[Stage, ...] | None = None,
                 reload: Callable[[], Config] | None = None,
                 on_status: Callable[[str], None] | None = None,
                 tick: float = KEEPALIVE, clock: Callable[[], float] = time.monotonic):
        self.config, self.log, self.notifier = config, log, notifier
        self.compat, self.reload, self.on_status, self.clock = compat, reload, on_status, clock
        self.tick = tick
        self.stages = config.stages if stages is None else stages
        self.facts = Facts()
        self.last_status = ""
        self.last_watched_change: float | None = None

    # -- set-up --------------------------------------------------------------

    def _open(self) -> None:
        try:
            # Subscribe before the first dump, so no change can fall in between.
            self.events = NfSocket(groups=(NFNLGRP_NFTABLES,), rcvbuf=EVENT_RCVBUF)
            self.events.sock.setblocking(False)
            self.nl = NfSocket()
        except NetlinkError as exc:
            hint = " (needs root or CAP_NET_ADMIN)" if exc.errno in (errno.EPERM, errno.EACCES) \
                else " (is nf_tables available?)"
            raise EnvironmentProblem(f"cannot use nf_tables: {exc.strerror}{hint}") from None
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.events.sock, selectors.EVENT_READ, "nft")
        self.links = self.units = None
        self._open_watchers()
        self.signals = _Signals()
        self.selector.register(self.signals.rx, selectors.EVENT_READ, "signals")

    def _open_watchers(self) -> None:
        """Watch links and units only when a stage asks about them."""
        conditions = [c for s in self.stages for c in s.conditions]
        if self.links is None and any(isinstance(c, LinkUp) for c in conditions):
            from .adapters.links import LinkWatch
            self.links = LinkWatch()
            self.selector.register(self.links.fileno(), selectors.EVENT_READ, "links")
            self.facts.links = self.links.links
        units = [c.unit for c in conditions if isinstance(c, UnitActive)]
        if units and (self.units is None or set(units) - set(self.units.units)):
            from .adapters.units import UnitWatch
            if self.units is not None:
                self.selector.unregister(self.units.fileno())
                self.units.close()
            self.units = UnitWatch(units)
            self.selector.register(self.units.fileno(), selectors.EVENT_READ, "units")
            self.facts.units = dict(self.units.states)

    def _close(self) -> None:
        for part in (getattr(self, n, None) for n in ("signals", "links", "units", "events", "nl")):
            if part is not None:
                part.close()
        if getattr(self, "selector", None):
            self.selector.close()

    # -- the loop --------------------------------------------------------------

    def run(self) -> GateResult:
        self._open()
        try:
            return self._loop()
        finally:
            self._close()

    def _restart(self, now: float) -> None:
        self.gate = Gate(self.config, now, self.stages)
        self.interest = self.config.tables_of_interest()
        self.watched = set(self.config.watch)
        self.stale, self.last_event, self.next_dump = True, -math.inf, now
        self.tables_changed_at = now

    def _loop(self) -> GateResult:
        self._restart(self.clock())
        next_tick = self.clock()
        while True:
            now = self.clock()
            if self.stale and now >= self.next_dump and now - self.last_event >= DEBOUNCE:
                self._refresh(now)
            decision = self.gate.decide(now)
            if isinstance(decision, NeedConfirm):
                self._confirm(now)
                continue
            if isinstance(decision, RunCompat):
                self._publish(now)  # the stage events first, then what compat says
                outcome = self.compat(self.nl)
                self.gate.compat_result(self.clock(), outcome.incompatible, outcome.repaired)
                if outcome.repaired:
                    self.stale = True
                continue
            self._publish(now)
            if isinstance(decision, Ready):
                self.notifier.send(READY=1, STATUS=self.last_status)
                return GateResult(0, self.last_status, self.clock(), self.last_watched_change)
            if isinstance(decision, Failed):
                self.notifier.send(STATUS=self.last_status, ERRNO=errno.ETIMEDOUT
                                   if decision.exit_code == 1 else errno.EPROTO)
                return GateResult(decision.exit_code, self.last_status, None, self.last_watched_change)
            if now >= next_tick:
                self._keepalive()
                next_tick = now + self._tick_interval()
            assert isinstance(decision, Wait)
            wake = min(decision.until, next_tick)
            if self.stale:
                wake = min(wake, max(self.next_dump, self.last_event + DEBOUNCE))
            stop = self._wait(max(0.0, wake - self.clock()))
            if stop is not None:
                return stop

    def _tick_interval(self) -> float:
        interval = self.notifier.watchdog_interval
        return min(self.tick, interval) if interval else self.tick

    def _keepalive(self) -> None:
        fields: dict[str, object] = {"EXTEND_TIMEOUT_USEC": int(EXTEND_BY * 1e6)}
        if self.notifier.watchdog_interval:
            fields["WATCHDOG"] = 1
        self.notifier.send(**fields)

    def _wait(self, timeout: float) -> GateResult | None:
        for key, _ in self.selector.select(timeout):
            now = self.clock()
            if key.data == "nft":
                self._read_nft_events(now)
            elif key.data == "links":
                if self.links.process():
                    self.facts.links = self.links.links
                    self.gate.observe(now, self.facts)
            elif key.data == "units":
                if self.units.process():
                    self.facts.units = dict(self.units.states)
                    self.gate.observe(now, self.facts)
            elif key.data == "signals":
                result = self._on_signals(now)
                if result is not None:
                    return result
        return None

    def _read_nft_events(self, now: float) -> None:
        """Drain the event socket. A transaction is its messages, then NEWGEN: one
        relevant transaction counts as one change."""
        touched = False
        while True:
            try:
                messages = self.events.recv_messages(socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                # Events were dropped: we cannot know what changed, so start over.
                self.log.warning("nf_tables events overflowed the socket; resyncing")
                self.gate.events_lost(now)
                self._mark_changed(now, watched=True)
                continue
            for event in nft.decode_events(messages):
                if event.table is None:  # NEWGEN closes a transaction
                    if touched:
                        self.gate.rules_changed(now)
                    touched = False
                elif event.table in self.watched:
                    touched = True
                    self._mark_changed(now, watched=True)
                elif event.table in self.interest:
                    self._mark_changed(now, watched=False)
        if touched:  # its NEWGEN is still on the way
            self.gate.rules_changed(now)

    def _mark_changed(self, now: float, watched: bool) -> None:
        self.stale, self.last_event, self.tables_changed_at = True, now, now
        if watched:
            self.last_watched_change = now

    def _snapshot(self) -> tuple[model.Snapshot, str]:
        snap = nft.snapshot(self.nl, self.interest)
        return snap, model.digest(snap, tuple(self.watched))

    def _refresh(self, now: float) -> None:
        """Dump the tables of interest: the baseline of the window and the facts
        the rule conditions read."""
        started = self.clock()
        try:
            snap, digest = self._snapshot()
        except DumpInterrupted:
            self._still_moving(now)
            return
        cost = self.clock() - started
        # Spend at most a third of the time dumping while changes keep coming.
        self.stale, self.next_dump = False, self.clock() + 2 * cost
        if self.gate.window.baseline is None:
            self.gate.window.set_baseline(snap.genid, digest)
        self.facts.snapshot = snap
        self.gate.observe(now, self.facts, rules_since=self.tables_changed_at)

    def _confirm(self, now: float) -> None:
        genid = self.nl.genid()
        if self.gate.window.unchanged_since_baseline(genid):
            self.gate.confirm(now, genid, None)
            return
        try:
            snap, digest = self._snapshot()
        except DumpInterrupted:
            self._still_moving(now)
            return
        self.facts.snapshot = snap
        self.gate.observe(now, self.facts, rules_since=self.tables_changed_at)
        self.gate.confirm(now, snap.genid, digest)

    def _still_moving(self, now: float) -> None:
        """The ruleset changed under every dump we tried: that is a change too."""
        self.gate.rules_changed(now)
        self._mark_changed(now, watched=True)
        self.next_dump = self.clock() + DEBOUNCE

    def _publish(self, now: float) -> None:
        baseline = self.gate.window.baseline
        for event in self.gate.take_events():
            self.log.event(event.kind, event.stage, event.message,
                           int((event.at - self.gate.started) * 1000),
                           baseline.genid if baseline else None,
                           baseline.digest if baseline else None)
        status = self.gate.status(now)
        if status != self.last_status:
            self.last_status = status
            self.notifier.send(STATUS=status)
            if self.on_status:
                self.on_status(status)

    def _on_signals(self, now: float) -> GateResult | None:
        for signum in self.signals.pending():
            if signum == signal.SIGHUP:
                self._reload(now)
                continue
            self.notifier.send(STOPPING=1, STATUS="stopping: no READY was sent")
            name = signal.Signals(signum).name
            self.log.info(f"{name}: stopping before READY")
            return GateResult(130 if signum == signal.SIGINT else 0, f"stopped by {name}")
        return None

    def _reload(self, now: float) -> None:
        """SIGHUP: re-read the config and start the gate over with it; a bad file is
        reported and the running config kept."""
        if self.reload is None:
            return
        from .errors import ConfigError
        try:
            config = self.reload()
        except ConfigError as exc:
            self.log.error(f"SIGHUP: keeping the running config: {exc}")
            return
        self.config, self.stages = config, config.stages
        self._open_watchers()
        self.log.info(f"SIGHUP: reloaded {config.source}; starting the gate over")
        self._restart(now)
