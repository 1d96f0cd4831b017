"""The RPM, built here with Debian's rpmbuild (packaging/rpm/build) in a network
namespace of its own, so %build and %install cannot reach any network; then
read back with rpm, judged by rpmlint, and installed and erased with rpm on a
Debian 12 node running k3s under a real systemd (see packaging/README.md)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "packaging" / "rpm" / "build"
RPMLINTRC = ROOT / "packaging" / "rpm" / "fwgate.rpmlintrc"
SITE = "/usr/lib/python3/dist-packages"  # Debian's layout, where this build puts it

pytestmark = pytest.mark.skipif(not shutil.which("rpmbuild") or os.geteuid() != 0,
                                reason="needs root (unshare -n) and rpmbuild (apt-get install rpm)")


def rpmq(rpm: Path, *args: str) -> str:
    return subprocess.run(["rpm", "-qp", *args, str(rpm)], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture(scope="module")
def rpm(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("rpm")
    r = subprocess.run(["unshare", "--net", str(BUILD)], env=dict(os.environ, FWGATE_DIST=str(dist)),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rpms = sorted(dist.glob("*.rpm"))
    assert [p.name for p in rpms] == [Path(r.stdout.split()[-1]).name], r.stdout
    return rpms[0]


def test_header_noarch_url_license_requires(rpm):
    info = dict(line.split("=", 1) for line in rpmq(
        rpm, "--qf", "arch=%{ARCH}\nurl=%{URL}\nlicense=%{LICENSE}\nversion=%{VERSION}\n").splitlines())
    assert info["arch"] == "noarch", info
    assert info["url"].startswith("https://"), info
    assert info["license"] == "Apache-2.0", info
    requires = set(rpmq(rpm, "--requires").splitlines())
    for dep in ("python3 >= 3.11", "python3-pyroute2 >= 0.7.2", "python3-pystemd >= 0.11",
                "python3-sdnotify >= 0.3.1", "python3-pyyaml >= 6.0", "systemd"):
        assert dep in requires, requires
    assert "iptables-nft" in rpmq(rpm, "--recommends").split()


def test_files_license_config_units(rpm):
    flags = dict(line.rsplit(" ", 1) for line in rpmq(
        rpm, "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]").splitlines())
    assert flags["/usr/share/licenses/fwgate/LICENSE"] == "l"
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert flags["/etc/fwgate.yaml"] == "cn"  # %config(noreplace)
    for path in ("/usr/bin/fwgate", f"{SITE}/fwgate/cli.py",
                 "/usr/lib/systemd/system/fwgate.service",
                 "/usr/lib/systemd/system/fwgate-guard.service",
                 "/usr/lib/systemd/system/k3s.service.d/10-fwgate.conf",
                 "/usr/lib/systemd/system/k3s-agent.service.d/10-fwgate.conf",
                 "/usr/lib/systemd/system-preset/50-fwgate.preset",
                 "/usr/share/fwgate/fwgate-alerts.yml",
                 "/usr/share/bash-completion/completions/fwgate",
                 "/usr/share/zsh/site-functions/_fwgate",
                 "/usr/share/man/man1/fwgate.1.gz",
                 "/usr/share/doc/fwgate/systemd.md"):  # fwgate.service's Documentation=
        assert path in flags, path
    # No trace of the build tree (installer's direct_url.json).
    assert not [f for f in flags if f.endswith("direct_url.json")]


def test_scriptlets_expanded_and_shaped_for_a_running_node(rpm):
    scripts = rpmq(rpm, "--scripts")
    assert "%" not in re.sub(r"%%|%s", "", scripts.replace("%systemd_preun, which", "")), scripts
    parts = dict(re.findall(r"^(\w+) scriptlet \(using /bin/sh\):\n(.*?)(?=^\w+ scriptlet|\Z)",
                            scripts, re.S | re.M))
    assert set(parts) == {"postinstall", "preuninstall", "postuninstall"}, scripts
    for name, body in parts.items():  # each one a valid shell script
        r = subprocess.run(["sh", "-n"], input=body, capture_output=True, text=True)
        assert r.returncode == 0, (name, r.stderr)
    # Enabled through the preset; the guard starts; the gate is never stopped
    # or restarted on a node running k3s (k3s Requires= it).
    assert "preset fwgate.service fwgate-guard.service" in parts["postinstall"]
    assert "disable --now fwgate-guard.service" in parts["preuninstall"]
    assert not re.search(r"(disable --now|stop|restart)[^\n]*\bfwgate\.service", parts["preuninstall"])
    assert "try-restart fwgate-guard.service" in parts["postuninstall"]
    assert not re.search(r"restart[^\n]*\bfwgate\.service", parts["postuninstall"])
    # Erase: reload first, then the ghost, the runtime state and the metrics.
    erase = parts["postuninstall"]
    assert erase.index("daemon-reload") < erase.index("stop fwgate.service") < erase.index(
        "rm -rf /run/fwgate")


def test_node_exporter_arriving_later_restarts_the_guard(rpm):
    """The RPM's side of metrics.textfile: auto (the .deb has a dpkg trigger, tested
    on a node in test_packaging.py): a file trigger on node_exporter's directory."""
    out = rpmq(rpm, "--filetriggers")
    assert "filetriggerin scriptlet (using /bin/sh) -- /var/lib/prometheus/node-exporter" in out
    assert "try-restart fwgate-guard.service" in out and "fwgate.service" not in \
        out.replace("fwgate-guard.service", "")
    r = subprocess.run(["sh", "-n"], input=out.split("\n", 1)[1], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not shutil.which("rpmlint"), reason="rpmlint missing (apt-get install rpmlint)")
def test_rpmlint_clean_with_every_filter_explained(rpm, tmp_path):
    r = subprocess.run(["rpmlint", "-r", str(RPMLINTRC), str(rpm)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and " 0 errors, 0 warnings" in r.stdout, r.stdout + r.stderr
    # Every filter has its reason above it, and none is unused (rpmlint says so).
    lines = RPMLINTRC.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("addFilter"):
            assert lines[i - 1].startswith(("#", "addFilter")), line
    # The spec alone (away from the rpmlintrc beside it): no error.
    shutil.copy(ROOT / "packaging" / "rpm" / "fwgate.spec", tmp_path)
    r = subprocess.run(["rpmlint", str(tmp_path / "fwgate.spec")], capture_output=True, text=True)
    assert " 0 errors" in r.stdout, r.stdout


# --- the RPM's scriptlets on a running node --------------------------------------

K3S_STANDIN = "[Service]\nExecStart=/bin/sleep infinity\n"
QUICK_CONFIG = "settle: 200ms\ntimeout: 30s\nwatch:\n  - ip fwgate-test\nstages:\n  - name: lo\n    link: lo\n"
# What the node needs beside the RPM: rpm itself and fwgate's modules (Debian's here;
# the rpm database does not know them, hence --nodeps).
NODE_PACKAGES = ("rpm", "python3-pyroute2", "python3-pystemd", "python3-sdnotify", "python3-yaml")


@pytest.mark.systemd
def test_scriptlets_on_a_running_node_never_touch_k3s(container_factory, rpm):
    """rpm -i and rpm -e on a Debian 12 node with k3s running. An RPM system's systemd
    package reloads units after every transaction (its %transfiletriggerin and
    %transfiletriggerpostun); Debian's rpm has no such trigger, so the test does that
    reload where the trigger would run."""
    from fwgate_testing.node import archive as _archive
    from fwgate_testing.node.container import show
    from fwgate_testing.node.debs import apt, use_archive
    repo = _archive.build("bookworm", [], extra=NODE_PACKAGES, recommends=False)
    c = container_factory(binds_ro=[str(rpm.parent), f"{repo}:{_archive.MOUNT}"])
    use_archive(c)
    apt(c, "install", "--no-install-recommends", *NODE_PACKAGES)
    c.write_file("/etc/systemd/system/k3s.service", K3S_STANDIN)
    c.run(["systemctl", "daemon-reload"])

    c.run(["rpm", "-i", "--nodeps", str(rpm)], timeout=120)
    c.run(["systemctl", "daemon-reload"])  # the trigger
    # %post: the preset enabled both; the guard guards; the gate waits for k3s's start.
    assert show(c, "fwgate.service", "UnitFileState")["UnitFileState"] == "enabled"
    guard = show(c, "fwgate-guard.service", "UnitFileState", "ActiveState")
    assert guard == {"UnitFileState": "enabled", "ActiveState": "active"}, guard
    assert show(c, "fwgate.service", "ActiveState")["ActiveState"] == "inactive"
    assert "fwgate.service" in show(c, "k3s.service", "Requires")["Requires"].split()
    c.write_file("/etc/fwgate.yaml", QUICK_CONFIG)
    c.run(["systemctl", "start", "k3s.service"], timeout=60)  # gated
    k3s = show(c, "k3s.service", "InvocationID", "ActiveState")
    assert k3s["ActiveState"] == "active" and c.failed_units() == ""

    c.run(["rpm", "-e", "fwgate"], timeout=120)

    # k3s untouched; the guard stopped and disabled; the gate's ghost gone without
    # stopping k3s; no runtime state, enable link or unit file left.
    assert show(c, "k3s.service", "InvocationID", "ActiveState") == k3s
    units = c.run(["systemctl", "list-units", "--plain", "--no-legend",
                   "--state=active,failed", "fwgate*"]).stdout.strip()
    assert units == "", units
    left = c.run(["sh", "-c", "ls -d /run/fwgate /var/lib/fwgate /etc/systemd/system/*.wants/fwgate* "
                  "/usr/lib/systemd/system/fwgate* 2>/dev/null || true"]).stdout.strip()
    assert left == "", left
    c.run(["systemctl", "daemon-reload"])  # the trigger
    assert "fwgate" not in show(c, "k3s.service", "Requires")["Requires"]
    c.run(["systemctl", "restart", "k3s.service"], timeout=30)
