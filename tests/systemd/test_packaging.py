"""The .deb on clean Debian 12 and Debian 13 nodes: install, upgrade, remove,
purge, and the packaged fwgate gating a k3s stand-in (see packaging/README.md).

One package (Architecture: all, built here on Debian 12) for both releases. Each
node test boots a fresh container of that release (--private-network: no
network) with the packages (debs.py) and a local apt archive of what they depend
on (archive.py) bound read-only, and installs with apt-get as an operator would.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from fwgate_testing.node import archive as _archive
from fwgate_testing.node import e2e
from fwgate_testing.node import rootfs as _rootfs
from fwgate_testing.node.container import Container, project_binds, show, wait_for
from fwgate_testing.node.debs import apt, exists, package_version, unusr, use_archive

pytestmark = pytest.mark.systemd

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "packaging" / "deb" / "build"
UNITS = "/usr/lib/systemd/system"
GUARD_WANTS = "/etc/systemd/system/multi-user.target.wants/fwgate-guard.service"
SITE = "/usr/lib/python3/dist-packages"
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
SNAPSHOT = ["find", "/etc", "/opt", "/usr", "/var/lib/systemd", "/var/lib/prometheus",
            "-xdev", "-printf", "%p %y %l\n"]


@pytest.fixture(params=_rootfs.SUITES)
def suite(request) -> str:
    return request.param


def boot(container_factory, debs, archives, suite: str, binds_ro=()) -> Container:
    """A clean node of `suite` whose only apt source is the local archive."""
    c = container_factory(rootfs=_rootfs.build(suite=suite),
                          binds_ro=[*binds_ro, *{str(d.parent) for d in debs.values()},
                                    f"{archives[suite]}:{_archive.MOUNT}"])
    use_archive(c)
    return c


@pytest.fixture
def node(container_factory, debs, archives, suite) -> Container:
    """A clean node with the packages bound in and a k3s unit already there,
    but without the checkout: the package must be self-contained."""
    c = boot(container_factory, debs, archives, suite)
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


def test_lintian_no_errors_on_trixie(container_factory, debs):
    """Debian 13's lintian (2.122) too, in a trixie container: its rules are newer."""
    repo = _archive.build("trixie", [], extra=("lintian",), recommends=False)
    c = container_factory(rootfs=_rootfs.build(suite="trixie"),
                          binds_ro=[str(debs["X"].parent), f"{repo}:{_archive.MOUNT}"])
    use_archive(c)
    apt(c, "install", "--no-install-recommends", "lintian")
    r = c.run(["lintian", "--fail-on", "error", str(debs["X"])], check=False, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not re.search(r"^E: ", r.stdout, re.M), r.stdout


def test_architecture_all_nothing_compiled(debs):
    """One package for every architecture: no ELF file, no bytecode, no .so."""
    deb = debs["X"]
    fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Architecture", "Depends",
                             "Recommends"], capture_output=True, text=True, check=True).stdout
    assert "Architecture: all" in fields, fields
    # Debian 12's versions are the floor, as in pyproject.toml.
    for dep in ("python3-pyroute2 (>= 0.7.2)", "python3-pystemd (>= 0.11)",
                "python3-sdnotify (>= 0.3.1)", "python3-yaml (>= 6.0)"):
        assert dep in fields, fields
    assert "Recommends: iptables" in fields, fields
    with tempfile.TemporaryDirectory() as tree:
        subprocess.run(["dpkg-deb", "-x", str(deb), tree], check=True)
        compiled = [str(f) for f in Path(tree).rglob("*") if f.is_file() and not f.is_symlink()
                    and (f.suffix in (".pyc", ".so") or f.read_bytes()[:4] == b"\x7fELF")]
    assert not compiled, compiled


def test_two_builds_are_byte_identical(debs):
    """The same version built twice, in different temp dirs, a while apart."""
    first, again = debs["X"].read_bytes(), debs["X again"].read_bytes()
    assert debs["X"].name == debs["X again"].name
    if first != again:
        listing = [subprocess.run(["dpkg-deb", "-c", str(d)], capture_output=True,
                                  text=True).stdout for d in (debs["X"], debs["X again"])]
        diff = set(listing[0].splitlines()) ^ set(listing[1].splitlines())
        pytest.fail(f"the two builds differ; contents that differ: {sorted(diff)[:20]}")


def test_install_layout_enabled_not_started(node: Container, debs):
    deb = debs["X"]
    apt(node, "install", str(deb))

    # /usr/bin/fwgate runs the release's python3 on Debian's own modules.
    assert node.run(["head", "-1", "/usr/bin/fwgate"]).stdout.strip() == "#!/usr/bin/python3"
    origin = node.run(["python3", "-c", "import fwgate, pyroute2, pystemd, sdnotify, yaml; "
                       "print(fwgate.__file__, pyroute2.__file__, pystemd.__file__)"]).stdout
    assert origin.split() == [f"{SITE}/{m}/__init__.py" for m in ("fwgate", "pyroute2", "pystemd")]
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
                 "/usr/share/doc/fwgate/examples/fwgate.yaml", "/usr/share/man/man1/fwgate.1.gz",
                 "/usr/share/fwgate/fwgate-alerts.yml",
                 "/usr/share/bash-completion/completions/fwgate",
                 "/usr/share/zsh/vendor-completions/_fwgate"]:
        assert path in files, path
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    # ... but the postinst byte-compiled it (py3compile): the sandboxed unit could not.
    assert exists(node, f"{SITE}/fwgate/__pycache__")
    # Recommends: iptables, an nf_tables one (prevention: section 1b of the design).
    assert "nf_tables" in node.run(["iptables", "-V"]).stdout

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
    # The guard: enabled and guarding at once; k3s Wants it, never Requires it.
    assert exists(node, GUARD_WANTS) == [GUARD_WANTS]
    guard = show(node, "fwgate-guard.service", "UnitFileState", "ActiveState", "SubState")
    assert guard == {"UnitFileState": "enabled", "ActiveState": "active",
                     "SubState": "running"}, guard
    k3s = show(node, "k3s.service", "Requires", "Wants")
    assert "fwgate-guard" not in k3s["Requires"], k3s
    assert "fwgate-guard.service" in k3s["Wants"].split(), k3s
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
    assert exists(node, f"{SITE}/fwgate/__pycache__")


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
                      f"{SITE}/fwgate", "/usr/bin/fwgate")
    # No ghost: the gate's "active (exited)" unit went once k3s stopped requiring it.
    assert not ghosts(node)
    # systemd was told: k3s no longer requires fwgate, and (re)starts without it.
    props = show(node, "k3s.service", "Requires", "After", "DropInPaths")
    assert "fwgate" not in props["Requires"] + props["After"] + props["DropInPaths"], props
    node.run(["systemctl", "restart", "k3s.service"], timeout=30)
    assert show(node, "k3s", "ActiveState")["ActiveState"] == "active"
    # Removed, not purged: the operator's config stays.
    assert node.read_file("/etc/fwgate.yaml") == QUICK_CONFIG


def ghosts(c: Container) -> str:
    """fwgate units systemd still holds active or failed, and their PrivateTmp=
    directories. (An inactive, not-found unit is only a name: k3s's .wants/
    link keeps it listed until purge.)"""
    units = c.run(["systemctl", "list-units", "--plain", "--no-legend",
                   "--state=active,activating,deactivating,reloading,failed",
                   "fwgate*"]).stdout.strip()
    tmp = c.run(["sh", "-c", "ls -d /tmp/systemd-private-*-fwgate* "
                 "/var/tmp/systemd-private-*-fwgate* 2>/dev/null || true"]).stdout.strip()
    return "\n".join(filter(None, [units, tmp]))


def installed(c: Container) -> set[str]:
    return set(c.run(["dpkg-query", "-W", "-f=${Package}\\n"]).stdout.split())


def test_purge_leaves_nothing_behind(node: Container, debs):
    before = set(node.run(SNAPSHOT, check=False).stdout.splitlines())
    packages = installed(node)
    apt(node, "install", str(debs["X"]))
    files = [f for f in node.run(["dpkg", "-L", "fwgate"]).stdout.split() if f != "/."]
    shared = set(exists(node, *files)) & {line.split()[0] for line in before}
    assert exists(node, *WANTS, GUARD_WANTS) == [*WANTS, GUARD_WANTS]
    # A node that ran: the gate passed (active, exited) and k3s runs; both left
    # state in /run/fwgate and private /tmp directories, the guard its last good
    # config in /var/lib/fwgate.
    node.write_file("/etc/fwgate.yaml", QUICK_CONFIG)
    node.run(["systemctl", "start", "k3s.service"], timeout=60)
    k3s = show(node, "k3s", "InvocationID", "ActiveState")
    assert exists(node, "/run/fwgate", "/var/lib/fwgate") == ["/run/fwgate", "/var/lib/fwgate"]
    assert ghosts(node)

    # --autoremove: the python3-* modules fwgate pulled in go too.
    apt(node, "purge", "--autoremove", "fwgate")

    # Every path dpkg listed is gone, but for directories other packages own.
    assert set(exists(node, *files)) == shared
    assert not exists(node, "/etc/fwgate.yaml", f"{SITE}/fwgate", *DROP_INS, *WANTS, GUARD_WANTS,
                      "/run/fwgate", "/var/lib/fwgate")
    # No unit, runtime directory or private /tmp left until the next reboot.
    assert not ghosts(node)
    # And nothing else appeared or vanished: enable links, helper state, caches.
    # Apt's autoremove keeps a dependency another package suggests (trixie's
    # libsystemd0 suggests libgcrypt20, which libxslt1.1 pulled in): its files
    # are that package's, not fwgate's.
    kept = installed(node) - packages
    owned = set(node.run(["dpkg", "-L", *kept]).stdout.split()) if kept else set()
    after = {line for line in node.run(SNAPSHOT, check=False).stdout.splitlines()
             if line.split()[0] not in owned or line in before}
    assert after == before, {"left": sorted(after - before), "lost": sorted(before - after)}
    props = show(node, "k3s.service", "Requires", "DropInPaths")
    assert "fwgate" not in props["Requires"] + props["DropInPaths"], props
    # k3s was never touched, and restarts without fwgate.
    assert show(node, "k3s", "InvocationID", "ActiveState") == k3s
    node.run(["systemctl", "restart", "k3s.service"], timeout=30)


# --- the packaged fwgate doing its job ----------------------------------------

def test_packaged_fwgate_gates_k3s_standin(container_factory, debs, archives, suite):
    """The e2e test's scenario with the package in place of the checkout."""
    # The checkout (k3s's stand-in script) plus the packages.
    c = boot(container_factory, debs, archives, suite, binds_ro=project_binds())
    apt(c, "install", str(debs["X"]))
    # The stand-ins, with the Netbird-like programmer the package carries, run by
    # the release's python3 (the checkout's .venv is Debian 12's python).
    for unit in ("netbird.service", "k3s.service"):
        text = (e2e.E2E / unit).read_text().replace("@ROOT@/.venv/bin/python", "/usr/bin/python3")
        c.write_file(f"/etc/systemd/system/{unit}", text.replace("@ROOT@", str(ROOT)), mode=0o644)
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
    assert c.run(["dpkg", "-S", "/usr/bin/fwgate"]).stdout.startswith("fwgate: ")
    journal = c.run(["journalctl", "-u", "fwgate", "-o", "cat", "--no-pager"]).stdout
    assert "Traceback" not in journal, journal
    # Each entry names the line of fwgate that logged it, not a library's C file.
    code = {(e.get("CODE_FILE"), e.get("CODE_FUNC")) for e in e2e.events(c)}
    assert code and all(str(f).startswith(f"{SITE}/fwgate/") and not str(f).endswith("journal.py")
                        for f, _ in code), code


# --- metrics and alerts --------------------------------------------------------

PROM_DIR = "/var/lib/prometheus/node-exporter"
SCRAPE = """import sys, urllib.request
print(urllib.request.urlopen("http://127.0.0.1:9100/metrics", timeout=5).read().decode())"""


def scrape(c: Container) -> dict[str, float]:
    """node_exporter's fwgate and textfile samples: {'name{labels}': value}."""
    text = c.run(["python3", "-c", SCRAPE], check=False).stdout
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(("fwgate_", "node_textfile_scrape_error"))}


def test_metrics_by_default_through_node_exporter(container_factory, debs, archives, suite):
    """A node with Debian's node_exporter: no edit, and fwgate's metrics of both roles
    are scraped from its textfile directory (loopback, in the container's own netns).
    node_exporter comes after fwgate: the guard already runs, and its sandbox opens the
    new directory only at start; the package's dpkg trigger restarts it."""
    c = boot(container_factory, debs, archives, suite)
    c.write_file("/etc/systemd/system/k3s.service", K3S_STANDIN)
    apt(c, "install", str(debs["X"]))
    guard = show(c, "fwgate-guard.service", "InvocationID")
    apt(c, "install", "--no-install-recommends", "prometheus-node-exporter")
    assert show(c, "fwgate-guard.service", "InvocationID") != guard  # the trigger
    # A quick gate (no metrics key: the shipped default, auto), then k3s.
    c.write_file("/etc/fwgate.yaml", QUICK_CONFIG)
    c.run(["systemctl", "start", "k3s.service"], timeout=60)

    version = package_version(debs["X"]).rsplit("-", 1)[0]
    want = {f'fwgate_build_info{{role="{r}",version="{version}"}}' for r in ("gate", "guard")}
    got = wait_for("fwgate's samples of both roles from node_exporter",
                   lambda: (lambda m: m if want <= m.keys() else None)(scrape(c)), timeout=30)
    assert all(got[k] == 1 for k in want), got
    assert got['fwgate_ready{role="gate"}'] == 1, got
    assert got['fwgate_incompatible_rules{role="guard"}'] == 0, got
    # What the alert rules read (packaging/prometheus/fwgate-alerts.yml), live: the
    # guard's heartbeat is fresh, its config good, prevention known (no Netbird here).
    now = float(c.run(["date", "+%s"]).stdout)
    assert now - got['fwgate_heartbeat_timestamp_seconds{role="guard"}'] < 60, got
    assert got['fwgate_config_ok{role="guard"}'] == 1, got
    assert 'fwgate_prevention_in_force{role="guard"}' in got, got
    assert got.get("node_textfile_scrape_error") == 0, got
    # Root's files, readable by node_exporter's own user, no temp file left behind.
    listing = c.run(["stat", "-c", "%n %U %a", *(f"{PROM_DIR}/{f}" for f in
                                                  ("fwgate.prom", "fwgate-guard.prom"))]).stdout
    assert listing.split("\n")[:2] == [f"{PROM_DIR}/fwgate.prom root 644",
                                       f"{PROM_DIR}/fwgate-guard.prom root 644"], listing
    assert not c.run(["sh", "-c", f"ls -a {PROM_DIR} | grep '^.fwgate-' || true"]).stdout
    # Removing fwgate takes its metrics along: stale ones would page someone.
    apt(c, "remove", "fwgate")
    assert not exists(c, f"{PROM_DIR}/fwgate.prom", f"{PROM_DIR}/fwgate-guard.prom")


def test_promtool_tests_the_shipped_alert_rules(debs, tmp_path):
    """The rules as the package installs them, under Debian's promtool: they load,
    and each alert fires on the node in trouble and not on the healthy one."""
    tool = _archive.promtool()
    subprocess.run(["dpkg-deb", "-x", str(debs["X"]), str(tmp_path / "pkg")], check=True)
    shutil.copy(tmp_path / "pkg/usr/share/fwgate/fwgate-alerts.yml", tmp_path)
    shutil.copy(ROOT / "packaging/prometheus/fwgate-alerts.test.yml", tmp_path)
    for args in (["check", "rules", "fwgate-alerts.yml"],
                 ["test", "rules", "fwgate-alerts.test.yml"]):
        r = subprocess.run([str(tool), *args], cwd=tmp_path, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


# --- the virtualenv build (packaging/deb/build --venv) ----------------------------------

def test_venv_build_installs_and_purges_cleanly(container_factory, tmp_path):
    """The option for sites that want pinned dependencies: built from PyPI (lintian
    errors fail the build), self-contained, so a bare Debian 12 node installs it
    offline; purge leaves neither the venv nor the gate's ghost."""
    env = dict(os.environ, FWGATE_DIST=str(tmp_path),
               # Reused across sessions: the same python3.X builds the same wheels.
               FWGATE_PIP_CACHE=str(_rootfs.CACHE_DIR / "pip-deb"), TMPDIR=str(tmp_path))
    r = subprocess.run([str(BUILD), "--venv"], env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    deb = Path(r.stdout.strip().splitlines()[-1])
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout
    assert deb.name.endswith(f"_{arch.strip()}.deb"), deb
    c = container_factory(binds_ro=[str(tmp_path)])
    before = set(c.run(SNAPSHOT, check=False).stdout.splitlines())
    c.write_file("/etc/systemd/system/k3s.service", K3S_STANDIN)
    apt(c, "install", str(deb))
    assert c.run(["readlink", "-f", "/usr/bin/fwgate"]).stdout.strip() == "/opt/fwgate/bin/fwgate"
    assert c.run(["fwgate", "--version"]).stdout.startswith("fwgate ")
    assert show(c, "fwgate-guard.service", "ActiveState")["ActiveState"] == "active"
    c.write_file("/etc/fwgate.yaml", QUICK_CONFIG)
    c.run(["systemctl", "start", "k3s.service"], timeout=60)
    k3s = show(c, "k3s", "InvocationID", "ActiveState")

    apt(c, "purge", "fwgate")

    assert show(c, "k3s", "InvocationID", "ActiveState") == k3s
    assert not ghosts(c) and not exists(c, "/opt/fwgate", "/run/fwgate", "/var/lib/fwgate")
    c.run(["rm", "/etc/systemd/system/k3s.service"])
    after = set(c.run(SNAPSHOT, check=False).stdout.splitlines())
    assert after == before, {"left": sorted(after - before), "lost": sorted(before - after)}
