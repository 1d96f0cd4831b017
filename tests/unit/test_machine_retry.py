"""One retry policy: a compat run whose repair the kernel refused (the ruleset moved)
is run again by the machine, as often as fwgate.core.retry allows, then the rules
settle again. The probe itself makes one attempt."""
from __future__ import annotations

from fwgate.compat.policy import ProbeResult
from fwgate.compat.reader import CompatReport
from fwgate.config import CompatConfig, Config
from fwgate.core import actions as A
from fwgate.core import inputs as I
from fwgate.core.machine import Machine, Phase, Role
from fwgate.core.retry import MOVED_RULESET
from fwgate.model import TableRef

WATCH = (TableRef("ip", "filter"),)


def guard() -> tuple[Machine, list]:
    config = Config(settle=5.0, watch=WATCH, stages=(), compat=CompatConfig("repair"))
    machine = Machine(config, 0.0, Role.GUARD)
    return machine, machine.start(0.0)


def runs(actions: list) -> list[A.RunCompat]:
    return [a for a in actions if isinstance(a, A.RunCompat)]


def test_a_refused_run_is_run_again_then_the_rules_settle_again():
    machine, out = guard()
    assert runs(out) == [A.RunCompat(repair=True)]
    asked = 1
    now = 0.0
    while True:
        now += 0.01
        out = machine.handle(I.CompatDone(now, ProbeResult(CompatReport(), 1, conflict=True)))
        if not runs(out):
            break
        asked += 1
    assert asked == MOVED_RULESET.attempts
    assert any(isinstance(a, A.Log) and "settling again" in a.message for a in out)
    # Before READY with no stages: checked again one window later, not at once.
    assert machine.phase is Phase.CHECKING and machine.next_wakeup() == now + 5.0
    out = machine.handle(I.Tick(now + 5.0))
    assert runs(out) == [A.RunCompat(repair=True)]
    out = machine.handle(I.CompatDone(now + 5.1, ProbeResult(CompatReport(), 2)))
    assert any(isinstance(a, A.Notify) and ("READY", 1) in a.fields for a in out)


def test_a_run_that_goes_through_resets_the_count():
    machine, _ = guard()
    for _ in range(MOVED_RULESET.retries):
        assert runs(machine.handle(I.CompatDone(0.1, ProbeResult(CompatReport(), 1,
                                                                 conflict=True))))
    out = machine.handle(I.CompatDone(0.2, ProbeResult(CompatReport(), 1)))
    assert machine.phase is Phase.GUARDING and not runs(out)
    assert machine.runs.refused == 0


def test_a_timeout_before_the_first_snapshot_then_the_first_stage_is_named():
    """The first stage is journaled with the first snapshot's generation; when the gate's
    timeout (on_timeout: proceed) came first, the line still names that stage and is
    stamped with it; the check runs at the timeout."""
    from fwgate.config import LinkUp, Stage
    from fwgate.model import Snapshot
    stages = (Stage("tunnel", (LinkUp("wt0"),)), Stage("rules", (LinkUp("wt1"),)))
    config = Config(settle=5.0, timeout=1.0, on_timeout="proceed", watch=WATCH, stages=stages)
    machine = Machine(config, 0.0, Role.GATE)
    assert any(isinstance(a, A.Dump) for a in machine.start(0.0))
    timed_out = machine.handle(I.Tick(1.0))
    assert machine.phase is Phase.CHECKING
    assert [a.kind for a in timed_out if isinstance(a, A.Journal)] == ["timeout"]
    assert runs(timed_out) == [A.RunCompat(repair=False)]
    out = machine.handle(I.Dumped(1.5, Snapshot(3, {}), "d", 0.001))
    journal = [(a.kind, a.stage, a.message) for a in out if isinstance(a, A.Journal)]
    assert journal == [("stage-start", "tunnel", "stage 1/2 tunnel")]
    assert machine.phase is Phase.CHECKING and not runs(out)
