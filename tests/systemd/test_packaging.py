"""The .deb on a clean Debian 12 node: install, upgrade, remove, purge, and the
packaged fwgate gating a k3s stand-in (see packaging/README.md).

Two packages are built once per session with packaging/deb/build into a temp
dir: the checkout's version X and X+1 (FWGATE_DEB_VERSION). Each test boots a
fresh container (--private-network: no network, so every dependency must
already be in the rootfs) with that dir bound read-only, and installs with
apt-get as an operator would.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import rootfs as _rootfs
from container import Container

pytestmark = pytest.mark.systemd

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "packaging" / "deb" / "build"
UNITS = "/usr/lib/systemd/system"
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


def upstream_version() -> str:
    text = (ROOT / "fwgate" / "__init__.py").read_text()
    return re.search(r'^__version__ = "(.+)"$', text, re.M)[1]


def next_version(version: str) -> str:
    """0.1.0 -> 0.1.1: a later upstream version, for the upgrade."""
    head, _, last = version.rpartition(".")
    return f"{head}.{int(last) + 1}" if last.isdigit() else f"{version}.post1"


def build_deb(dist: Path, version: str) -> Path:
    env = dict(os.environ, FWGATE_DIST=str(dist), FWGATE_DEB_VERSION=version,
               FWGATE_LINTIAN="0",  # test_lintian_no_errors runs it once
               # Reused across sessions: the same python3.X builds the same wheels.
               FWGATE_PIP_CACHE=str(_rootfs.CACHE_DIR / "pip-deb"))
    r = subprocess.run([str(BUILD)], env=env, capture_output=True, text=True, timeout=900)
    if r.returncode:
        pytest.fail(f"packaging/deb/build {version} failed:\n{r.stderr[-4000:]}", pytrace=False)
    deb = Path(r.stdout.strip().splitlines()[-1])
    assert deb.is_file() and deb.name.startswith(f"fwgate_{version}_"), r.stdout
    return deb


@pytest.fixture(scope="session")
def debs(systemd_rootfs, tmp_path_factory) -> dict[str, Path]:
    """{"X": .deb of the checkout's version, "X+1": .deb of the next one}."""
    if os.geteuid() != 0:
        pytest.skip("building the .deb needs root")
    dist = tmp_path_factory.mktemp("debs")
    up = upstream_version()
    return {"X": build_deb(dist, f"{up}-1"), "X+1": build_deb(dist, f"{next_version(up)}-1")}


@pytest.fixture
def node(container_factory, debs) -> Container:
    """A clean node with the packages bound in and a k3s unit already there,
    but without the checkout: the package must be self-contained."""
    c = container_factory(binds_ro=[str(debs["X"].parent)])
    c.write_file("/etc/systemd/system/k3s.service", K3S_STANDIN)
    c.run(["systemctl", "daemon-reload"])
    return c


def apt(c: Container, *args: str) -> str:
    r = c.run(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q",
               "-o", "Dpkg::Use-Pty=0", *args], timeout=180)
    return r.stdout + r.stderr


def show(c: Container, unit: str, *props: str) -> dict[str, str]:
    out = c.run(["systemctl", "show", unit, *(f"-p{p}" for p in props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def exists(c: Container, *paths: str) -> list[str]:
    """The paths that exist (or are symlinks, dangling or not)."""
    script = 'for p; do if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi; done'
    return c.run(["sh", "-c", script, "sh", *paths]).stdout.split()


def unusr(text: str) -> str:
    """/usr/lib/systemd and /lib/systemd are one directory on merged-/usr
    systems, and Debian 12's systemd names units by their /lib path."""
    return text.replace("/usr/lib/", "/lib/")


def package_version(deb: Path) -> str:
    return deb.name.split("_")[1]


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
    for path in [f"{UNITS}/fwgate.service", *DROP_INS, "/usr/bin/fwgate",
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
    # Enabled for k3s and k3s-agent, and nothing started.
    assert exists(node, *WANTS) == WANTS
    fw = show(node, "fwgate.service", "UnitFileState", "ActiveState")
    assert fw == {"UnitFileState": "enabled", "ActiveState": "inactive"}, fw
    assert show(node, "k3s.service", "ActiveState")["ActiveState"] == "inactive"
    assert node.failed_units() == ""


def test_upgrade_keeps_edited_config_and_running_units(node: Container, debs):
    apt(node, "install", str(debs["X"]))
    node.write_file("/etc/fwgate.yaml", QUICK_CONFIG)
    node.run(["systemctl", "start", "k3s.service"], timeout=60)  # runs the gate first
    ids = {u: show(node, u, "InvocationID", "ActiveState") for u in ("fwgate", "k3s")}
    assert ids["fwgate"]["ActiveState"] == ids["k3s"]["ActiveState"] == "active", ids

    apt(node, "install", str(debs["X+1"]))

    new = package_version(debs["X+1"])
    assert node.run(["dpkg-query", "-W", "-f=${Version}", "fwgate"]).stdout == new
    assert node.run(["fwgate", "--version"]).stdout.strip() == f"fwgate {new.rsplit('-', 1)[0]}"
    # dpkg's conffile handling: the operator's edit survives.
    assert node.read_file("/etc/fwgate.yaml") == QUICK_CONFIG
    assert not exists(node, "/etc/fwgate.yaml.dpkg-dist", "/etc/fwgate.yaml.dpkg-new")
    # No restart: restarting fwgate would restart k3s (Requires=).
    assert {u: show(node, u, "InvocationID", "ActiveState") for u in ("fwgate", "k3s")} == ids
    assert show(node, "fwgate.service", "UnitFileState")["UnitFileState"] == "enabled"
    assert exists(node, "/opt/fwgate/lib/python3.11/site-packages/fwgate/__pycache__")


def test_remove_leaves_k3s_running_and_startable(node: Container, debs):
    apt(node, "install", str(debs["X"]))
    node.write_file("/etc/fwgate.yaml", QUICK_CONFIG)
    node.run(["systemctl", "start", "k3s.service"], timeout=60)
    k3s = show(node, "k3s", "InvocationID", "ActiveState")

    apt(node, "remove", "fwgate")

    # Not stopped: stopping fwgate would have stopped k3s with it.
    assert show(node, "k3s", "InvocationID", "ActiveState") == k3s
    assert not exists(node, f"{UNITS}/fwgate.service", *DROP_INS, "/opt/fwgate", "/usr/bin/fwgate")
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
    assert exists(node, *WANTS) == WANTS

    apt(node, "purge", "fwgate")

    # Every path dpkg listed is gone, but for directories other packages own.
    assert set(exists(node, *files)) == shared
    assert not exists(node, "/etc/fwgate.yaml", "/opt/fwgate", *DROP_INS, *WANTS)
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
    assert "repaired" in kinds and kinds[-1] == "ready", kinds
    # It was the package's fwgate, inside its sandbox, that did it.
    assert "path=/usr/bin/fwgate " in e2e.show(c, "fwgate", "ExecStart")["ExecStart"]
    assert c.run(["readlink", "-f", "/usr/bin/fwgate"]).stdout.strip() == "/opt/fwgate/bin/fwgate"
    journal = c.run(["journalctl", "-u", "fwgate", "-o", "cat", "--no-pager"]).stdout
    assert "Traceback" not in journal, journal
