"""The one loop: netlink sockets, D-Bus, timers and signals → the gate → sd_notify.

It sleeps on file descriptors and wakes only for events, for the gate's next
deadline, or for the keep-alive tick (EXTEND_TIMEOUT_USEC, WATCHDOG, STATUS).
"""
from __future__ import annotations

import errno
import math
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import model
from .adapters import nft
from .adapters.journal import Log
from .adapters.manager import restart_if_crashed
from .adapters.nfnl import NFNLGRP_NFTABLES, DumpInterrupted, NetlinkError, NfSocket
from .adapters.notify import Notifier
from .config import ChainExists, Config, LinkUp, Stage, UnitActive
from .errors import EnvironmentProblem
from .pipeline import Facts, Failed, Gate, NeedConfirm, Ready, RunCompat, Wait
from .state import State, render_metrics, write_atomically

EVENT_RCVBUF = 8 << 20
KEEPALIVE = 2.0        # seconds between EXTEND_TIMEOUT_USEC/STATUS ticks while working
EXTEND_BY = 4 * KEEPALIVE
DEBOUNCE = 0.02        # dump once the event stream has paused this long
MAX_READS = 256        # event datagrams read per wake-up before looking at the rest


@dataclass
class CompatOutcome:
    incompatible: list[str] = field(default_factory=list)  # one line per unreadable rule
    repaired_lines: list[str] = field(default_factory=list)  # one line per rule re-encoded
    resettle: bool = False  # the ruleset moved under the repair: settle again, then retry

    @property
    def repaired(self) -> int:
        return len(self.repaired_lines)


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
                 tick: float = KEEPALIVE, clock: Callable[[], float] = time.monotonic,
                 watch: bool | None = None, netns: str | None = None,
                 state_file: str | None = None):
        self.config, self.log, self.notifier = config, log, notifier
        self.compat, self.reload, self.on_status, self.clock = compat, reload, on_status, clock
        self.tick = tick
        self.stages = config.stages if stages is None else stages
        self.keep_watching = config.after_ready.mode == "watch" if watch is None else watch
        self.facts = Facts()
        self.last_status = ""
        self.last_watched_change: float | None = None
        self.ready_sent = False
        self.last_restart = -math.inf
        self.state = State(os.getpid(), netns, started_at=time.time())
        self.state_file = state_file  # None: keep no state file (the demo)
        self.stage_began = 0.0

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
            self._write_state()

    def _restart(self, now: float) -> None:
        """The boot gate: every stage, then compat, then READY."""
        self.gate: Gate | None = Gate(self.config, now, self.stages)
        self._scope(now)

    def _scope(self, now: float) -> None:
        self.interest = self.config.tables_of_interest()
        self.watched = set(self.config.watch)
        self.stale, self.last_event, self.next_dump = True, -math.inf, now
        self.tables_changed_at = now

    def _watch_again(self, now: float) -> None:
        """After READY: the watched tables changed; settle, then compat again."""
        self.gate = Gate(self.config, now, (Stage("watch", ()),), label="watching")
        self.gate.rules_changed(now)

    def _loop(self) -> GateResult:
        self._restart(self.clock())
        next_tick = self.clock()
        while True:
            now = self.clock()
            if self.stale and now >= self.next_dump and now - self.last_event >= DEBOUNCE:
                self._refresh(now)
            decision = self.gate.decide(now) if self.gate else Wait(math.inf)
            if isinstance(decision, NeedConfirm):
                self._confirm(now)
                continue
            if isinstance(decision, RunCompat):
                self._publish(now)  # the stage events first, then what compat says
                self._run_compat()
                continue
            self._publish(now)
            if isinstance(decision, (Ready, Failed)):
                result = self._outcome(decision)
                if result is not None:
                    return result
                continue
            if now >= next_tick:
                self._keepalive()
                next_tick = now + self._tick_interval() if self._tick_due() else math.inf
            wake = min(decision.until, next_tick)
            if self.stale:
                wake = min(wake, max(self.next_dump, self.last_event + DEBOUNCE))
            stop = self._wait(max(0.0, wake - self.clock()))
            if stop is not None:
                return stop

    def _run_compat(self) -> None:
        outcome = self.compat(self.nl)
        now = self.clock()
        if outcome.resettle:
            self.gate.settle_again(now)
            self.stale = True
            return
        self.gate.compat_result(now, outcome.incompatible, outcome.repaired)
        self.state.compat_checked_at = time.time()
        self.state.incompatible = list(outcome.incompatible)
        if outcome.repaired:
            self.stale = True
            self.state.note_repair(time.time(), outcome.repaired_lines)
            if self.ready_sent:
                self._restart_crashed_unit(now)

    def _outcome(self, decision: Ready | Failed) -> GateResult | None:
        """READY (or the failure) of the boot gate, or the verdict of a watch round."""
        now = self.clock()
        self.gate = None
        if not self.ready_sent:
            if isinstance(decision, Failed):
                self.notifier.send(STATUS=self.last_status, ERRNO=errno.ETIMEDOUT
                                   if decision.exit_code == 1 else errno.EPROTO)
                self.state.phase = "failed"
                return GateResult(decision.exit_code, self.last_status, None, self.last_watched_change)
            self.ready_sent = True
            self.state.ready_at = time.time()
            self.notifier.send(READY=1, STATUS=self.last_status)
            result = GateResult(0, self.last_status, now, self.last_watched_change)
            if not self.keep_watching:
                self.state.phase = "ready"
                return result
            self.ready_result = result
            self.log.info(f"READY sent; watching {', '.join(map(str, self.config.watch))} for changes")
        elif isinstance(decision, Failed):
            self.log.warning(f"after READY: {decision.reason}")
        self.state.phase = "watching"
        verdict = decision.reason if isinstance(decision, Failed) else \
            (f"degraded: {decision.degraded}" if decision.degraded else "iptables-nft reads every rule")
        self._set_status(f"watching: settled at {time.strftime('%H:%M:%S')}; {verdict}")
        return None

    def _restart_crashed_unit(self, now: float) -> None:
        """After a live repair, bring back a unit that crashed on the rule (rate-limited)."""
        unit = self.config.after_ready.restart_after_repair
        if not unit or now - self.last_restart < self.config.after_ready.restart_interval:
            return
        try:
            was = restart_if_crashed(unit)
        except EnvironmentProblem as exc:
            self.log.warning(str(exc))
            return
        if was:
            self.last_restart = now
            self.log.info(f"restarted {unit} (it was {was}) after the repair")
            self.state.restarts = (self.state.restarts + [{"at": time.time(), "unit": unit,
                                                            "was": was}])[-State.MAX_KEPT:]

    def _tick_interval(self) -> float:
        interval = self.notifier.watchdog_interval
        return min(self.tick, interval) if interval else self.tick

    def _keepalive(self) -> None:
        fields: dict[str, object] = {}
        if not self.ready_sent:  # after READY it would stretch a runtime limit instead
            fields["EXTEND_TIMEOUT_USEC"] = int(EXTEND_BY * 1e6)
        if self.notifier.watchdog_interval:
            fields["WATCHDOG"] = 1
        if fields:
            self.notifier.send(**fields)

    def _tick_due(self) -> bool:
        """Before READY: keep-alive and live STATUS; after it, only a watchdog needs us."""
        return not self.ready_sent or bool(self.notifier.watchdog_interval)

    def _wait(self, timeout: float) -> GateResult | None:
        for key, _ in self.selector.select(None if math.isinf(timeout) else timeout):
            now = self.clock()
            if key.data == "nft":
                self._read_nft_events()
            elif key.data == "links":
                if self.links.process():
                    self.facts.links = self.links.links
                    if self.gate:
                        self.gate.observe(now, self.facts)
            elif key.data == "units":
                if self.units.process():
                    self.facts.units = dict(self.units.states)
                    if self.gate:
                        self.gate.observe(now, self.facts)
            elif key.data == "signals":
                result = self._on_signals(now)
                if result is not None:
                    return result
        return None

    def _read_nft_events(self) -> None:
        """Drain the event socket. A transaction is its messages, then NEWGEN: one
        relevant transaction counts as one change, stamped when we read it (never
        earlier: that could end a window too soon)."""
        touched = False
        for _ in range(MAX_READS):  # then back to the loop: signals and timers wait on us
            try:
                messages = self.events.recv_messages(socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                # Events were dropped: we cannot know what changed, so start over.
                now = self.clock()
                self.log.warning("nf_tables events overflowed the socket; resyncing")
                self.state.resyncs_total += 1
                if self.gate is None:
                    self._rules_changed(now)  # after READY: a new round
                else:
                    self.gate.events_lost(now)
                self._mark_changed(now, watched=True)
                continue
            now = self.clock()
            for event in nft.decode_events(messages):
                if event.table is None:  # NEWGEN closes a transaction
                    if touched:
                        self._rules_changed(now)
                    touched = False
                elif event.table in self.watched:
                    touched = True
                    self._mark_changed(now, watched=True)
                elif event.table in self.interest:
                    self._mark_changed(now, watched=False)
        if touched:  # its NEWGEN is still on the way
            self._rules_changed(self.clock())

    def _rules_changed(self, now: float) -> None:
        self.state.changes_total += 1
        self.state.last_change_at = time.time()
        if self.gate is None:  # watching after READY: a new round
            self._watch_again(now)
        else:
            self.gate.rules_changed(now)

    def _mark_changed(self, now: float, watched: bool) -> None:
        self.stale, self.last_event, self.tables_changed_at = True, now, now
        if watched:
            self.last_watched_change = now

    def _snapshot(self) -> tuple[model.Snapshot, str]:
        # Lean: keep only the rules the conditions read; every rule is still digested.
        keep = [(c.table, c.chain) for stage in self.stages for c in stage.conditions
                if isinstance(c, ChainExists)]
        snap = nft.snapshot(self.nl, self.interest, keep_rules=keep)
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
        self.facts.snapshot = snap
        self.state.genid, self.state.digest = snap.genid, digest
        if self.gate is None:
            return
        if self.gate.window.baseline is None:
            self.gate.window.set_baseline(snap.genid, digest)
        self.gate.observe(now, self.facts, rules_since=self.tables_changed_at)

    def _confirm(self, now: float) -> None:
        """The window has run. Its verdict needs the generation id (or a digest) *and*
        the events of every transaction up to that generation: the kernel queues
        them on our socket before the commit returns, so read them after asking."""
        genid = self.nl.genid()
        if self._changed_meanwhile():
            return
        if self.gate.window.unchanged_since_baseline(genid):
            self.gate.confirm(now, genid, None)
            return
        try:
            snap, digest = self._snapshot()
        except DumpInterrupted:
            self._still_moving(now)
            return
        if self._changed_meanwhile():
            return
        self.facts.snapshot = snap
        self.gate.observe(now, self.facts, rules_since=self.tables_changed_at)
        self.gate.confirm(now, snap.genid, digest)

    def _changed_meanwhile(self) -> bool:
        """Drain pending events; True if one restarted the window."""
        self._read_nft_events()
        return self.gate is None or self.gate.window.baseline is None

    def _still_moving(self, now: float) -> None:
        """The ruleset changed under every dump we tried: that is a change too."""
        self._rules_changed(now)
        self._mark_changed(now, watched=True)
        self.next_dump = self.clock() + DEBOUNCE

    def _publish(self, now: float) -> None:
        """Journal the gate's events; STATUS, state file and metrics when they changed."""
        if self.gate is None:
            return
        baseline = self.gate.window.baseline
        events = self.gate.take_events()
        for event in events:
            self.log.event(event.kind, event.stage, event.message,
                           int((event.at - self.gate.started) * 1000),
                           baseline.genid if baseline else None,
                           baseline.digest if baseline else None)
            if event.kind == "stage-start" and not self.ready_sent:
                self.stage_began = event.at
            if event.kind == "settled" and not self.ready_sent:
                self.state.stage_seconds[event.stage] = round(event.at - self.stage_began, 3)
        self.state.stage = self.gate.stage.name if self.gate.stage else None
        self._set_status(self.gate.status(now), force_write=bool(events))

    def _set_status(self, status: str, force_write: bool = False) -> None:
        if status != self.last_status:
            self.last_status = status
            self.notifier.send(STATUS=status)
            if self.on_status:
                self.on_status(status)
        elif not force_write:
            return
        self.state.status = status
        self._write_state()

    def _write_state(self) -> None:
        self.state.updated_at = time.time()
        try:
            if self.state_file:
                write_atomically(self.state_file, self.state.to_json())
            if self.config.metrics_textfile:
                write_atomically(self.config.metrics_textfile, render_metrics(self.state))
        except OSError as exc:
            if not getattr(self, "_state_warned", False):  # say it once
                self.log.warning(f"cannot write {exc.filename}: {exc.strerror}")
                self._state_warned = True

    def _on_signals(self, now: float) -> GateResult | None:
        for signum in self.signals.pending():
            if signum == signal.SIGHUP:
                self._reload(now)
                continue
            name = signal.Signals(signum).name
            if self.ready_sent:
                self.notifier.send(STOPPING=1, STATUS="stopping")
                self.log.info(f"{name}: stopping")
                self.state.phase = "stopped"
                return self.ready_result
            self.notifier.send(STOPPING=1, STATUS="stopping: no READY was sent")
            self.log.info(f"{name}: stopping before READY")
            self.state.phase = "stopped"
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
        if self.ready_sent:  # READY stands; check the rules again under the new config
            self.log.info(f"SIGHUP: reloaded {config.source}; checking the rules again")
            self._scope(now)
            self._watch_again(now)
            return
        self.log.info(f"SIGHUP: reloaded {config.source}; starting the gate over")
        self._restart(now)
