"""The e2e tests' node: the checkout's fwgate installed as a package would install it, the
Netbird and k3s stand-ins (tests/systemd/e2e/), a config; and what the tests read back."""
from __future__ import annotations

import json
from pathlib import Path

from .container import Container, journal, mono, programmer_changes, show, wait_for  # noqa: F401

ROOT = Path(__file__).resolve().parents[3]
E2E = ROOT / "tests" / "systemd" / "e2e"
UNITS = "/usr/lib/systemd/system"
SETTLE = 2.0        # > the programmer's 1 s pause, or the gate could settle between bursts
BURSTS = 4          # fwgate.programmer.NetbirdProgrammer.BURSTS
SLACK = 0.1         # the programmer stamps a commit after it returns: a bit late under load
CONFIG = f"""\
settle: {SETTLE:g}s
timeout: 1min
compat:
  on_incompatible: {{policy}}
"""
KUBE_ROUTER_C = ["iptables", "-t", "filter", "-C", "FORWARD", "-m", "comment", "--comment",
                 "kube-router netpol - TEMCG2JMHZYE7H7T", "-j", "KUBE-ROUTER-FORWARD"]


# --- the steps -------------------------------------------------------------------

def install(c: Container, policy: str = "warn") -> None:
    """fwgate as packaged, the stand-ins, a fake k3s iptables bundle, a config."""
    sh = f"""set -e
        install -m 0644 {ROOT}/systemd/fwgate.service {ROOT}/systemd/fwgate-guard.service {UNITS}/
        for u in k3s k3s-agent; do
            install -D -m 0644 {ROOT}/systemd/$u.service.d/10-fwgate.conf \\
                {UNITS}/$u.service.d/10-fwgate.conf
        done
        ln -sf {ROOT}/.venv/bin/fwgate /usr/bin/fwgate
        # The checkout stands in for /opt/fwgate: let the sandboxed unit see it even
        # where PrivateTmp= would hide it (a checkout under /tmp).
        mkdir -p /etc/systemd/system/fwgate.service.d
        printf '[Service]\nBindReadOnlyPaths={ROOT}\n' \
            > /etc/systemd/system/fwgate.service.d/10-test-checkout.conf
        # k3s's bundled iptables, found by compat.iptables: auto. The host has Debian's
        # too, which k3s would run first; --prefer-bundled-bin makes it the bundled one.
        aux=/var/lib/rancher/k3s/data/e2e/bin/aux
        mkdir -p $aux /etc/rancher/k3s
        for t in iptables iptables-save ip6tables ip6tables-save; do
            install -m 0755 {E2E}/k3s-iptables.sh $aux/$t
        done
        echo 'prefer-bundled-bin: true' > /etc/rancher/k3s/config.yaml
    """
    c.run(["sh", "-c", sh])
    install_standins(c)
    # The operator's part, as docs/systemd.md says it.
    write_config(c, CONFIG.format(policy=policy))
    c.run(["systemctl", "enable", "fwgate.service"])
    c.run(["systemctl", "daemon-reload"])


def install_standins(c: Container) -> None:
    """Netbird's and k3s's stand-in units, which run the checkout's programmer and script."""
    for unit in ("netbird.service", "k3s.service"):
        text = (E2E / unit).read_text().replace("@ROOT@", str(ROOT))
        c.write_file(f"/etc/systemd/system/{unit}", text, mode=0o644)


def without_guard(c: Container) -> None:
    """Only the gate: k3s Wants= the guard, which would repair what these tests watch the
    gate alone meet (tests/systemd/test_lifecycle.py has the guard)."""
    c.run(["systemctl", "mask", "fwgate-guard.service"])


def write_config(c: Container, text: str) -> None:
    c.write_file("/etc/fwgate.yaml", text, mode=0o644)  # root-owned: fwgate insists


def events(c: Container) -> list[dict]:
    """fwgate's structured journal entries, oldest first."""
    return [e for e in journal(c, "fwgate.service") if "FWGATE_EVENT" in e]


def wait_changes(c: Container, n: int) -> list[tuple[float, str]]:
    return wait_for(f"{n} programmer changes in the journal",
                    lambda: (lambda got: got if len(got) >= n else None)(programmer_changes(c)))


def logs(c: Container) -> str:
    """For assertion messages: what the three units said."""
    return c.run(["journalctl", "-u", "netbird", "-u", "fwgate", "-u", "k3s", "-o",
                  "short-monotonic", "--no-pager"], check=False).stdout[-6000:]


def status(c: Container) -> dict:
    """The gate's part of `fwgate status --json`: what it left in /run/fwgate
    (RuntimeDirectory=) and what fwgate makes of it."""
    return json.loads(c.run(["fwgate", "status", "--json"], check=False).stdout)["gate"]


def said(c: Container, unit: str = "fwgate.service") -> str:
    return "\n".join(str(e.get("MESSAGE")) for e in journal(c, unit))


def start_fwgate_alone(c: Container) -> None:
    """Start fwgate without pulling netbird.service in (its Wants=): the unit
    stage then waits on a really inactive netbird."""
    c.run(["systemctl", "start", "--no-block", "--job-mode=ignore-requirements",
           "fwgate.service"])
    try:
        wait_for("fwgate to wait for netbird.service",
                 lambda: "waiting for netbird.service to become active"
                 in show(c, "fwgate", "StatusText")["StatusText"])
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs(c)}") from None
