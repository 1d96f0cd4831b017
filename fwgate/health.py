"""Is this node guarded right now? The one judgement behind `fwgate status`: the state
files the gate and the guard write, what systemd says of their units, and whether
prevention is in force. Pure: facts in, problems and an exit code out.

A state file is a process's word about itself, and a dead process's last word stays
behind: so the guard counts as guarding only while its unit is active (when systemd can
be asked), its pid is alive, and its state was rewritten within a few heartbeats.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import EXIT_FAILED, EXIT_INCOMPATIBLE, EXIT_OK
from .state import State

UNITS = {"gate": "fwgate.service", "guard": "fwgate-guard.service"}
STALE_AFTER = 3  # heartbeats: a state older than this many is a hung or vanished process
SCHEMA = 1


@dataclass(frozen=True)
class UnitView:
    """What systemd says of one unit (`systemctl show`'s properties)."""
    active: str          # ActiveState: active, failed, inactive, activating, not-found ...
    sub: str = ""        # SubState: running, exited, auto-restart, dead ...
    result: str = ""     # Result: success, exit-code, signal, watchdog, start-limit-hit ...
    main_pid: int = 0
    restarts: int = 0    # NRestarts
    status_text: str = ""


@dataclass(frozen=True)
class Role:
    """One of gate and guard, as found."""
    name: str                   # gate | guard
    state: State | None
    alive: bool                 # its pid runs
    unit: UnitView | None       # None: systemd not asked (--netns, no D-Bus)
    path: str = ""


@dataclass(frozen=True)
class Health:
    exit_code: int
    problems: tuple[str, ...] = ()    # each one makes status fail
    warnings: tuple[str, ...] = ()    # true and worth knowing, never a failure
    running: dict = field(default_factory=dict)   # role -> bool: guarding or gating now


def _age(state: State, now: float) -> float:
    return now - state.updated_at


def _stale(state: State, now: float) -> bool:
    return bool(state.heartbeat_every) and _age(state, now) > STALE_AFTER * state.heartbeat_every


def _unit_words(unit: UnitView) -> str:
    sub = f" ({unit.sub}{', ' + unit.result if unit.result not in ('', 'success') else ''})"
    return f"{unit.active}{sub if unit.sub else ''}"


def judge_guard(guard: Role, now: float) -> tuple[bool, list[str]]:
    """(guarding now, problems)."""
    name, state, unit = UNITS["guard"], guard.state, guard.unit
    if unit is not None and unit.active == "not-found":
        return False, [f"{name} is not installed: nothing repairs Netbird's rule after boot"]
    if unit is not None and unit.active != "active":
        return False, [f"{name} is {_unit_words(unit)}: nothing repairs Netbird's rule "
                       f"(k3s dies at kube-router's next sync after a Netbird re-init)"]
    if state is None:
        return False, [f"{name} has written no state since boot: not guarding"]
    if not guard.alive or state.phase not in ("guarding", "waiting"):
        return False, [f"the guard (pid {state.pid}) is not running: its last state "
                       f"({state.phase}) is history"]
    if _stale(state, now):
        return False, [f"the guard (pid {state.pid}) has shown no sign of life for "
                       f"{_age(state, now):.0f}s (it rewrites its state every "
                       f"{state.heartbeat_every:g}s): hung?"]
    problems = []
    if state.config_error:
        problems.append(f"the guard ignores a bad config file and runs on "
                        f"{state.config_source}: {state.config_error}")
    return True, problems


def judge_gate(gate: Role) -> list[str]:
    state, unit = gate.state, gate.unit
    if unit is not None and unit.active == "failed":
        return [f"{UNITS['gate']} failed ({unit.result}): k3s is held back" +
                (f": {state.status}" if state and state.phase == "failed" else "")]
    if state is not None and state.phase == "failed":
        return [f"the gate failed: {state.status}"]
    return []


def judge(gate: Role, guard: Role, now: float, prevention: dict | None) -> Health:
    """The exit code: 3 when the running guard last saw a rule k3s dies on, 1 for any
    other problem (guard not guarding, stale, on a fallback config; gate failed or never
    ready), else 0."""
    guarding, problems = judge_guard(guard, now)
    problems += judge_gate(gate)
    gate_running = gate.alive and gate.state is not None and \
        gate.state.phase in ("waiting", "guarding") and not _stale(gate.state, now)
    ready = any(r.state is not None and r.state.ready_at for r in (gate, guard))
    if gate.state is not None and not gate.state.ready_at and not gate_running and \
            gate.state.phase != "failed":
        problems.append("the gate never sent READY and is not running: k3s was not let through")
    warnings = []
    if prevention is not None and not prevention.get("in_force"):
        warnings.append(f"prevention NOT in force: {prevention['why']}")
    blocking = guarding and guard.state is not None and bool(guard.state.incompatible)
    if blocking:
        problems.append(f"the guard sees {len(guard.state.incompatible)} rule(s) k3s dies on: "
                        f"{guard.state.incompatible[0]}")
    code = EXIT_INCOMPATIBLE if blocking else EXIT_FAILED if problems or not ready else EXIT_OK
    return Health(code, tuple(problems), tuple(warnings),
                  {"gate": gate_running, "guard": guarding})


def status_json(gate: Role, guard: Role, health: Health, prevention: dict | None) -> dict:
    """`fwgate status --json`: one shape whatever ran, `schema` bumped on a change."""
    def entry(role: Role) -> dict | None:
        if role.state is None and role.unit is None:
            return None
        # The state file's fields (none: never ran), then what we make of them.
        return {**(asdict(role.state) if role.state else {}),
                "running": health.running.get(role.name, False),
                "unit": ({"name": UNITS[role.name], **asdict(role.unit)}
                         if role.unit is not None else None),
                "state_file": role.path if role.state else None}
    return {"schema": SCHEMA, "ok": health.exit_code == EXIT_OK, "exit_code": health.exit_code,
            "problems": list(health.problems), "warnings": list(health.warnings),
            "prevention": prevention, "gate": entry(gate), "guard": entry(guard)}


BACKOFF_MAX = 60.0


def crash_backoff(previous: State | None) -> tuple[int, float]:
    """(crashes in a row, seconds to wait before guarding) from the state the previous
    guard left. One that died before it ever guarded (no READY) and did not stop
    cleanly crashed at start: a loop of those backs off. A guard that was guarding
    and died is replaced at once: every second unguarded counts."""
    if previous is None or previous.phase == "stopped" or previous.ready_at is not None:
        return 0, 0.0
    streak = previous.crash_streak + 1
    return streak, min(2.0 ** (streak - 1), BACKOFF_MAX)
