"""How late k3s starts: its start minus (Netbird's last change + settle), under a real
systemd, with the package as installed and its config unedited (issue 11: goal ≤ 1 s).

    .venv/bin/python bench/k3s_start.py [--runs 5] [--quick] [--out DIR]

Boots the systemd container of tests/systemd (fwgate_testing.node.lifecycle's node, as tests/systemd/test_lifecycle.py boots it:
the Netbird and k3s stand-ins, k3s's bundled iptables only) once per run and node kind:
a plain node, and one whose iptables filter table exists at boot. Writes
results/k3s_start.json.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import AFTER, arguments, median, needs_root, percentile, save  # noqa: E402

from fwgate_testing.node import debs, rootfs  # noqa: E402
from fwgate_testing.node import lifecycle as node  # noqa: E402
from fwgate_testing.node.container import Container, programmer_changes  # noqa: E402


def one(deb: Path, kind: str) -> float:
    with Container(rootfs.build(), binds_ro=debs.node_binds([deb])) as c:
        node.plain_node(c, deb)
        if kind == "filter-table-at-boot":
            c.write_file("/etc/systemd/system/filter-at-boot.service", node.FILTER_AT_BOOT)
            c.run(["systemctl", "daemon-reload"])
            c.run(["systemctl", "start", "filter-at-boot.service"])
        times = node.boot(c)
        return node.late(times, programmer_changes(c))


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    needs_root()
    runs = 1 if args.quick else args.runs
    with tempfile.TemporaryDirectory(prefix="fwgate-debs-") as dist:
        deb = debs.build_deb(Path(dist), f"{debs.upstream_version()}-1")
        result = {"runs": runs, "settle_s": node.SETTLE}
        for kind in ("plain", "filter-table-at-boot"):
            late = [one(deb, kind) * 1000 for _ in range(runs)]
            result[kind] = {"median_ms": round(median(late), 1),
                            "p95_ms": round(percentile(late, 0.95), 1),
                            "max_ms": round(max(late), 1), "runs_ms": [round(x, 1) for x in late]}
            print(kind, result[kind], flush=True)
    save(args, "k3s_start", result, [AFTER])
    return 0


if __name__ == "__main__":
    sys.exit(main())
