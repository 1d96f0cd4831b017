"""systemd unit states over D-Bus (pystemd), kept current by PropertiesChanged signals."""
from __future__ import annotations

from ..errors import EnvironmentProblem

SYSTEMD = b"org.freedesktop.systemd1"
MANAGER_PATH = b"/org/freedesktop/systemd1"
MANAGER = b"org.freedesktop.systemd1.Manager"
UNIT = b"org.freedesktop.systemd1.Unit"
PROPERTIES = b"org.freedesktop.DBus.Properties"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class UnitWatch:
    """ActiveState of a few units. Signals only tell us *that* something changed;
    the state itself is always read back, so a coalesced or odd signal cannot
    leave us with a wrong answer."""

    def __init__(self, units: list[str]):
        try:
            from pystemd.dbuslib import DBus, apply_signature
        except ImportError as exc:  # pragma: no cover - packaging problem
            raise EnvironmentProblem(f"pystemd is not installed: {exc}") from None
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
                path = bus.call_method(SYSTEMD, MANAGER_PATH, MANAGER, b"LoadUnit",
                                       apply_signature(b"s", [unit.encode()])).body
                self.paths[unit] = path if isinstance(path, bytes) else path[0]
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
                self.states[unit] = _text(self.bus.get_property(SYSTEMD, path, UNIT,
                                                                b"ActiveState", b"s"))

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


def _reason(exc: Exception) -> str:
    """One line: pystemd's DBusError carries a negative errno and D-Bus's message."""
    import os
    code, message = getattr(exc, "errno", None), getattr(exc, "err_message", "")
    message = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
    if isinstance(code, int) and code < 0:
        return os.strerror(-code) + (f" ({message})" if message else "")
    return " ".join(str(exc).split()) or type(exc).__name__
