"""systemd time spans ("500ms", "5s", "2min", "1h 30min") as seconds."""
from __future__ import annotations

import math
import re

_UNITS = {
    "us": 1e-6, "usec": 1e-6, "µs": 1e-6,
    "ms": 1e-3, "msec": 1e-3,
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zµ]*)", re.IGNORECASE)


def parse_timespan(value: object) -> float:
    """Seconds for a systemd time span; a bare number means seconds.

    Raises ValueError with a message fit to show the user."""
    if isinstance(value, bool):
        raise ValueError("expected a time span such as 500ms, 5s or 2min")
    if isinstance(value, (int, float)):
        if value < 0 or not math.isfinite(value):
            raise ValueError("expected a time span of 0 or more")
        return float(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a time span such as 500ms, 5s or 2min")
    text, total, pos = value.strip(), 0.0, 0
    if text == "infinity":
        return math.inf
    while pos < len(text):
        match = _PART.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(f"{value!r} is not a time span (try 500ms, 5s or 2min)")
        number, unit = match.groups()
        if unit == "M":  # systemd: M is month, m is minute
            raise ValueError(f"{value!r}: months make no sense here")
        factor = _UNITS.get(unit.lower() if unit else "s")
        if factor is None:
            raise ValueError(f"{value!r}: unknown time unit {unit!r}")
        total += float(number) * factor
        pos = match.end()
    return total


def format_timespan(seconds: float) -> str:
    if math.isinf(seconds):
        return "infinity"
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g}min"
    return f"{seconds:g}s"
