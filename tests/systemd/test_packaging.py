"""The .deb on a clean Debian 12 node: install, upgrade, remove, purge, and the
packaged fwgate gating a k3s stand-in (see packaging/README.md).

Each test boots a fresh container (--private-network: no network, so every
dependency must already be in the rootfs) with the packages (debs.py) bound
read-only, and installs with apt-get as an operator would.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from container import Container, show
from debs import apt, exists, package_version, unusr

pytestmark = pytest.mark.systemd

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "packaging" / "deb" / "build"
UNITS = "/usr/lib/systemd/system"
GUARD_WANTS = "/etc/systemd/system/multi-user.target.wants/fwgate-guard.service"
DROP_INS = [f"{UNITS}/k3s.service.d/10-fwgate.conf", f"{UNITS}/k3s-agent.service.d/10-fwgate.conf"]
WANTS = ["/etc/systemd/system/k3s.service.wants/fwgate.service",
         "/etc/systemd/system/k3s-agent.service.wants/fwgate.service"]

# A k3s that is already on the node, like the installer's unit in /etc.
K3S_STANDIN = """\
[Unit]
Description=k3s stand-in (fwgate packaging tests)

[Service]
ExecStart=/bin/sleep infinity
"""
# A gate that passes in the container: lo is up, the watched table never changes.
QUICK_CONFIG = """\
# edited by the operator
settle: 200ms
timeout: 30s
watch:
  - ip fwgate-test
stages:
  - name: loopback
    link: lo
"""
# What the purge test compares before install and after purge.
SNAPSHOT = ["find", "/etc", "/opt", "/usr", "/var/lib/systemd", "-xdev",
            "-printf", "%p %y %l\n"]


@pytest.fixture
def node(container_factory, debs) -> Container:
    """A clean node with the packages bound in and a k3s unit already there,
    but without the checkout: the package must be self-contained."""
    c = container_factory(binds_ro=[str(debs["X"].parent)])
    c.write_file("/etc/systemd/system/k3s.service", K3S_STANDIN)
    c.run(["systemctl", "daemon-reload"])
    return c


# --- the package itself ------------------------------------------------------

def test_lintian_no_errors(debs, tmp_path):
    if not shutil.which("lintian"):
        pytest.skip("lintian missing (apt-get install lintian)")
    r = subprocess.run(["lintian", "--fail-on", "error", str(debs["X"])],
                       env=dict(os.environ, TMPDIR=str(tmp_path)),  # it leaves files there
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not re.search(r"^E: ", r.stdout, re.M), r.stdout


def test_install_layout_enabled_not_started(node: Container, debs):
    deb = debs["X"]
    apt(node, "install", str(deb))

    # /usr/bin/fwgate runs the package's own virtualenv, at the package's version.
    assert node.run(["readlink", "-f", "/usr/bin/fwgate"]).stdout.strip() == "/opt/fwgate/bin/fwgate"
    version = node.run(["fwgate", "--version"]).stdout.strip()
    assert version == f"fwgate {package_version(deb).rsplit('-', 1)[0]}"
    out = node.run(["fwgate", "validate-config", "/etc/fwgate.yaml"]).stdout
    assert "/etc/fwgate.yaml: ok" in out, out
    # The shipped config is the annotated default, and a conffile.
    assert node.read_file("/etc/fwgate.yaml") == (ROOT / "fwgate" / "default.yaml").read_text()
    conffiles = node.run(["dpkg-query", "-W", "-f=${Conffiles}", "fwgate"]).stdout
    assert "/etc/fwgate.yaml" in conffiles, conffiles

    files = node.run(["dpkg", "-L", "fwgate"]).stdout.split()
    for path in [f"{UNITS}/fwgate.service", f"{UNITS}/fwgate-guard.service", *DROP_INS,
                 "/usr/bin/fwgate",
                 "/usr/share/doc/fwgate/copyright", "/usr/share/doc/fwgate/changelog.Debian.gz",
                 "/usr/share/doc/fwgate/examples/fwgate.yaml", "/usr/share/man/man1/fwgate.1.gz"]:
        assert path in files, path
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    # ... but the postinst byte-compiled it: the sandboxed unit could not.
    assert exists(node, "/opt/fwgate/lib/python3.11/site-packages/fwgate/__pycache__")

    cat = node.run(["systemctl", "cat", "fwgate.service"]).stdout
    assert unusr(cat.split("\n", 1)[0]) == unusr(f"# {UNITS}/fwgate.service"), cat
    assert "ExecStart=/usr/bin/fwgate run" in cat, cat
    # Loaded without a manual daemon-reload: the existing k3s now requires fwgate.
    k3s = show(node, "k3s.service", "Requires", "After", "DropInPaths")
    assert "fwgate.service" in k3s["Requires"].split(), k3s
    assert "fwgate.service" in k3s["After"].split(), k3s
    assert unusr(k3s["DropInPaths"]) == unusr(DROP_INS[0]), k3s
    # The gate: enabled for k3s and k3s-agent, not started (it gates k3s's next start).
    assert exists(node, *WANTS) == WANTS
    fw = show(node, "fwgate.service", "UnitFileState", "ActiveState")
    assert fw == {"UnitFileState": "enabled", "ActiveState": "inactive"}, fw
    assert show(node, "k3s.service", "ActiveState")["ActiveState"] == "inactive"
    # The guard: enabled and guarding at once; k3s wants nothing of it.
    assert exists(node, GUARD_WANTS) == [GUARD_WANTS]
    guard = show(node, "fwgate-guard.service", "UnitFileState", "ActiveState", "SubState")
    assert guard == {"UnitFileState": "enabled", "ActiveState": "active",
                     "SubState": "running"}, guard
    k3s = show(node, "k3s.service", "Requires", "Wants")
    assert "fwgate-guard" not in k3s["Requires"] + k3s["Wants"], k3s
    assert node.failed_units() == ""


def test_upgrade_keeps_edited_config_and_running_units(node: Container, debs):
    apt(node, "install", str(debs["X"]))
    node.write_file("/etc/fwgate.yaml", QUICK_CONFIG)
    node.run(["systemctl", "start", "k3s.service"], timeout=60)  # runs the gate first
    ids = {u: show(node, u, "InvocationID", "ActiveState") for u in ("fwgate", "k3s")}
    assert ids["fwgate"]["ActiveState"] == ids["k3s"]["ActiveState"] == "active", ids
    guard = show(node, "fwgate-guard", "InvocationID", "MainPID")

    apt(node, "install", str(debs["X+1"]))

    new = package_version(debs["X+1"])
    assert node.run(["dpkg-query", "-W", "-f=${Version}", "fwgate"]).stdout == new
    assert node.run(["fwgate", "--version"]).stdout.strip() == f"fwgate {new.rsplit('-', 1)[0]}"
    # dpkg's conffile handling: the operator's edit survives.
    assert node.read_file("/etc/fwgate.yaml") == QUICK_CONFIG
    assert not exists(node, "/etc/fwgate.yaml.dpkg-dist", "/etc/fwgate.yaml.dpkg-new")
    # No restart of the gate: restarting it would restart k3s (Requires=).
    assert {u: show(node, u, "InvocationID", "ActiveState") for u in ("fwgate", "k3s")} == ids
    assert show(node, "fwgate.service", "UnitFileState")["UnitFileState"] == "enabled"
    # The guard runs the new version: restarted, and nothing else was.
    again = show(node, "fwgate-guard", "InvocationID", "MainPID", "ActiveState")
    assert again["ActiveState"] == "active" and again["InvocationID"] != guard["InvocationID"]
    running = json.loads(node.run(["fwgate", "status", "--json"]).stdout)["guard"]
    assert running["version"] == new.rsplit("-", 1)[0] and running["running"], running
    assert exists(node, "/opt/fwgate/lib/python3.11/site-packages/fwgate/__pycache__")


def test_remove_leaves_k3s_running_and_startable(node: Container, debs):
    apt(node, "install", str(debs["X"]))
    node.write_file("/etc/fwgate.yaml", QUICK_CONFIG)
    node.run(["systemctl", "start", "k3s.service"], timeout=60)
    k3s = show(node, "k3s", "InvocationID", "ActiveState")

    apt(node, "remove", "fwgate")

    # The gate not stopped: stopping it would have stopped k3s with it. The guard
    # stopped: nothing depends on it.
    assert show(node, "k3s", "InvocationID", "ActiveState") == k3s
    assert show(node, "fwgate-guard", "ActiveState")["ActiveState"] in ("inactive", "")
    assert not exists(node, f"{UNITS}/fwgate.service", f"{UNITS}/fwgate-guard.service", *DROP_INS,
                      "/opt/fwgate", "/usr/bin/fwgate")
    assert exists(node, "/opt")  # base-files' directory, which dpkg thought was ours
    # systemd was told: k3s no longer requires fwgate, and (re)starts without it.
    props = show(node, "k3s.service", "Requires", "After", "DropInPaths")
    assert "fwgate" not in props["Requires"] + props["After"] + props["DropInPaths"], props
    node.run(["systemctl", "restart", "k3s.service"], timeout=30)
    assert show(node, "k3s", "ActiveState")["ActiveState"] == "active"
    # Removed, not purged: the operator's config stays.
    assert node.read_file("/etc/fwgate.yaml") == QUICK_CONFIG


def test_purge_leaves_nothing_behind(node: Container, debs):
    before = set(node.run(SNAPSHOT).stdout.splitlines())
    apt(node, "install", str(debs["X"]))
    files = [f for f in node.run(["dpkg", "-L", "fwgate"]).stdout.split() if f != "/."]
    shared = set(exists(node, *files)) & {line.split()[0] for line in before}
    assert exists(node, *WANTS, GUARD_WANTS) == [*WANTS, GUARD_WANTS]

    apt(node, "purge", "fwgate")

    # Every path dpkg listed is gone, but for directories other packages own.
    assert set(exists(node, *files)) == shared
    assert not exists(node, "/etc/fwgate.yaml", "/opt/fwgate", *DROP_INS, *WANTS, GUARD_WANTS)
    # And nothing else appeared or vanished: enable links, helper state, caches.
    after = set(node.run(SNAPSHOT).stdout.splitlines())
    assert after == before, {"left": sorted(after - before), "lost": sorted(before - after)}
    props = show(node, "k3s.service", "Requires", "DropInPaths")
    assert "fwgate" not in props["Requires"] + props["DropInPaths"], props
    node.run(["systemctl", "start", "k3s.service"], timeout=30)


# --- the packaged fwgate doing its job ----------------------------------------

def test_packaged_fwgate_gates_k3s_standin(container_factory, debs):
    """The e2e test's scenario with the package in place of the checkout."""
    e2e = pytest.importorskip("test_e2e", reason="tests/systemd/test_e2e.py's helpers")
    # The default read-only binds (the checkout: the stand-ins run its programmer)
    # plus the packages.
    c = container_factory(binds=[str(debs["X"].parent)])
    apt(c, "install", str(debs["X"]))
    e2e.install_standins(c)
    c.run(["systemctl", "daemon-reload"])
    e2e.write_config(c, e2e.CONFIG.format(policy="repair"))

    # Fails if k3s's stand-in met Netbird's rule unrepaired (kube-router crash).
    c.run(["systemctl", "start", "k3s.service"], timeout=90)
    ready = e2e.mono(c, "fwgate", "ActiveEnterTimestampMonotonic")
    k3s_started = e2e.mono(c, "k3s", "ExecMainStartTimestampMonotonic")
    last_change = e2e.wait_changes(c, e2e.BURSTS)[-1][0]
    why = e2e.logs(c)
    assert last_change + e2e.SETTLE - e2e.SLACK <= ready < k3s_started, why
    kinds = [e["FWGATE_EVENT"] for e in e2e.events(c)]
    assert kinds[-1] == "ready", kinds
    # Repaired at once, by the gate or by the guard the package started: whichever read
    # Netbird's event first (both try; the kernel lets one batch through).
    guard = [e["FWGATE_EVENT"] for e in e2e.journal(c, "fwgate-guard.service")
             if "FWGATE_EVENT" in e]
    assert "repaired" in kinds + guard, (kinds, guard)
    # It was the package's fwgate, inside its sandbox, that did it.
    assert "path=/usr/bin/fwgate " in e2e.show(c, "fwgate", "ExecStart")["ExecStart"]
    assert c.run(["readlink", "-f", "/usr/bin/fwgate"]).stdout.strip() == "/opt/fwgate/bin/fwgate"
    journal = c.run(["journalctl", "-u", "fwgate", "-o", "cat", "--no-pager"]).stdout
    assert "Traceback" not in journal, journal
