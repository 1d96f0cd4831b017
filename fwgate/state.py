"""What the daemon last saw, for `fwgate status` and for node_exporter: pure rendering,
plus the atomic writes at the edge."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field

DEFAULT_RUNTIME_DIR = "/run/fwgate"


def state_path(netns: str | None = None) -> str:
    """systemd's RuntimeDirectory= sets $RUNTIME_DIRECTORY; one file per namespace."""
    directory = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or DEFAULT_RUNTIME_DIR
    return os.path.join(directory, f"state-{netns}.json" if netns else "state.json")


@dataclass
class State:
    pid: int
    netns: str | None
    phase: str = "waiting"          # waiting | ready | watching | failed | stopped
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
    stage_seconds: dict[str, float] = field(default_factory=dict)
    compat_checked_at: float | None = None
    incompatible: list[str] = field(default_factory=list)
    repairs_total: int = 0
    repairs: list[dict] = field(default_factory=list)  # the latest few: {"at", "rule"}
    restarts: list[dict] = field(default_factory=list)  # units restarted after a repair

    MAX_KEPT = 20

    def note_repair(self, at: float, lines: list[str]) -> None:
        self.repairs_total += len(lines)
        self.repairs = (self.repairs + [{"at": at, "rule": line} for line in lines])[-self.MAX_KEPT:]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def render_metrics(state: State) -> str:
    """Prometheus text format (node_exporter's textfile collector)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP fwgate_{name} {help_text}")
        lines.append(f"# TYPE fwgate_{name} {kind}")
        for labels, value in samples:
            lines.append(f"fwgate_{name}{labels} {value:.17g}")

    metric("ready", "gauge", "1 once fwgate has sent READY=1.", [("", 1.0 if state.ready_at else 0.0)])
    metric("degraded", "gauge", "1 while the last verdict is degraded (timeout or unreadable rules).",
           [("", 1.0 if "degraded" in state.status or state.incompatible else 0.0)])
    if state.ready_at:
        metric("ready_timestamp_seconds", "gauge", "When fwgate sent READY=1 (Unix time).",
               [("", state.ready_at)])
    metric("stage_duration_seconds", "gauge", "How long each stage of the gate took to settle.",
           [(f'{{stage="{_label(name)}"}}', secs) for name, secs in state.stage_seconds.items()])
    metric("incompatible_rules", "gauge", "Rules the iptables-nft inside k3s cannot read, at the last check.",
           [("", float(len(state.incompatible)))])
    metric("repairs_total", "counter", "Rules re-encoded so iptables-nft reads them.",
           [("", float(state.repairs_total))])
    metric("resyncs_total", "counter", "Full resyncs after lost nf_tables events.",
           [("", float(state.resyncs_total))])
    metric("rule_changes_total", "counter", "Transactions that changed the watched tables.",
           [("", float(state.changes_total))])
    if state.last_change_at:
        metric("last_change_timestamp_seconds", "gauge", "Last change to the watched tables (Unix time).",
               [("", state.last_change_at)])
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_atomically(path: str, text: str, mode: int = 0o644) -> None:
    """Readers see the old file or the new one, never half of one."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".fwgate-", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_state(path: str) -> State | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    known = State.__dataclass_fields__
    return State(**{k: v for k, v in data.items() if k in known})


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
