"""What the executor tells the machine: facts that arrived, answers to its actions,
the clock. Every input carries `now` (time.monotonic())."""
from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

from ..config import Config
from ..model import LinkState, Snapshot
from ..netbird import NetbirdEnvironment
from ..netlink.nftables import Event

if TYPE_CHECKING:  # the compat package is imported when first needed
    from ..compat.policy import ProbeResult
    from ..compat.repair import Repair


@dataclass(frozen=True)
class NftEvents:
    """nf_tables notifications, in the order read, stamped when read."""
    now: float
    events: tuple[Event, ...]


@dataclass(frozen=True)
class EventsLost:
    """The event socket overflowed (ENOBUFS): anything may have changed."""
    now: float


@dataclass(frozen=True)
class Dumped:
    """Answer to Dump: the tables of interest, their scoped digest, and what it cost."""
    now: float
    snapshot: Snapshot
    digest: str
    cost: float


@dataclass(frozen=True)
class DumpFailed:
    """Answer to Dump: the ruleset moved under every attempt."""
    now: float


@dataclass(frozen=True)
class Generation:
    """Answer to QueryGeneration."""
    now: float
    genid: int


@dataclass(frozen=True)
class LinksChanged:
    now: float
    links: dict[str, LinkState]


@dataclass(frozen=True)
class UnitsChanged:
    now: float
    units: dict[str, str]


@dataclass(frozen=True)
class CompatDone:
    """Answer to RunCompat."""
    now: float
    result: ProbeResult


@dataclass(frozen=True)
class CompatFailed:
    """Answer to RunCompat after READY: the probe could not finish (why, in words)."""
    now: float
    reason: str


@dataclass(frozen=True)
class RepairDone:
    """Answer to Repair: produced_genid is the generation our batch made, None when
    the kernel refused it because the ruleset had moved on."""
    now: float
    repairs: tuple[Repair, ...]
    produced_genid: int | None


@dataclass(frozen=True)
class UnitRestarted:
    """Answer to RestartUnit: the state it was restarted from, None if left alone."""
    now: float
    unit: str
    was: str | None
    error: str | None = None


@dataclass(frozen=True)
class NetbirdRead:
    """Answer to ReadNetbird: what netbird.service runs with."""
    now: float
    env: NetbirdEnvironment


@dataclass(frozen=True)
class ConfigRejected:
    """SIGHUP with a config file that did not parse: the running config stays."""
    now: float
    reason: str


@dataclass(frozen=True)
class Tick:
    """Nothing arrived; time passed (a deadline, the keep-alive)."""
    now: float


@dataclass(frozen=True)
class Stop:
    now: float
    signal: str   # "SIGTERM", "SIGINT"


@dataclass(frozen=True)
class Reload:
    """SIGHUP with a config that parsed (a bad one never reaches the machine)."""
    now: float
    config: Config


Input = (NftEvents | EventsLost | Dumped | DumpFailed | Generation | LinksChanged | UnitsChanged
         | CompatDone | CompatFailed | RepairDone | UnitRestarted | NetbirdRead | ConfigRejected
         | Tick | Stop | Reload)
