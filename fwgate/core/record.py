"""What the machine tells the world: the State it publishes, the journal, the log and
sd_notify, in words a person reads. Pure: it appends actions to `out`; the machine
decides when, this part only how it is said and kept.

The published State is frozen (fwgate.state): every change makes a new one. Counters
that move on every transaction (changes, resyncs, the generation seen) are kept here
and folded into the State only when it is published."""
from __future__ import annotations

import errno
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from ..netbird import NetbirdEnvironment, explain_fallback, is_native_netbird_rule, prevention
from ..state import State
from . import actions as A
from .deferred import deferred
from .window import Baseline

if TYPE_CHECKING:
    from ..compat.policy import ProbeResult, Verdict
    from ..compat.repair import Repair
    from .stages import Line

# Named here, loaded at first use (fwgate.core.deferred): the first snapshot must not
# wait on the compat reader or the mark model.
compat_policy = deferred("fwgate.compat.policy")
marks = deferred("fwgate.marks")

Where = Callable[[], tuple[str, "Baseline | None"]]  # the stage's name, the window's baseline


class Record:
    def __init__(self, state: State, started: float, wall_offset: float, where: Where):
        self.state = state
        self.started = started
        self.wall_offset = wall_offset   # time.time() - time.monotonic(), for the state file
        self.where = where
        self.out: list[A.Action] = []
        self.last_status = ""
        self.genid: int | None = None
        self.digest: str | None = None
        self.changes_total = self.resyncs_total = 0
        self.last_change_at: float | None = None
        self.last_verdict: Verdict | None = None
        self.seen_conflicts: set[tuple] = set()

    def wall(self, now: float) -> float:
        return now + self.wall_offset

    def set(self, **fields: object) -> None:
        self.state = replace(self.state, **fields)

    # -- the three channels -------------------------------------------------------------

    def journal(self, kind: str, now: float, message: str, stage: str | None = None,
                level: str | None = None) -> None:
        """With the quiet window's baseline, else what was last seen (the guard keeps
        no baseline: its checks read everything afresh)."""
        name, baseline = self.where()
        self.out.append(A.Journal(kind, stage or name, message, int((now - self.started) * 1000),
                                  baseline.genid if baseline else self.genid,
                                  baseline.digest if baseline else self.digest, level))

    def log(self, level: str, message: str) -> None:
        self.out.append(A.Log(level, message))

    def notify(self, **fields: object) -> None:
        self.out.append(A.Notify(tuple(fields.items())))

    # -- what happened --------------------------------------------------------------------

    def changed(self, now: float, count: int = 1) -> None:
        self.changes_total += count
        self.last_change_at = self.wall(now)

    def repaired(self, now: float, repairs: tuple[Repair, ...]) -> bool:
        """Journal and keep each repair; True when one was Netbird's native rule."""
        lines = [compat_policy.repair_line(r) for r in repairs]
        for line in lines:
            self.journal("repaired", now, f"repaired {line}")
        self.set(repairs_total=self.state.repairs_total + len(lines), repairs=self.state.kept(
            "repairs", *({"at": self.wall(now), "rule": line} for line in lines)))
        return any(is_native_netbird_rule(r.rule) for r in repairs)

    def probe_seen(self, now: float, result: ProbeResult) -> None:
        """What any compat run found besides its verdict: dead copies it deleted, the
        copies left, packet-mark conflicts (each new one journaled once: kube-router
        installs its chains after k3s starts, so they appear after READY; never
        blocking)."""
        conflicts = marks.harms(result.conflicts)  # bits shared without harm are no alarm
        kept: dict[str, object] = {"mark_conflicts": tuple(
            {"text": marks.conflict_text(c), "bits": f"{c.bits:#x}", "writer": c.writer.owner,
             "reader": c.reader.owner, "effect": c.effect} for c in conflicts)}
        if result.removed:
            kept["netbird_copies_removed_total"] = \
                self.state.netbird_copies_removed_total + len(result.removed)
            self.journal("removed", now, f"deleted {len(result.removed)} dead copies of "
                                         f"Netbird's accept rules (each after an identical "
                                         f"rule: no packet reached it): "
                                         f"{', '.join(r.ref for r in result.removed)}")
        for c in conflicts:
            if c.ident not in self.seen_conflicts:
                self.seen_conflicts.add(c.ident)
                self.journal("conflict", now, marks.conflict_text(c))
        if result.netbird is not None:
            kept["netbird_untagged_copies"] = result.netbird.untagged_copies
        self.set(**kept)  # one new State for all of it

    def verdict(self, now: float, verdict: Verdict, result: ProbeResult, guarding: bool,
                policy: str) -> None:
        self.set(compat_checked_at=self.wall(now), incompatible=tuple(verdict.blocking),
                 compat_warnings=tuple(verdict.warnings),
                 compat_binaries=tuple({"path": b.path, "version": b.version, "mode": b.mode,
                                        "role": b.role, "source": b.source}
                                       for b in result.binaries),
                 compat_versions=tuple(result.report.versions),
                 compat_disagreements=sum(len(c.disagreements) for c in result.crosschecks))
        for check in result.crosschecks:
            if not check.ran:
                self.log("warning", f"compat: {check.verdict.binary} does not run "
                                    f"(--version failed); relying on the reader")
            for line in check.lines():
                self.log("warning", f"compat: reader and iptables disagree: {line}")
        last = self.last_verdict
        changed = last is None or (verdict.blocking, verdict.warnings) != (last.blocking,
                                                                           last.warnings)
        self.last_verdict = verdict
        if changed and verdict.degraded:
            self.journal("incompatible", now, verdict.summary)
        if guarding and verdict.blocking and changed:
            why = ("fwgate cannot re-encode it; delete or rewrite the rule" if policy == "repair"
                   else f"compat.on_incompatible is {policy}, so fwgate leaves it; "
                        f"`fwgate repair` re-encodes the shapes it knows")
            self.log("error", f"{verdict.summary}: k3s dies on it at its next policy sync; "
                              f"{why}")

    def resynced(self) -> None:
        self.resyncs_total += 1
        self.log("warning", "nf_tables events overflowed the socket; resyncing")

    def unreadable_added(self, ref: str, reason: str) -> None:
        """After READY, a rule just added that iptables-nft cannot read and fwgate cannot
        (or may not) re-encode: said at once, before the next check."""
        self.log("warning", f"{ref} was just added and iptables-nft cannot read it: {reason}")

    def compat_failed(self, reason: str) -> None:
        self.log("warning", f"compat: the check failed: {reason}; trying again")

    def settling_again(self) -> None:
        self.log("warning", "compat: the ruleset changed during every repair attempt; "
                            "settling again")

    def timed_out(self, now: float, where: str, fail: bool) -> str:
        """The gate's timeout in `where` (the status line): journaled, and with
        `on_timeout: fail` said to systemd. The reason, in words."""
        reason = f"timed out in {where}"
        self.journal("timeout", now, reason)
        if fail:
            self.notify(STATUS=f"failed: {reason}", ERRNO=errno.ETIMEDOUT)
            self.set(phase="failed")
        return reason

    def stages_moved(self, now: float, lines: Iterable[Line]) -> None:
        """The stage tracker's lines, journaled; how long each settled stage took, kept."""
        for line in lines:
            self.journal(line.kind, now, line.text, line.stage)
            if line.took is not None:
                self.set(stage_seconds={**self.state.stage_seconds,
                                        line.stage: round(line.took, 3)})

    def incompatible(self, reason: str) -> None:
        self.notify(STATUS=f"failed: {reason}", ERRNO=errno.EPROTO)
        self.log("error", f"{reason}. k3s would die on it: fwgate holds it back. Way out: "
                          f"delete or rewrite the rule (`fwgate compat` names it), or set "
                          f"compat.on_incompatible: warn to let k3s start anyway")
        self.set(phase="failed")

    def ready(self, now: float, status: str) -> None:
        self.set(ready_at=self.wall(now))
        self.notify(READY=1, STATUS=status)
        self.last_status = status
        self.journal("ready", now, status, stage="ready")

    def guarding(self, watched: Iterable[object]) -> None:
        self.set(phase="guarding")
        self.log("info", f"READY sent; guarding {', '.join(map(str, sorted(watched)))}")

    def stopping(self, signal: str, before_ready: bool) -> None:
        self.notify(STOPPING=1, STATUS="stopping" + (": no READY was sent" if before_ready else ""))
        self.log("info", f"{signal}: stopping" + (" before READY" if before_ready else ""))
        self.set(phase="stopped")

    def reloaded(self, source: str, after_ready: bool) -> None:
        self.set(config_error=None)
        then = "checking the rules again" if after_ready else "starting the gate over"
        self.log("info", f"SIGHUP: reloaded {source}; {then}")

    def config_rejected(self, running: str, reason: str) -> None:
        self.set(config_error=reason)
        self.log("error", f"SIGHUP: keeping the running config ({running}): {reason}")

    def restarted(self, now: float, unit: str, was: str) -> None:
        self.log("info", f"restarted {unit} (it was {was}) after the repair")
        self.set(restarts=self.state.kept("restarts", {"at": self.wall(now), "unit": unit,
                                                       "was": was}))

    def netbird_read(self, now: float, env: NetbirdEnvironment, explain: bool) -> None:
        found = prevention(env)
        if found.json() != self.state.prevention:
            self.set(prevention=found.json())
            self.journal("prevention", now,
                         f"prevention {'in force' if found.in_force else 'NOT in force'}: "
                         f"{found.why}", level=None if found.in_force else "warning")
        if explain:
            lines = explain_fallback(env)
            self.set(netbird_fallback=tuple(lines))
            self.journal("native-fallback", now, " ".join(lines))

    # -- publishing -------------------------------------------------------------------------

    def publish(self, now: float, status: str, stage: str | None, done: bool,
                force: bool) -> bool:
        """STATUS when it changed; the state file with every transition, and when
        `force`d (start, the heartbeat). True when a State went out."""
        journaled = any(isinstance(a, (A.Journal, A.Log, A.Exit)) for a in self.out)
        if status != self.last_status and not done:
            self.last_status = status
            self.notify(STATUS=status)
        elif not (force or journaled or done):
            return False
        self.set(status=status, stage=stage, updated_at=self.wall(now), genid=self.genid,
                 digest=self.digest, changes_total=self.changes_total,
                 resyncs_total=self.resyncs_total, last_change_at=self.last_change_at)
        self.out.append(A.SaveState(self.state))  # frozen: the executor may keep it
        return True


# -- the status lines of the phases after the stages (the stages' own: stages.py) ------------

def ready_status(guard: bool, verdict: Verdict, timed_out: str | None, elapsed: float) -> str:
    """STATUS with READY=1: a guard says what it guards; a gate how long the rules took,
    or why it is READY degraded."""
    if guard:
        return f"ready: guarding; {verdict.summary}"
    degraded = "; ".join(filter(None, [timed_out, verdict.summary.removeprefix("degraded: ")
                                       if verdict.degraded else None]))
    if degraded:
        return f"ready (degraded: {degraded})"
    return f"ready: rules settled after {elapsed:.1f}s"


def checking_status(timed_out: str | None) -> str:
    head = f"{timed_out}; " if timed_out else ""
    return head + "compat: checking that iptables-nft can read the settled rules"


def guarding_status(guard: bool, last: Verdict | None, repairs_total: int,
                    changes: int | None) -> str:
    """`changes`: the watched scope's changes while some are not checked yet, else None."""
    head = "guarding" if guard else "watching"
    verdict = last.summary if last else "not checked yet"
    changing = f"; rules: {changes} change(s), settling" if changes is not None else ""
    return f"{head}: {verdict}; {repairs_total} repair(s){changing}"
