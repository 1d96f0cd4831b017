"""Build and cache Debian root file systems that boot systemd under systemd-nspawn.

Usage: PYTHONPATH=tests python3 -m fwgate_testing.node.rootfs [--print-path] [--force] [SUITE ...]
  (--print-path: build quietly, print only the path; --force: rebuild;
   SUITE: bookworm (the default) and/or trixie)

The rootfs lives at /var/cache/fwgate-tests/rootfs-<key>; <key> hashes the suite,
package list and preparation revision, so changing any of them builds a new one.
It is built in a temp dir next to it and renamed into place, so a half-built tree
is never used.  Containers boot it with --volatile=overlay, so it stays pristine.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

CACHE_DIR = Path(os.environ.get("FWGATE_TEST_CACHE", "/var/cache/fwgate-tests"))
SUITE = "bookworm"            # the default: the release the project is developed on
# The releases the package is installed on in the tests (one rootfs each).
SUITES = ("bookworm", "trixie")
VARIANT = "minbase"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "nftables",
            "iptables", "iproute2", "libsystemd0")
# Bump when prepare() changes so existing caches are rebuilt.
PREP_REVISION = 1
DEFAULT_MIRROR = "http://deb.debian.org/debian"
HOSTNAME = "fwgate-test"

# Units that only cost boot time or wait for things a container never has.
MASK_UNITS = (
    "getty@.service", "serial-getty@.service", "console-getty.service",
    "container-getty@.service", "getty.target", "systemd-firstboot.service",
    "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "fstrim.timer", "dpkg-db-backup.timer",
    "systemd-networkd-wait-online.service", "systemd-timesyncd.service",
)

REQUIRED_TOOLS = {"debootstrap": "debootstrap", "systemd-nspawn": "systemd-container"}


def require_host_tools(tools=REQUIRED_TOOLS) -> None:
    """Raise with the apt package to install if a host tool is missing."""
    missing = [f"{t} (apt-get install {pkg})" for t, pkg in tools.items() if not shutil.which(t)]
    if missing:
        raise RuntimeError("missing host tools: " + ", ".join(missing))


def cache_key(suite: str = SUITE) -> str:
    spec = f"{suite}|{VARIANT}|{','.join(sorted(PACKAGES))}|prep{PREP_REVISION}"
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def rootfs_path(suite: str = SUITE) -> Path:
    return CACHE_DIR / f"rootfs-{cache_key(suite)}"


def host_mirror(suite: str = SUITE) -> str:
    """The Debian archive URI the host's apt uses (only that host is reachable);
    the one serving the host's own release also serves the others."""
    candidates: list[tuple[str, str]] = []
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            # "deb [opts] URI suite components"
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 3 and parts[0] == "deb":
                rest = parts[1:]
                if rest[0].startswith("["):
                    while rest and not rest[0].endswith("]"):
                        rest = rest[1:]
                    rest = rest[1:]
                if len(rest) >= 2:
                    candidates.append((rest[0], rest[1]))
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        try:
            stanzas = Path(path).read_text().split("\n\n")
        except OSError:
            continue
        for stanza in stanzas:
            fields = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.split()
            if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"]) != ["no"]:
                for uri in fields.get("uris", []):
                    for suite in fields.get("suites", []):
                        candidates.append((uri, suite))
    # Prefer the entry serving the plain suite (not -security / -updates).
    for uri, name in candidates:
        if name in (suite, SUITE):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def prepare(root: Path) -> None:
    """Make the debootstrapped tree boot fast and quietly as a container."""
    etc = root / "etc"
    # Empty machine-id: systemd generates a transient one per boot, and this is
    # not treated as "first boot" (no firstboot prompts).
    (etc / "machine-id").write_text("")
    (etc / "hostname").write_text(HOSTNAME + "\n")
    unit_dir = etc / "systemd" / "system"
    unit_dir.mkdir(parents=True, exist_ok=True)
    for unit in MASK_UNITS:
        link = unit_dir / unit
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/dev/null")
    # Journal to memory only: fast, and nothing written into the overlay's disk.
    jconf = etc / "systemd" / "journald.conf.d"
    jconf.mkdir(parents=True, exist_ok=True)
    (jconf / "fwgate-tests.conf").write_text("[Journal]\nStorage=volatile\n")
    # Drop the downloaded .debs; they only take space.
    for deb in glob.glob(str(root / "var/cache/apt/archives/*.deb")):
        os.unlink(deb)


def build(force: bool = False, quiet: bool = True, suite: str = SUITE) -> Path:
    """Return the cached rootfs path of `suite`, building it first if it is missing."""
    if suite not in SUITES:
        raise RuntimeError(f"unknown suite {suite!r}: one of {', '.join(SUITES)}")
    dest = rootfs_path(suite)
    if dest.is_dir() and not force:
        return dest
    if os.geteuid() != 0:
        raise RuntimeError("building the test rootfs needs root (debootstrap)")
    require_host_tools({"debootstrap": "debootstrap", "unshare": "util-linux"})
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # Serialise concurrent builders (e.g. parallel test runs); the loser reuses.
    with open(CACHE_DIR / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if dest.is_dir() and not force:
            return dest
        return _build_locked(dest, force, quiet, suite)


def _build_locked(dest: Path, force: bool, quiet: bool, suite: str) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=CACHE_DIR))
    log = tmp.parent / (tmp.name + ".log")
    mirror = host_mirror(suite)
    # debootstrap mounts /proc and /sys inside the target; in a private mount
    # namespace those vanish with it even if it is killed, so nothing leaks
    # into the host and removing a half-built tree never descends into them.
    cmd = ["unshare", "--mount", "--propagation", "private", "debootstrap", f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}",
           suite, str(tmp), mirror]
    try:
        with open(log, "w") as out:
            # Own process group, so an interrupt can stop debootstrap *and* the
            # dpkg it runs before the half-built tree is removed.
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True,
                                    stdout=out if quiet else None,
                                    stderr=subprocess.STDOUT if quiet else None)
            try:
                rc = proc.wait()
            except BaseException:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        if rc != 0:
            tail = log.read_text().strip().splitlines()[-1:] if quiet else []
            raise RuntimeError(f"debootstrap failed (exit {rc}) from {mirror}: "
                               f"{' '.join(tail)} (log: {log})")
        prepare(tmp)
        if force and dest.is_dir():
            shutil.rmtree(dest)
        # Atomic publish: the final name only ever points at a finished tree.
        os.rename(tmp, dest)
        log.unlink(missing_ok=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(exc, RuntimeError):  # keep the log only when we cite it
            log.unlink(missing_ok=True)
        raise
    return dest


def main(argv: list[str]) -> int:
    print_path = "--print-path" in argv
    suites = [a for a in argv if not a.startswith("--")] or [SUITE]
    for suite in suites:
        try:
            path = build(force="--force" in argv, quiet=print_path, suite=suite)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
