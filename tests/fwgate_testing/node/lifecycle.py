"""The lifecycle tests' node: the package installed on a plain k3s node (k3s's bundled
iptables only), the Netbird stand-in (a firewall re-init per `systemctl reload`) and the
k3s stand-in (kube-router's iptables calls every 2 s, dying on a fatal one)."""
from __future__ import annotations

from pathlib import Path

from .container import Container, mono
from .debs import apt, use_archive

ROOT = Path(__file__).resolve().parents[3]
SETTLE = 5.0                       # the shipped config's
AUX = "/var/lib/rancher/k3s/data/e2e/bin/aux"
NETBIRD_UNIT = """\
[Unit]
Description=Netbird stand-in (fwgate lifecycle tests)

[Service]
Type=simple
SyslogIdentifier=netbird
# No wireguard or dummy module in this kernel: a veth pair plays wt0.
ExecStartPre=/bin/sh -c 'ip link show wt0 >/dev/null 2>&1 || ip link add wt0 type veth peer name wt0p; ip link set wt0p up && ip link set wt0 up'
# Prints "CLOCK_MONOTONIC what" per committed change. SIGHUP: a firewall re-init.
# As Netbird: through the iptables on its PATH when there is one, natively without.
ExecStart=/usr/bin/python3 -m fwgate.programmer --pause 1 --serve --iptables-from-path
ExecReload=/bin/sh -c 'kill -HUP $$MAINPID'
ExecStopPost=/usr/bin/python3 -m fwgate.programmer --flush
ExecStopPost=-/sbin/ip link del wt0
"""
K3S_UNIT = f"""\
[Unit]
Description=k3s stand-in: kube-router's iptables calls (fwgate lifecycle tests)

[Service]
Type=notify
NotifyAccess=all
SyslogIdentifier=k3s
# k3s's PATH: its data bin, the host's, then bin/aux with its bundled iptables.
Environment=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:{AUX}
Environment=SYNC=2
ExecStart=/bin/sh /usr/local/lib/fwgate-tests/kube-router-standin.sh
Restart=always
RestartSec=5s
"""
# Something on the node that made iptables' filter table at boot, with k3s's iptables.
FILTER_AT_BOOT = f"""\
[Unit]
Description=iptables' filter table at boot (fwgate lifecycle tests)
Before=netbird.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for c in INPUT FORWARD OUTPUT; do {AUX}/iptables -P $$c ACCEPT; done'
"""


# --- the node ----------------------------------------------------------------------

def plain_node(c: Container, deb: Path, netbird: bool = True,
               host_iptables: bool = False) -> None:
    """The package, a plain k3s node's iptables (bundled only, unless host_iptables:
    Debian's, as the package's Recommends: installs it), the stand-ins. The container
    binds debs.node_binds(): the package's dependencies come from there."""
    use_archive(c)
    apt(c, "install", str(deb))
    # k3s's bundled iptables is one static multi-call binary; here Debian's, with its
    # extensions copied beside it (they belong to the iptables package removed below).
    script = f"""set -e
        mkdir -p {AUX}
        cp /usr/sbin/xtables-nft-multi {AUX}/
        cp -a /usr/lib/x86_64-linux-gnu/xtables {AUX}/../xtables
        for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
            printf '#!/bin/sh\\nXTABLES_LIBDIR={AUX}/../xtables exec {AUX}/xtables-nft-multi %s "$@"\\n' \\
                $t > {AUX}/$t
            chmod 0755 {AUX}/$t
        done
        mkdir -p /usr/local/lib/fwgate-tests
    """
    if not host_iptables:  # k3s brings its own iptables: the host has none (Netbird finds none)
        script += "dpkg --remove --force-depends iptables >/dev/null 2>&1\n"
    c.run(["sh", "-c", script])
    c.write_file("/usr/local/lib/fwgate-tests/kube-router-standin.sh",
                 (ROOT / "tests/systemd/e2e/kube-router-standin.sh").read_text())
    if netbird:
        c.write_file("/etc/systemd/system/netbird.service", NETBIRD_UNIT)
    c.write_file("/etc/systemd/system/k3s.service", K3S_UNIT)
    c.run(["systemctl", "daemon-reload"])
    found = c.run(["sh", "-c", "command -v iptables"], check=False).returncode == 0
    assert found == host_iptables


def boot(c: Container) -> dict:
    """What a boot does for these units: start k3s (it pulls in the gate, the gate
    Netbird). Returns k3s's and the gate's timestamps."""
    c.run(["systemctl", "start", "k3s.service"], timeout=120)
    return {"k3s": mono(c, "k3s", "ExecMainStartTimestampMonotonic"),
            "ready": mono(c, "fwgate", "ActiveEnterTimestampMonotonic")}


def late(times: dict, changes: list[tuple[float, str]]) -> float:
    """How late k3s started: its start - (Netbird's last change + settle)."""
    return times["k3s"] - (changes[-1][0] + SETTLE)
