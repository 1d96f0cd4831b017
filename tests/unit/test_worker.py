"""The worker thread: one job at a time, its end a byte the loop's selector sees."""
from __future__ import annotations

import select
import sys
import threading

from fwgate.adapters.worker import Worker


def test_the_switch_interval_is_short_only_while_a_job_runs():
    before, release = sys.getswitchinterval(), threading.Event()
    worker = Worker()
    try:
        assert sys.getswitchinterval() == before          # constructing it changes nothing
        worker.start(lambda: release.wait(5) and sys.getswitchinterval())
        assert sys.getswitchinterval() == 0.001            # the loop gets the interpreter back soon
        release.set()
        assert select.select([worker], [], [], 5)[0] == [worker]
        assert worker.result() == 0.001 and sys.getswitchinterval() == before
    finally:
        release.set()
        worker.close()
    assert sys.getswitchinterval() == before


def test_a_job_that_raises_hands_the_exception_to_the_loop():
    worker = Worker()
    try:
        worker.start(lambda: 1 / 0)
        assert select.select([worker], [], [], 5)[0] == [worker]
        assert isinstance(worker.result(), ZeroDivisionError)
    finally:
        worker.close()
