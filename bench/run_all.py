"""Every benchmark, then the report.

    .venv/bin/python bench/run_all.py [--before CHECKOUT] [--quick] [--only speed,exposure-50k,...]

As root: the measuring scripts build large rulesets in network namespaces they create
and delete (never the machine's own). Each writes bench/results/NAME.json; then
bench/report.py renders bench/results.md and the table in bench/README.md from them.
--quick runs every script small (a few minutes) into bench/out/, which is not
committed, and renders bench/out/results.md: it checks that the suite works.
The exposure run at 50k rules (15 minutes) runs only when named in --only.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = {  # name: the script and its arguments, in the order they run
    "speed": ["speed.py"],
    "gate_overhead": ["gate_overhead.py"],
    "footprint": ["footprint.py"],
    "bursts": ["bursts.py"],
    "exposure": ["exposure.py", "--rules", "10000"],
    "exposure-50k": ["exposure.py", "--rules", "50000"],   # only when asked: 15 minutes
    "marks_speed": ["marks_speed.py"],
    "k3s_start": ["k3s_start.py"],   # boots a systemd container ten times: 4 minutes
    "compat_differential": ["compat_differential.py"],  # only when asked: 10 minutes
    "deaths": ["deaths.py"],   # only when asked: 15 minutes
}
DEFAULT = [name for name in SCRIPTS if name not in ("exposure-50k", "compat_differential",
                                                    "deaths")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--before", metavar="CHECKOUT",
                        help="a checkout of the code to compare with, with its own .venv")
    parser.add_argument("--only", help=f"comma list of {', '.join(SCRIPTS)}")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (it creates network namespaces)", file=sys.stderr)
        return 4
    names = args.only.split(",") if args.only else DEFAULT
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(SCRIPTS)}")
    common = (["--quick"] if args.quick else []) + (["--before", args.before] if args.before else [])
    failed = []
    for name in names:
        script, *extra = SCRIPTS[name]
        started = time.monotonic()
        print(f"== {name}", flush=True)
        done = subprocess.run([sys.executable, os.path.join(BENCH, script), *extra, *common])
        print(f"== {name}: {'ok' if done.returncode == 0 else 'FAILED'} in "
              f"{time.monotonic() - started:.0f} s", flush=True)
        if done.returncode:
            failed.append(name)
    report = [sys.executable, os.path.join(BENCH, "report.py")]
    if args.quick:
        out = os.path.join(BENCH, "out")
        report += ["--results", out, "--out", os.path.join(out, "results.md"), "--readme", "none"]
    subprocess.run(report, check=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
