"""What the daemon last saw, for `fwgate status` and for node_exporter. Pure: the
files are written by fwgate.adapters.statefile.

A State is immutable all the way down: the machine publishes one per transition and
the executor may write it to disk whenever it likes, so nothing may change it after.
Sequences are tuples and mappings FrozenDicts (dict subclasses, so asdict and json
see plain dicts); the machine makes a new State with dataclasses.replace."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from . import __version__


def _refuse(self, *args: object, **kwargs: object):
    raise TypeError("a published State is never changed: make a new one (replace)")


class FrozenDict(dict):
    """A dict nobody can change, its values frozen too: json and asdict read it as a
    dict."""

    def __init__(self, *args: object, **kwargs: object):
        super().__init__((k, freeze(v)) for k, v in dict(*args, **kwargs).items())

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self.items()))


class FrozenTuple(tuple):
    """A tuple whose items are frozen too: one type check says the whole is."""

    def __new__(cls, items: object = ()):
        return super().__new__(cls, (freeze(v) for v in items))


def freeze(value: Any) -> Any:
    """Lists and tuples become FrozenTuples, dicts FrozenDicts, all the way down; what
    is frozen already comes back as it is (the same object, at the cost of one check)."""
    kind = type(value)
    if kind is FrozenTuple or kind is FrozenDict:
        return value
    if isinstance(value, dict):
        return FrozenDict(value)
    if isinstance(value, (list, tuple)):
        return FrozenTuple(value)
    return value


@dataclass(frozen=True)
class State:
    pid: int
    netns: str | None
    role: str = "gate"              # gate (`fwgate run`) | guard (`fwgate guard`)
    version: str = ""               # of the fwgate that wrote it
    phase: str = "waiting"          # waiting | ready | guarding | failed | stopped
    status: str = ""
    stage: str | None = None
    started_at: float = 0.0         # all times: Unix seconds
    updated_at: float = 0.0
    ready_at: float | None = None
    last_change_at: float | None = None
    genid: int | None = None
    digest: str | None = None
    changes_total: int = 0
    resyncs_total: int = 0
    stage_seconds: dict[str, float] = field(default_factory=FrozenDict)
    compat_checked_at: float | None = None
    incompatible: tuple[str, ...] = ()     # blocking: k3s dies on them
    compat_warnings: tuple[str, ...] = ()  # logged and retried, misread
    compat_binaries: tuple[dict, ...] = ()  # the iptables judged for
    compat_versions: tuple[str, ...] = ()
    compat_disagreements: int = 0          # reader vs a real binary
    repairs_total: int = 0
    repairs: tuple[dict, ...] = ()   # the latest few: {"at", "rule"}
    restarts: tuple[dict, ...] = ()  # units restarted after a repair
    netbird_fallback: tuple[str, ...] = ()  # why Netbird wrote native rules
    netbird_untagged_copies: int = 0  # Netbird's accept rules kube-router's restores re-wrote
    netbird_copies_removed_total: int = 0  # ... deleted: each after an identical rule, dead
    mark_conflicts: tuple[dict, ...] = ()  # {text, bits, writer, reader, effect}
    # Can Netbird write its native rule at all? {in_force, state, why}; None: not asked yet
    prevention: dict | None = None
    config_source: str = ""        # the config running: a file, the last good one, defaults
    config_error: str | None = None  # why /etc/fwgate.yaml is not the one running
    heartbeat_every: float = 0.0   # updated_at is rewritten at least this often (0: no promise)
    crash_streak: int = 0          # predecessors in a row that died before they guarded

    MAX_KEPT = 20

    def __post_init__(self) -> None:
        # Whatever came in (a list from JSON, a caller's dict) is frozen here, once.
        for name in _NAMES:
            value = getattr(self, name)
            frozen = freeze(value)
            if frozen is not value:
                object.__setattr__(self, name, frozen)

    def kept(self, name: str, *entries: dict) -> tuple:
        """The sequence `name` with `entries` appended, the oldest dropped past MAX_KEPT."""
        return (getattr(self, name) + entries)[-self.MAX_KEPT:]

    def to_json(self) -> str:
        # Not sorted: stage_seconds keeps the stages' order.
        return json.dumps(asdict(self), indent=2) + "\n"


_NAMES = tuple(f.name for f in fields(State))  # looked up once: every new State walks them


def render_metrics(state: State) -> str:
    """Prometheus text format (node_exporter's textfile collector). Every sample
    carries role="gate" or role="guard": both processes' files sit side by side."""
    lines: list[str] = []
    role = f'role="{_label(state.role)}"'

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP fwgate_{name} {help_text}")
        lines.append(f"# TYPE fwgate_{name} {kind}")
        for labels, value in samples:
            lines.append(f"fwgate_{name}{{{role}{labels}}} {value:.17g}")

    metric("ready", "gauge", "1 once fwgate has sent READY=1.", [("", 1.0 if state.ready_at else 0.0)])
    metric("degraded", "gauge", "1 while the last verdict is degraded (timeout or unreadable rules).",
           [("", 1.0 if "degraded" in state.status or state.incompatible else 0.0)])
    if state.ready_at:
        metric("ready_timestamp_seconds", "gauge", "When fwgate sent READY=1 (Unix time).",
               [("", state.ready_at)])
    metric("stage_duration_seconds", "gauge", "How long each stage of the gate took to settle.",
           [(f',stage="{_label(name)}"', secs) for name, secs in state.stage_seconds.items()])
    metric("incompatible_rules", "gauge",
           "Rules k3s dies on (kube-router's fatal iptables calls fail), at the last check.",
           [("", float(len(state.incompatible)))])
    metric("compat_warnings", "gauge",
           "Rules that break only logged-and-retried calls, or that iptables misreads.",
           [("", float(len(state.compat_warnings)))])
    metric("compat_disagreements", "gauge",
           "Calls where a real iptables binary and fwgate's reader disagreed, at the last check.",
           [("", float(state.compat_disagreements))])
    metric("compat_binary_info", "gauge", "The iptables binaries the verdict is for.",
           [(f',path="{_label(b["path"])}",version="{_label(b.get("version") or "")}",'
             f'mode="{_label(b.get("mode") or "")}",binary_role="{_label(b.get("role") or "")}"',
             1.0) for b in state.compat_binaries])
    metric("repairs_total", "counter", "Rules re-encoded so iptables-nft reads them.",
           [("", float(state.repairs_total))])
    metric("resyncs_total", "counter", "Full resyncs after lost nf_tables events.",
           [("", float(state.resyncs_total))])
    metric("rule_changes_total", "counter", "Transactions that changed the watched tables.",
           [("", float(state.changes_total))])
    metric("netbird_native_fallback", "gauge",
           "1 once Netbird was seen writing native rules (no usable iptables on its PATH).",
           [("", 1.0 if state.netbird_fallback else 0.0)])
    metric("netbird_untagged_copies", "gauge",
           "Copies of Netbird's accept rules left behind by kube-router's restores.",
           [("", float(state.netbird_untagged_copies))])
    metric("netbird_copies_removed_total", "counter",
           "Dead copies of Netbird's accept rules deleted (each after an identical rule).",
           [("", float(state.netbird_copies_removed_total))])
    pairs: dict[tuple[str, str], int] = {}
    for c in state.mark_conflicts:
        pairs[(c["writer"], c["reader"])] = pairs.get((c["writer"], c["reader"]), 0) + 1
    metric("mark_conflicts", "gauge",
           "Packet-mark bits one component changes that another tests later, at the last check.",
           [(f',writer="{_label(w)}",reader="{_label(r)}"', float(n))
            for (w, r), n in sorted(pairs.items())])
    # A state from before versions were recorded: the running fwgate's own.
    metric("build_info", "gauge", "The fwgate that wrote this file.",
           [(f',version="{_label(state.version or __version__)}"', 1.0)])
    metric("heartbeat_timestamp_seconds", "gauge",
           "When the process last showed it is alive (Unix time); rewritten at least every "
           f"{state.heartbeat_every:g}s while it runs.", [("", state.updated_at)])
    metric("config_ok", "gauge", "0 while a bad config file is ignored: the last good config "
                                 "or the built-in defaults run instead.",
           [("", 0.0 if state.config_error else 1.0)])
    if state.prevention is not None:
        metric("prevention_in_force", "gauge",
               "1 when Netbird cannot write its native rule (an nf_tables iptables on its PATH, "
               "its firewall off, or no Netbird); 0: the node relies on repair alone.",
               [("", 1.0 if state.prevention["in_force"] else 0.0)])
        metric("prevention_info", "gauge", "Why prevention is or is not in force.",
               [(f',state="{_label(state.prevention["state"])}"', 1.0)])
    if state.last_change_at:
        metric("last_change_timestamp_seconds", "gauge", "Last change to the watched tables (Unix time).",
               [("", state.last_change_at)])
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
