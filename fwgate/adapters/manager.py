"""Restarting a unit through systemd's manager (pystemd, D-Bus): for a k3s that
crashed on an unreadable rule before fwgate repaired it."""
from __future__ import annotations

from ..errors import EnvironmentProblem

SYSTEMD = b"org.freedesktop.systemd1"
MANAGER_PATH = b"/org/freedesktop/systemd1"
MANAGER = b"org.freedesktop.systemd1.Manager"
UNIT = b"org.freedesktop.systemd1.Unit"

def crashed(active_state: str, sub_state: str) -> bool:
    """Failed, or between two crashes (auto-restart); a unit that is merely
    starting is left alone."""
    return active_state == "failed" or (active_state == "activating" and sub_state == "auto-restart")


def restart_if_crashed(unit: str) -> str | None:
    """Restart `unit` if it is failed or crash-looping. Returns the state it was in
    when restarted, None when it was left alone (active, inactive, not loaded)."""
    try:
        from pystemd.dbuslib import DBus, apply_signature
        name = unit.encode()
        with DBus() as bus:
            # call_method takes (type, value) pairs: apply_signature makes them.
            path = bus.call_method(SYSTEMD, MANAGER_PATH, MANAGER, b"LoadUnit",
                                   apply_signature(b"s", [name])).body
            path = path if isinstance(path, bytes) else path[0]
            state, sub = (_text(bus.get_property(SYSTEMD, path, UNIT, prop, b"s"))
                          for prop in (b"ActiveState", b"SubState"))
            if not crashed(state, sub):
                return None
            if state == "failed":
                bus.call_method(SYSTEMD, MANAGER_PATH, MANAGER, b"ResetFailedUnit",
                                apply_signature(b"s", [name]))
            bus.call_method(SYSTEMD, MANAGER_PATH, MANAGER, b"RestartUnit",
                            apply_signature(b"ss", [name, b"replace"]))
            return state if state == "failed" else f"{state} ({sub})"
    except Exception as exc:  # pystemd's DBusError and friends
        raise EnvironmentProblem(f"cannot restart {unit} over D-Bus: {exc}") from None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
