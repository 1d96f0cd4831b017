"""In-process speed: the scoped snapshot + digest at 1k/10k/100k rules against
`nft -s list table` and `iptables-save`, the quiet probe cycle at the largest size,
and a pyinstrument profile at 10k. Each version is measured by its own bench/inns.py,
in the same namespace and ruleset, interleaved a few runs at a time.

    .venv/bin/python bench/speed.py [--sizes 1000,10000,100000] [--before CHECKOUT] [--quick]

Writes results/speed.json, and results/profiles/{after,before}.txt when pyinstrument
can be imported (it is not a dependency: `pip install --target DIR pyinstrument` and
put DIR on PYTHONPATH).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    OUT, RESULTS, ROOT, Netns, Version, arguments, build_ruleset, child_json, median,
    needs_root, relative, save, versions,
)

RUNS = {1000: 9, 10000: 9, 100000: 8}


def inns(v: Version, netns: str, what: str, runs: int, *extra: str) -> dict:
    result = child_json([v.python, v.script("inns.py"), "--netns", netns, what,
                         "--runs", str(runs), *extra])
    result.pop("fwgate_from", None)  # older copies print where fwgate came from: a path
    return result


def interleaved(vs: list[Version], netns: str, what: str, runs: int, per: int) -> dict:
    """`runs` runs of each version, `per` at a time, alternating which goes first."""
    merged: dict[str, dict] = {}
    done = 0
    while done < runs:
        n = min(per, runs - done)
        order = vs if (done // per) % 2 == 0 else vs[::-1]
        for v in order:
            r = inns(v, netns, what, n)
            into = merged.setdefault(v.label, {})
            for key, value in r.items():
                if isinstance(value, list):
                    into.setdefault(key, []).extend(value)
                elif isinstance(value, int) and key.startswith("dumps"):
                    into[key] = into.get(key, 0) + value
                else:
                    into.setdefault(key, value)
        done += n
    return merged


def profiles(vs: list[Version], netns: str, out: str) -> dict:
    """pyinstrument's tree for each version, with paths relative to the checkout."""
    os.makedirs(os.path.join(out, "profiles"), exist_ok=True)
    written = {}
    for v in vs:
        with tempfile.NamedTemporaryFile("r", suffix=".txt") as tmp:
            try:
                r = inns(v, netns, "profile", 1, "--out", tmp.name)
            except RuntimeError as exc:  # an older inns.py has no way to say 'no pyinstrument'
                r = {"skipped": str(exc).strip().splitlines()[-1]}
            if "skipped" in r:
                written[v.label] = r["skipped"]
                continue
            text = relative(tmp.read(), [v.root, ROOT])
        path = os.path.join(out, "profiles", f"{v.label}.txt")
        with open(path, "w") as fh:
            fh.write(text)
        written[v.label] = os.path.relpath(path, ROOT)
    return written


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--quiet-runs", type=int, default=500)
    args = parser.parse_args()
    needs_root()
    if args.quick:
        args.sizes, args.quiet_runs = "1000,10000", 20
    vs = versions(args.before)
    sizes = [int(x) for x in args.sizes.split(",")]
    out = args.out or (OUT if args.quick else RESULTS)
    data: dict = {"sizes": {}, "quiet": None, "profiles": None}
    for n in sizes:
        with Netns("fwspeed") as netns:
            started = time.monotonic()
            build_ruleset(netns, n)
            runs = 2 if args.quick else RUNS.get(n, 5)
            row = interleaved(vs, netns, "snapshot", runs, per=1 if n > 10000 else 3)
            data["sizes"][str(n)] = {"build_s": time.monotonic() - started, **row}
            print(f"snapshot {n}: " + ", ".join(
                f"{label} {median(r['fwgate']) * 1000:.1f} ms" for label, r in row.items()) +
                f"; nft {median(row['after']['nft']) * 1000:.1f} ms", flush=True)
            if n == max(sizes):
                data["quiet"] = interleaved(vs, netns, "quiet", args.quiet_runs,
                                            per=max(1, args.quiet_runs // 2))
                print("quiet cycle: " + ", ".join(
                    f"{label} {median(r['cycle']) * 1000:.3f} ms"
                    for label, r in data["quiet"].items()), flush=True)
            if n == 10000:
                data["profiles"] = profiles(vs, netns, out)
    save(args, "speed", data, vs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
