"""The .deb under test: built once per session, installed with apt-get in a container.

Packages are built with packaging/deb/build into temp dirs: the checkout's version
X, X+1 (FWGATE_DEB_VERSION) for upgrades, and X once more for the reproducibility
test. The `debs` fixture (conftest.py) gives them, `archives` what they depend on
(archive.py); these helpers drive a container holding them."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from . import archive as _archive
from .container import Container

ROOT = Path(__file__).resolve().parents[3]
BUILD = ROOT / "packaging" / "deb" / "build"
# Packages the tests install on a node beside fwgate's own dependencies.
ARCHIVE_EXTRA = ("prometheus-node-exporter",)


def upstream_version() -> str:
    text = (ROOT / "fwgate" / "__init__.py").read_text()
    return re.search(r'^__version__ = "(.+)"$', text, re.M)[1]


def next_version(version: str) -> str:
    """0.1.0 -> 0.1.1: a later upstream version, for the upgrade."""
    head, _, last = version.rpartition(".")
    return f"{head}.{int(last) + 1}" if last.isdigit() else f"{version}.post1"


def build_deb(dist: Path, version: str) -> Path:
    env = dict(os.environ, FWGATE_DIST=str(dist), FWGATE_DEB_VERSION=version,
               FWGATE_LINTIAN="0")  # test_lintian_no_errors runs it once
    r = subprocess.run([str(BUILD)], env=env, capture_output=True, text=True, timeout=900)
    if r.returncode:
        pytest.fail(f"packaging/deb/build {version} failed:\n{r.stderr[-4000:]}", pytrace=False)
    deb = Path(r.stdout.strip().splitlines()[-1])
    assert deb.is_file() and deb.name.startswith(f"fwgate_{version}_"), r.stdout
    return deb


def node_binds(debs: list[Path], suite: str = "bookworm") -> list[str]:
    """Read-only binds for a node that installs `debs`: their directories, and the
    local archive of what they depend on (built on first use) at archive.MOUNT."""
    archive = _archive.build(suite, debs[:1], extra=ARCHIVE_EXTRA)
    return [*sorted({str(d.parent) for d in debs}), f"{archive}:{_archive.MOUNT}"]


def use_archive(c: Container) -> None:
    """The node's only apt source: the local archive bound at archive.MOUNT (what
    its mirror would serve). `apt-get update` reads it offline."""
    c.run(["sh", "-c", f"""set -e
        rm -f /etc/apt/sources.list.d/*
        echo 'deb [trusted=yes] file:{_archive.MOUNT} ./' > /etc/apt/sources.list
        apt-get update -qq"""], timeout=120)


def apt(c: Container, *args: str) -> str:
    r = c.run(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q",
               "-o", "Dpkg::Use-Pty=0", *args], timeout=180)
    return r.stdout + r.stderr


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
