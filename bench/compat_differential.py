"""The reader model against the real iptables binaries on generated rules (the large
run of tests/fwgate_testing/differential.py; tests/netns/test_compat_differential.py is the bounded
one). Each case: a fresh namespace, kube-router's state, one generated nft rule,
every version's binaries (kube-router's fatal calls, -S, iptables-save, the save →
restore round trip) against the model alone (`compat.iptables: none`).

    sudo .venv/bin/python bench/compat_differential.py --cases 2000 --seed 21

Writes results/compat_differential.json: per version the cases judged, how many agree,
the ground truth's categories, the model's, false ok / false block, and every
disagreement (case, truth, model, what differed). --quick: 40 cases into out/.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [BENCH, os.path.join(os.path.dirname(BENCH), "tests")]

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from common import save  # noqa: E402
from fwgate_testing.differential import cases, judge, summary  # noqa: E402
from fwgate_testing.iptables_versions import builds  # noqa: E402


def generate(n: int, at: int) -> list:
    """n distinct cases from the grammar, in the order Hypothesis draws them."""
    drawn: dict[str, object] = {}

    @seed(at)
    @settings(max_examples=n * 3, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(cases())
    def draw(case):
        if len(drawn) < n:
            drawn.setdefault(case.id, case)
    draw()
    return list(drawn.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--before", help="ignored: the model is judged against the binaries, "
                                     "not against other code")
    args = ap.parse_args()
    n = 40 if args.quick else args.cases
    versions = builds()
    todo = generate(n, args.seed)
    results, start = [], time.monotonic()
    for i, case in enumerate(todo, 1):
        r = judge(case, versions)
        results.append(r)
        if r.valid and not r.agrees:
            print(r.describe(), flush=True)
        if i % 100 == 0:
            print(f"# {i}/{len(todo)} in {time.monotonic() - start:.0f}s", flush=True)
    valid = [r for r in results if r.valid]
    doc = {
        "what": "generated nft rules: the reader model alone against real iptables binaries",
        "iptables": {v: os.path.relpath(b, os.path.dirname(BENCH)) for v, b in versions.items()},
        "seed": args.seed, "drawn": len(todo), "judged": len(valid),
        "refused_by_nft": len(todo) - len(valid),
        "seconds": round(time.monotonic() - start, 1),
        "versions": summary(results),
        "disagreements": [
            {"case": r.case.id, "versions": {
                v: {"truth": x.truth, "model": x.model, "detail": x.detail,
                    "saved": x.saved_rule,
                    "calls": {t: [a, sorted(p, key=str)] for t, (a, p) in x.calls.items()
                              if p and a not in p}}
                for v, x in r.versions.items() if not x.agrees}}
            for r in valid if not r.agrees],
    }
    save(args, "compat_differential", doc, [])
    for v, s in doc["versions"].items():
        print(f"{v}: {s['agree']}/{s['cases']} agree; false ok {s['false_ok']}, "
              f"false block {s['false_block']}; {s['disagreements']}")


if __name__ == "__main__":
    main()
