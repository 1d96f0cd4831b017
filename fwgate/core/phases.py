"""The gate's phases and every way between them, written down once. Pure.

    GATING    walk the stages (fwgate.core.stages), each settled by the quiet window
    CHECKING  the compat verdict, then READY=1 (or exit 3)
    GUARDING  after READY: re-check after changes, repair at once
    DONE      an Exit action was emitted

The machine changes phase only through `PHASES.after(phase, trigger)`; a pair not in
the table is a bug (exit 70), never a silent stay."""
from __future__ import annotations

import enum


class Phase(enum.Enum):
    GATING = "gating"
    CHECKING = "checking"
    GUARDING = "guarding"
    DONE = "done"


class Trigger(enum.Enum):
    STAGES_DONE = "the last stage settled (or was skipped)"
    TIMED_OUT = "the gate's timeout, on_timeout: proceed"
    CONDITION_LOST = "a condition of an earlier stage stopped holding"
    RULES_MOVED = "the ruleset moved under every repair attempt: settle the last stage again"
    READY_GUARDING = "READY sent, and the process keeps guarding"
    EXIT = "READY sent and done, exit 3 (incompatible), or exit 1 (on_timeout: fail)"
    STOPPED = "SIGTERM or SIGINT"
    RELOADED_STAGES = "SIGHUP before READY, the new config has stages: start over"
    RELOADED_NO_STAGES = "SIGHUP before READY, the new config has none: check at once"
    RELOADED_GUARDING = "SIGHUP after READY: check the rules again"


G, C, W, D = Phase.GATING, Phase.CHECKING, Phase.GUARDING, Phase.DONE
T = Trigger

TRANSITIONS: dict[tuple[Phase, Trigger], Phase] = {
    (G, T.STAGES_DONE): C,
    (G, T.TIMED_OUT): C,
    (G, T.CONDITION_LOST): G,
    (C, T.CONDITION_LOST): G,
    (C, T.RULES_MOVED): G,
    (C, T.READY_GUARDING): W,
    (G, T.EXIT): D,
    (C, T.EXIT): D,
    (G, T.STOPPED): D,
    (C, T.STOPPED): D,
    (W, T.STOPPED): D,
    (G, T.RELOADED_STAGES): G,
    (C, T.RELOADED_STAGES): G,
    (G, T.RELOADED_NO_STAGES): C,
    (C, T.RELOADED_NO_STAGES): C,
    (W, T.RELOADED_GUARDING): W,
}


class NoSuchTransition(Exception):
    """The machine asked for a move the table does not have: a bug."""


def first_phase(has_stages: bool) -> Phase:
    return Phase.GATING if has_stages else Phase.CHECKING


def after(phase: Phase, trigger: Trigger) -> Phase:
    try:
        return TRANSITIONS[(phase, trigger)]
    except KeyError:
        raise NoSuchTransition(f"no transition from {phase.value} on {trigger.name}") from None
