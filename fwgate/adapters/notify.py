"""sd_notify through sdnotify, with send errors made visible."""
from __future__ import annotations

import os

import sdnotify

from ..errors import EnvironmentProblem

SEND_TIMEOUT = 1.0  # seconds one sd_notify may block (systemd reads at once)


class Notifier:
    """Talks to systemd when NOTIFY_SOCKET is set; does nothing otherwise.

    Create it before entering another network namespace: an abstract socket
    address is looked up in the namespace the socket was made in."""

    def __init__(self, log=None, enabled: bool = True) -> None:
        self.address = os.environ.get("NOTIFY_SOCKET") if enabled else None
        self.log = log
        self.failed = False
        self._notifier = None
        if self.address:
            try:
                self._notifier = sdnotify.SystemdNotifier(debug=True)
                # A receiver that stops reading must never stall the event loop.
                self._notifier.socket.settimeout(SEND_TIMEOUT)
            except OSError as exc:
                raise EnvironmentProblem(
                    f"NOTIFY_SOCKET={self.address}: cannot reach systemd's notify socket: "
                    f"{exc.strerror or exc}") from None
        self.watchdog_interval = self._watchdog_interval() if self.address else None

    @classmethod
    def disabled(cls) -> "Notifier":
        return cls(enabled=False)

    @staticmethod
    def _watchdog_interval() -> float | None:
        usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 1e6 / 2  # ping at half the period, as sd_watchdog_enabled advises
        except ValueError:
            return None

    @property
    def enabled(self) -> bool:
        return self._notifier is not None

    def send(self, **fields: object) -> None:
        """send(READY=1, STATUS="...") → "READY=1\\nSTATUS=...". Newlines in values are flattened."""
        if not self._notifier:
            return
        text = "\n".join(f"{k}={str(v).replace(chr(10), ' ')}" for k, v in fields.items())
        try:
            self._notifier.notify(text)
            self.failed = False
        except OSError as exc:
            if not self.failed and self.log:  # say it once, not on every tick
                self.log.warning(f"sd_notify to {self.address} failed: {exc.strerror or exc}")
            self.failed = True

    def tick_interval(self, tick: float) -> float:
        """How often the loop must call keepalive(): a watchdog may want it sooner."""
        return min(tick, self.watchdog_interval) if self.watchdog_interval else tick

    def keepalive(self, working: bool, extend_by: float) -> None:
        """While working (before READY): push systemd's start timeout `extend_by`
        further; after READY that would stretch a runtime limit instead. And the
        watchdog ping, when the unit set one."""
        fields: dict[str, object] = {}
        if working:
            fields["EXTEND_TIMEOUT_USEC"] = int(extend_by * 1e6)
        if self.watchdog_interval:
            fields["WATCHDOG"] = 1
        if fields:
            self.send(**fields)

    def close(self) -> None:
        if self._notifier and self._notifier.socket:
            self._notifier.socket.close()
