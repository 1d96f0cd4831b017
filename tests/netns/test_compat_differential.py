"""The bounded run of the differential test (tests/fwgate_testing/differential.py): generated nft rules,
each in fresh namespaces next to kube-router's state, judged by the real binaries of
every version there is here (kube-router's fatal calls, -S, iptables-save and the save →
restore round trip) against the reader model alone (`compat.iptables: none`).

Two runs: a fixed seed (the same cases every time) and a rotating one (today's date:
other cases every day; the seed is in the failure message, and
`FWGATE_DIFF_SEED=N pytest …` replays it). FWGATE_DIFF_CASES sets the cases per run
(default 120, about 20 seconds each here). Every disagreement a run finds becomes a
case in tests/netns/test_compat_generated.py. The large run is
bench/compat_differential.py.
"""
from __future__ import annotations

import datetime
import os
import shutil

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

from fwgate_testing.differential import cases, judge
from fwgate_testing.iptables_versions import builds

CASES = int(os.environ.get("FWGATE_DIFF_CASES", "120"))
FIXED = 21
ROTATING = int(os.environ.get("FWGATE_DIFF_SEED") or datetime.date.today().strftime("%Y%m%d"))


def _needs() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    missing = [t for t in ("ip", "nft") if not shutil.which(t)]
    return f"needs {', '.join(missing)}" if missing else None


def _run(at: int) -> None:
    reason = _needs()
    if reason:
        pytest.skip(reason)
    versions = builds()
    judged, wrong, seen = [], [], set()

    @seed(at)
    @settings(max_examples=CASES, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(cases())
    def one(case):
        if case.id in seen:
            return
        seen.add(case.id)
        result = judge(case, versions)
        if result.valid:
            judged.append(result)
            if not result.agrees:
                wrong.append(result.describe())
    one()
    # the grammar makes mostly rules nft accepts: a run that judged few says so
    assert len(judged) >= CASES // 2, f"seed {at}: only {len(judged)} of {len(seen)} cases valid"
    assert not wrong, f"seed {at}: {len(wrong)} of {len(judged)} cases disagree:\n" + \
        "\n".join(wrong)


def test_fixed_seed():
    _run(FIXED)


def test_rotating_seed():
    _run(ROTATING)
