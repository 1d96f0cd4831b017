"""systemd over D-Bus (pystemd): unit states kept current by signals, restarting a
crashed unit, and the environment a unit's processes get."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..core.conditions import NOT_RUNNABLE
from ..errors import EnvironmentProblem

if TYPE_CHECKING:
    from ..health import UnitView

SYSTEMD = b"org.freedesktop.systemd1"
MANAGER_PATH = b"/org/freedesktop/systemd1"
MANAGER = b"org.freedesktop.systemd1.Manager"
UNIT = b"org.freedesktop.systemd1.Unit"
SERVICE = b"org.freedesktop.systemd1.Service"
PROPERTIES = b"org.freedesktop.DBus.Properties"
# What systemd gives a service without PATH of its own (split-/usr builds add /sbin:/bin).
DEFAULT_SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _reason(exc: Exception) -> str:
    """One line: pystemd's DBusError carries a negative errno and D-Bus's message."""
    code, message = getattr(exc, "errno", None), getattr(exc, "err_message", "")
    message = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
    if isinstance(code, int) and code < 0:
        return os.strerror(-code) + (f" ({message})" if message else "")
    return " ".join(str(exc).split()) or type(exc).__name__


def _dbuslib():
    try:
        from pystemd.dbuslib import DBus, apply_signature
    except ImportError as exc:  # a packaging problem
        raise EnvironmentProblem(f"pystemd is not installed: {exc}") from None
    return DBus, apply_signature


def _unit_path(bus, apply_signature, unit: str) -> bytes:
    # call_method takes (type, value) pairs: apply_signature makes them.
    path = bus.call_method(SYSTEMD, MANAGER_PATH, MANAGER, b"LoadUnit",
                           apply_signature(b"s", [unit.encode()])).body
    return path if isinstance(path, bytes) else path[0]


class UnitWatch:
    """ActiveState of a few units (or "not-found" / "masked"). Signals only tell us *that* something changed;
    the state itself is always read back, so a coalesced or odd signal cannot
    leave us with a wrong answer."""

    def __init__(self, units: list[str]):
        DBus, apply_signature = _dbuslib()
        self.units = list(dict.fromkeys(units))
        self.states: dict[str, str] = {}
        self.paths: dict[str, bytes] = {}
        self.bus = None
        self._signalled = True  # read every state once at the start
        try:
            bus = DBus()
            bus.open()
            self.bus = bus
            # pystemd calls callback(msg, error=, userdata=), sets an attribute on
            # it and keeps only a raw pointer: a plain function we hold on to.
            self._callback = lambda *_a, **_k: setattr(self, "_signalled", True)
            # Match first, then Subscribe: a change in between still wakes us.
            for unit in self.units:
                self.paths[unit] = _unit_path(bus, apply_signature, unit)
                bus.match_signal(SYSTEMD, self.paths[unit], PROPERTIES,
                                 b"PropertiesChanged", self._callback)
            # Without a subscriber systemd sends no unit signals at all.
            bus.call_method(SYSTEMD, MANAGER_PATH, MANAGER, b"Subscribe", [])
            self._read_states()
        except Exception as exc:  # pystemd raises DBusError and friends
            self.close()
            raise EnvironmentProblem(f"cannot watch {', '.join(self.units)} over the system "
                                     f"D-Bus: {_reason(exc)}") from None

    def fileno(self) -> int:
        return self.bus.get_fd()

    def _drain(self) -> bool:
        """Run sd-bus until it has nothing left; True if a signal of ours came in.

        sd-bus reads the socket in chunks and queues messages that arrive during a
        synchronous call (get_property), so a quiet fd does not mean an empty
        queue: call process() until it hands back nothing and ran no callback.
        (pystemd hides sd_bus_process()'s return value, hence the flag.)"""
        seen = self._signalled
        while True:
            self._signalled = False
            handled = self.bus.process()
            seen = seen or self._signalled
            if handled.is_empty() and not self._signalled:
                return seen

    def _read_states(self) -> None:
        while self._drain():
            for unit, path in self.paths.items():
                self.states[unit] = self._state(path)

    def _state(self, path: bytes) -> str:
        """ActiveState, or the LoadState when the unit cannot run at all:
        "not-found" (not installed) or "masked"."""
        loaded = _text(self.bus.get_property(SYSTEMD, path, UNIT, b"LoadState", b"s"))
        if loaded in NOT_RUNNABLE:
            return loaded
        return _text(self.bus.get_property(SYSTEMD, path, UNIT, b"ActiveState", b"s"))

    def process(self) -> bool:
        """Handle pending bus traffic; True if a watched unit's state changed."""
        before = dict(self.states)
        try:
            self._read_states()
        except Exception as exc:  # the bus went away (dbus restarted, ...)
            raise EnvironmentProblem(f"lost the system D-Bus while watching "
                                     f"{', '.join(self.units)}: {_reason(exc)}") from None
        return before != self.states

    def close(self) -> None:
        if self.bus is not None:
            self.bus.close()
            self.bus = None


def unit_states(units: list[str]) -> dict[str, str]:
    """ActiveState of each unit, once."""
    watch = UnitWatch(units)
    try:
        return dict(watch.states)
    finally:
        watch.close()


def crashed(active_state: str, sub_state: str) -> bool:
    """Failed, or between two crashes (auto-restart); a unit that is merely
    starting is left alone."""
    return active_state == "failed" or (active_state == "activating" and sub_state == "auto-restart")


def restart_if_crashed(unit: str) -> str | None:
    """Restart `unit` if it is failed or crash-looping. Returns the state it was in
    when restarted, None when it was left alone (active, inactive, not loaded)."""
    DBus, apply_signature = _dbuslib()
    try:
        name = unit.encode()
        with DBus() as bus:
            path = _unit_path(bus, apply_signature, unit)
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
        raise EnvironmentProblem(f"cannot restart {unit} over D-Bus: {_reason(exc)}") from None


def _assignments(entries) -> dict[str, str]:
    out = {}
    for entry in entries:
        key, sep, value = _text(entry).partition("=")
        if sep:
            out[key] = value
    return out


def _environment_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines of an EnvironmentFile= (quotes stripped; enough to find PATH)."""
    out = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if not line or line[0] in "#;":
                    continue
                key, sep, value = line.removeprefix("export ").partition("=")
                if sep:
                    out[key.strip()] = value.strip().strip("'\"")
    except OSError:
        pass
    return out


def service_environment(unit: str) -> tuple[bool, dict[str, str], str]:
    """(installed, the environment a service's processes get, where its PATH comes
    from). systemd's order: the manager's environment, then Environment=, then
    EnvironmentFile= (which overrides Environment=)."""
    DBus, apply_signature = _dbuslib()
    try:
        with DBus() as bus:
            path = _unit_path(bus, apply_signature, unit)
            loaded = _text(bus.get_property(SYSTEMD, path, UNIT, b"LoadState", b"s"))
            own = _assignments(bus.get_property(SYSTEMD, path, SERVICE, b"Environment", b"as"))
            files = bus.get_property(SYSTEMD, path, SERVICE, b"EnvironmentFiles", b"a(sb)")
            manager = _assignments(bus.get_property(SYSTEMD, MANAGER_PATH, MANAGER,
                                                    b"Environment", b"as"))
    except Exception as exc:
        raise EnvironmentProblem(f"cannot read {unit}'s environment over D-Bus: "
                                 f"{_reason(exc)}") from None
    env = {"PATH": DEFAULT_SERVICE_PATH, **manager}
    source = "systemd's default for services"
    if "PATH" in own:
        source = f"Environment= of {unit}"
    env.update(own)
    for name, _optional in files or ():
        found = _environment_file(_text(name))
        if "PATH" in found:
            source = f"EnvironmentFile={_text(name)} of {unit}"
        env.update(found)
    return loaded != "not-found", env, source


def unit_views(units: list[str]) -> "dict[str, UnitView]":
    """What systemd says of each unit, for `fwgate status`."""
    from ..health import UnitView
    DBus, apply_signature = _dbuslib()
    out = {}
    try:
        with DBus() as bus:
            for unit in units:
                path = _unit_path(bus, apply_signature, unit)
                get = lambda iface, name, sig: bus.get_property(SYSTEMD, path, iface, name, sig)  # noqa: E731
                if _text(get(UNIT, b"LoadState", b"s")) == "not-found":
                    out[unit] = UnitView("not-found")
                    continue
                out[unit] = UnitView(
                    _text(get(UNIT, b"ActiveState", b"s")), _text(get(UNIT, b"SubState", b"s")),
                    _text(get(SERVICE, b"Result", b"s")), int(get(SERVICE, b"MainPID", b"u")),
                    int(get(SERVICE, b"NRestarts", b"u")), _text(get(SERVICE, b"StatusText", b"s")))
    except Exception as exc:
        raise EnvironmentProblem(f"cannot ask systemd about {', '.join(units)} over D-Bus: "
                                 f"{_reason(exc)}") from None
    return out


def daemon_reload() -> None:
    """`systemctl daemon-reload`: unit files and drop-ins read again."""
    DBus, apply_signature = _dbuslib()
    try:
        with DBus() as bus:
            bus.call_method(SYSTEMD, MANAGER_PATH, MANAGER, b"Reload", [])
    except Exception as exc:
        raise EnvironmentProblem(f"cannot reload systemd over D-Bus: {_reason(exc)}") from None
