import math

import pytest

from fwgate.timespan import format_timespan, parse_timespan


@pytest.mark.parametrize("text,seconds", [
    ("500ms", 0.5), ("5s", 5), ("2min", 120), ("1h 30min", 5400), ("1min30s", 90),
    ("0", 0), (0, 0), (7, 7), ("2.5s", 2.5), ("100us", 1e-4), ("1d", 86400),
    ("infinity", math.inf), ("3 sec", 3), ("5", 5),
])
def test_parses_systemd_time_spans(text, seconds):
    assert parse_timespan(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "5x", "s", "-1s", -3, True, None, [], "1M", "5s!"])
def test_rejects_what_is_not_a_time_span(bad):
    with pytest.raises(ValueError):
        parse_timespan(bad)


def test_formats_readably():
    assert [format_timespan(x) for x in (0.5, 5, 300, 90)] == ["500ms", "5s", "5min", "90s"]
