from fwgate.settle import QuietWindow


def test_window_restarts_on_change_and_drops_the_baseline():
    w = QuietWindow(0.0)
    w.set_baseline(1, "a")
    w.change(3.0)
    assert (w.last_change, w.changes, w.baseline) == (3.0, 1, None)
    assert w.quiet_for(4.5) == 1.5


def test_confirm_same_digest_after_unrelated_transactions():
    w = QuietWindow(0.0)
    w.set_baseline(5, "a")
    assert not w.unchanged_since_baseline(6)
    assert w.confirm(10.0, 6, "a")          # a change elsewhere moved the genid only
    assert w.unchanged_since_baseline(6)
    assert w.last_change == 0.0


def test_confirm_detects_a_change_no_event_told_us_about():
    w = QuietWindow(0.0)
    w.set_baseline(5, "a")
    assert not w.confirm(10.0, 7, "b")
    assert w.last_change == 10.0 and w.baseline.digest == "b" and w.changes == 1


def test_lost_events_count_as_a_change():
    w = QuietWindow(0.0)
    w.set_baseline(1, "a")
    w.lost_events(2.0)
    assert (w.resyncs, w.changes, w.baseline, w.last_change) == (1, 1, None, 2.0)


def test_clock_never_moves_the_window_back():
    w = QuietWindow(5.0)
    w.change(4.0)
    assert w.last_change == 5.0
