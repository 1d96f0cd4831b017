"""What the machine asks the executor to do. The ones marked "answer" expect the
named input back before the executor reads anything else."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..model import TableRef

if TYPE_CHECKING:  # the compat package is imported when first needed
    from ..compat.repair import Repair
    from ..state import State


@dataclass(frozen=True)
class Dump:
    """Snapshot `scope` (lean: keep only the rules of `keep_rules`), drain pending
    events, then answer Dumped or DumpFailed."""
    scope: tuple[TableRef, ...]
    digest_scope: tuple[TableRef, ...]
    keep_rules: tuple[tuple[TableRef, str], ...]


@dataclass(frozen=True)
class QueryGeneration:
    """Ask the generation id, drain pending events, then answer Generation."""


@dataclass(frozen=True)
class RunCompat:
    """The compat probe: snapshot, read, cross-check, (repair); answer CompatDone.
    `background`: nothing waits on it (after READY): run it beside the loop, on a socket
    of its own, so events are read and repairs made meanwhile; answer CompatDone or
    CompatFailed when it ends."""
    repair: bool
    background: bool = False


@dataclass(frozen=True)
class RepairRules:
    """Commit these repairs in one batch guarded by `genid`; answer RepairDone."""
    repairs: tuple[Repair, ...]
    genid: int


@dataclass(frozen=True)
class Watching:
    """The watched scope, at start and after each reload: the executor stamps the last
    foreign change to it for its result."""
    tables: frozenset[TableRef]


@dataclass(frozen=True)
class Notify:
    """sd_notify: READY, STATUS, STOPPING, ERRNO ..."""
    fields: tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class Journal:
    """One structured event (FWGATE_EVENT = kind) with DESIGN's fields."""
    kind: str
    stage: str
    message: str
    elapsed_ms: int
    genid: int | None = None
    digest: str | None = None
    level: str | None = None   # None: the kind's own priority


@dataclass(frozen=True)
class Log:
    level: str   # info | warning | error
    message: str


@dataclass(frozen=True)
class SaveState:
    """Write the state file and the metrics textfile. `state` is a copy the machine
    never changes again; the executor renders it only when it writes (once per wake-up
    however many transitions published it, never without a file)."""
    state: State


@dataclass(frozen=True)
class RestartUnit:
    """Restart the unit if it crashed; answer UnitRestarted."""
    unit: str


@dataclass(frozen=True)
class ReadNetbird:
    """Ask systemd what netbird.service runs with (its PATH's iptables, its firewall
    switch); answer NetbirdRead."""


@dataclass(frozen=True)
class Exit:
    code: int
    status: str


Action = (Dump | QueryGeneration | RunCompat | RepairRules | Watching | Notify | Journal | Log
          | SaveState | RestartUnit | ReadNetbird | Exit)
