"""A local apt archive per suite: what a package under test needs beyond the test
rootfs, fetched once from Debian's archive.

The containers have no network. So the packages a node would get from its mirror
(fwgate's Depends and Recommends, and the tests' extras such as node_exporter) are
resolved on the host by apt itself, through a private apt configuration that reads
the rootfs's dpkg status as "installed" (the machine's /etc/apt and dpkg state are
never read or written), downloaded, and indexed with dpkg-scanpackages. A container
binds the directory read-only at MOUNT and lists it as its only source, so
`apt-get install ./fwgate_*.deb` resolves dependencies as on a node.

    archive.build(suite, [deb, ...], extra=("prometheus-node-exporter",)) -> Path
        /var/cache/fwgate-tests/archive-<suite>-<key>/   (*.deb, Packages)
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import rootfs as _rootfs

MOUNT = "/srv/fwgate-archive"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Bump when what build() writes changes.
REVISION = 1


def _fields(deb: Path) -> str:
    out = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends", "Recommends"],
                         capture_output=True, text=True, check=True).stdout
    return " ".join(out.split())


def path(suite: str, debs: list[Path], extra: tuple[str, ...] = (),
         recommends: bool = True) -> Path:
    # What the packages ask for, not their bytes: a rebuild with the same
    # dependencies reuses the archive.
    spec = "|".join([suite, _rootfs.cache_key(suite), *map(_fields, debs), *sorted(extra),
                     f"recommends={recommends}", f"rev{REVISION}"])
    return _rootfs.CACHE_DIR / f"archive-{suite}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


def _apt_env(base: Path, suite: str, status: Path, recommends: bool) -> dict[str, str]:
    for d in ("state/lists/partial", "cache/archives/partial", "etc/parts", "etc/preferences.d"):
        (base / d).mkdir(parents=True, exist_ok=True)
    mirror = _rootfs.host_mirror(suite)
    (base / "etc/sources.list").write_text(f"deb [signed-by={KEYRING}] {mirror} {suite} main\n")
    (base / "apt.conf").write_text(f"""\
Dir::Etc::SourceList "{base}/etc/sources.list";
Dir::Etc::SourceParts "{base}/etc/parts";
Dir::Etc::Preferences "{base}/etc/preferences";
Dir::Etc::PreferencesParts "{base}/etc/preferences.d";
Dir::Etc::Trusted "{base}/etc/trusted.gpg";
Dir::Etc::TrustedParts "{base}/etc/parts";
Dir::State "{base}/state";
Dir::State::status "{status}";
Dir::Cache "{base}/cache";
Dir::Log "{base}/log";
Acquire::Languages "none";
Acquire::Retries "2";
APT::Architecture "amd64";
APT::Architectures {{ "amd64"; }};
APT::Install-Recommends "{str(recommends).lower()}";
APT::Sandbox::User "root";
""")
    env = dict(os.environ, APT_CONFIG=str(base / "apt.conf"), LC_ALL="C",
               DEBIAN_FRONTEND="noninteractive")
    return env


def _run(cmd: list[str], env: dict[str, str]) -> str:
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode:
        lines = (r.stderr.strip() or r.stdout.strip() or f"exit {r.returncode}").splitlines()
        errors = [ln for ln in lines if ln.startswith("E:")] or lines
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {errors[-1]}")
    return r.stdout


def build(suite: str, debs: list[Path], extra: tuple[str, ...] = (),
          recommends: bool = True) -> Path:
    """The archive for `debs` (and `extra` packages) on `suite`'s test rootfs."""
    dest = path(suite, debs, extra, recommends)
    if dest.is_dir():
        return dest
    root = _rootfs.build(suite=suite)
    with open(_rootfs.CACHE_DIR / ".archive.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if dest.is_dir():
            return dest
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=_rootfs.CACHE_DIR))
        try:
            env = _apt_env(work / "apt", suite, root / "var/lib/dpkg/status", recommends)
            _run(["apt-get", "update", "-q"], env)
            # As a node would: the local packages' Depends and Recommends, from the suite.
            _run(["apt-get", "install", "-y", "-q", "--download-only",
                  *map(str, debs), *extra], env)
            out = work / "out"
            out.mkdir()
            for deb in (work / "apt/cache/archives").glob("*.deb"):
                shutil.move(str(deb), out / deb.name)
            index = subprocess.run(["dpkg-scanpackages", "-m", "."], cwd=out,
                                   capture_output=True, text=True, check=True).stdout
            (out / "Packages").write_text(index)
            os.rename(out, dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest


def promtool(suite: str = "bookworm") -> Path:
    """Debian's promtool (package prometheus), unpacked once beside the archives.
    A static Go binary: it runs on the host as it is."""
    dest = _rootfs.CACHE_DIR / f"promtool-{suite}"
    tool = dest / "usr/bin/promtool"
    if not tool.is_file():
        archive = build(suite, [], extra=("prometheus",), recommends=False)
        deb = next(archive.glob("prometheus_*.deb"))
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=_rootfs.CACHE_DIR))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(tmp, dest)
    return tool


def packages(archive: Path) -> dict[str, int]:
    """{package: Installed-Size in KiB} of what the archive holds."""
    sizes: dict[str, int] = {}
    for stanza in (archive / "Packages").read_text().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines()
                      if ": " in line and not line.startswith(" "))
        if "Package" in fields:
            sizes[fields["Package"]] = int(fields.get("Installed-Size", 0))
    return sizes
