"""systemd unit states over D-Bus (pystemd), kept current by PropertiesChanged signals."""
from __future__ import annotations

from ..errors import EnvironmentProblem

SYSTEMD = b"org.freedesktop.systemd1"
MANAGER_PATH = b"/org/freedesktop/systemd1"
MANAGER = b"org.freedesktop.systemd1.Manager"
UNIT = b"org.freedesktop.systemd1.Unit"
PROPERTIES = b"org.freedesktop.DBus.Properties"
_MAX_DRAIN = 256


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class UnitWatch:
    """ActiveState of a few units. Signals only tell us *that* something changed;
    the state itself is always read back, so a coalesced or odd signal cannot
    leave us with a wrong answer."""

    def __init__(self, units: list[str]):
        try:
            from pystemd.dbuslib import DBus
        except ImportError as exc:  # pragma: no cover - packaging problem
            raise EnvironmentProblem(f"pystemd is not installed: {exc}") from None
        self.units = list(dict.fromkeys(units))
        self.states: dict[str, str] = {}
        self.paths: dict[str, bytes] = {}
        try:
            self.bus = DBus()
            self.bus.open()
            # Without a subscriber systemd sends no unit signals at all.
            self.bus.call_method(SYSTEMD, MANAGER_PATH, MANAGER, b"Subscribe", [])
            for unit in self.units:
                path = self.bus.call_method(SYSTEMD, MANAGER_PATH, MANAGER, b"LoadUnit",
                                            [unit.encode()]).body
                self.paths[unit] = path if isinstance(path, bytes) else path[0]
                self.bus.match_signal(SYSTEMD, self.paths[unit], PROPERTIES,
                                      b"PropertiesChanged", self._on_signal)
        except EnvironmentProblem:
            raise
        except Exception as exc:  # pystemd raises DBusError and friends
            raise EnvironmentProblem(f"cannot watch {', '.join(self.units)} over the system "
                                     f"D-Bus: {exc}") from None
        self._signalled = True
        self.process()

    def _on_signal(self, *_args) -> None:
        self._signalled = True

    def fileno(self) -> int:
        return self.bus.get_fd()

    def _drain(self) -> bool:
        """Run sd-bus until idle; True if it handed us anything."""
        seen = False
        for _ in range(_MAX_DRAIN):
            if self.bus.process().is_empty():
                break
            seen = True
        return seen or self._signalled

    def process(self) -> bool:
        """Handle pending bus traffic; True if a watched unit's state changed."""
        before = dict(self.states)
        while self._drain():
            self._signalled = False
            for unit, path in self.paths.items():
                self.states[unit] = _text(self.bus.get_property(SYSTEMD, path, UNIT,
                                                                b"ActiveState", b"s"))
        return before != self.states

    def close(self) -> None:
        self.bus.close()
