"""Boot Debian's real systemd as PID 1 in a throwaway systemd-nspawn container.

    with Container(binds_ro=[CHECKOUT]) as c:       # boots, waits for "running"
        c.write_file("/etc/systemd/system/x.service", UNIT)
        c.run(["systemctl", "start", "x"])

How it is launched (why each piece is there):
  * own cgroup in both hierarchies of this hybrid host (v1 "name=systemd" and
    cgroup2 "unified"): with --keep-unit nspawn hands its *own* cgroup to the
    container's systemd, so it must be a fresh, empty one we can delete later;
  * private mount namespace with a tmpfs on /run: nspawn keeps its runtime state
    under /run, which then vanishes with the namespace instead of leaking;
  * --volatile=overlay: the cached rootfs is never modified (writes go to tmpfs);
  * --private-network: a fresh netns with only loopback, never the host's;
  * --register=no --keep-unit: the host need not run systemd/machined.
Commands run inside via nsenter into the container PID 1's namespaces.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterable, Sequence

from . import rootfs as _rootfs

CONTAINER_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb", "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}
NS_FLAGS = ("--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup")


# --- asking a booted container's systemd ----------------------------------------------

def show(c: "Container", unit: str, *props: str) -> dict[str, str]:
    out = c.run(["systemctl", "show", unit, *(f"-p{p}" for p in props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def mono(c: "Container", unit: str, prop: str) -> float:
    """A *TimestampMonotonic property in seconds (0.0: never happened)."""
    return int(show(c, unit, prop)[prop]) / 1e6


def journal(c: "Container", unit: str) -> list[dict]:
    out = c.run(["journalctl", "-u", unit, "-o", "json", "--no-pager"]).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def programmer_changes(c: "Container", unit: str = "netbird.service") -> list[tuple[float, str]]:
    """The changes the Netbird stand-in (fwgate.programmer) committed, as it logged
    them: (CLOCK_MONOTONIC seconds, burst name), oldest first."""
    found = []
    for e in journal(c, unit):
        m = re.fullmatch(r"(\d+\.\d+) (\w+)", str(e.get("MESSAGE", "")))
        if m:
            found.append((float(m[1]), m[2]))
    return found


def wait_for(what: str, probe, timeout: float = 20.0, every: float = 0.05):
    """probe()'s first true value, or AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def cgroup_roots() -> list[Path]:
    """Hierarchies our container cgroup must exist in, for this host's layout."""
    fs = Path("/sys/fs/cgroup")
    if (fs / "cgroup.controllers").exists():  # pure cgroup2 (untested here)
        return [fs]
    roots = [fs / "systemd", fs / "unified"]  # hybrid: v1 name=systemd + cgroup2
    if not (roots[0] / "cgroup.procs").exists():
        raise RuntimeError("no name=systemd cgroup hierarchy at /sys/fs/cgroup/systemd")
    return [r for r in roots if (r / "cgroup.procs").exists()]


class Container:
    """One booted container; use as a context manager so it is always torn down."""

    def __init__(self, rootfs: str | os.PathLike | None = None, *,
                 binds_ro: Iterable[str] = (), binds: Iterable[str] = (),
                 extra_args: Sequence[str] = (), name: str | None = None,
                 boot_timeout: float = 30.0, stop_timeout: float = 10.0):
        # A bind is "PATH" (same path inside) or "HOST:CONTAINER[:opts]".
        self.rootfs = Path(rootfs) if rootfs else _rootfs.build()
        self.binds_ro = list(binds_ro)
        self.binds = list(binds)
        self.extra_args = list(extra_args)
        self.name = name or f"fwgate-test-{uuid.uuid4().hex[:8]}"
        self.boot_timeout = boot_timeout
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen | None = None  # systemd-nspawn itself
        self.leader: int | None = None  # container PID 1, as a host PID
        self.cgroups: list[Path] = []
        self._log = None
        self.returncode: int | None = None  # nspawn's exit status after close()

    # ---- lifecycle -------------------------------------------------------
    def __enter__(self) -> "Container":
        try:
            self.start()
            self.wait_running(self.boot_timeout)
        except BaseException:  # incl. KeyboardInterrupt: never leak a container
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        if self.proc is not None:
            raise RuntimeError("container already started")
        if os.geteuid() != 0:
            raise RuntimeError("booting a container needs root")
        _rootfs.require_host_tools({"systemd-nspawn": "systemd-container", "nsenter": "util-linux",
                                    "unshare": "util-linux", "setpriv": "util-linux"})
        if not (self.rootfs / "sbin/init").exists() and not (self.rootfs / "lib/systemd/systemd").exists():
            raise RuntimeError(f"not a bootable rootfs: {self.rootfs}")
        roots = cgroup_roots()
        _sweep_stale_cgroups(roots)
        for root in roots:
            cg = root / self.name
            cg.mkdir()
            self.cgroups.append(cg)
        nspawn = ["systemd-nspawn", "-b", "-D", str(self.rootfs), "--volatile=overlay",
                  "--private-network", "--register=no", "--keep-unit",
                  "--console=read-only", f"--machine={self.name}"]
        nspawn += [f"--bind-ro={_bind_spec(b)}" for b in self.binds_ro]
        nspawn += [f"--bind={_bind_spec(b)}" for b in self.binds]
        nspawn += self.extra_args
        # Joining the cgroups and mounting /run happen in the child, which then
        # execs nspawn: nspawn's PID is the one we started (and signal).
        # setpriv --pdeathsig: if this Python process dies hard, nspawn still
        # gets SIGTERM and halts the container.
        script = "set -e\n" + "".join(
            f"echo $$ > {shlex.quote(str(cg / 'cgroup.procs'))}\n" for cg in self.cgroups
        ) + "mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run\nexec \"$@\"\n"
        argv = ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", script, "sh", "setpriv", "--pdeathsig", "TERM", "--", *nspawn]
        self._log = tempfile.NamedTemporaryFile(prefix=f"{self.name}.", suffix=".console")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_running(self, timeout: float = 30.0) -> None:
        """Wait until `systemctl is-system-running` says running; raise otherwise."""
        deadline = time.monotonic() + timeout
        state = "no container PID 1 yet"
        while time.monotonic() < deadline:
            self._check_alive()
            if self.leader is None:
                self.leader = self._find_leader(self.proc.pid)
            if self.leader is not None:
                r = self.run(["systemctl", "is-system-running"], check=False, timeout=5)
                state = r.stdout.strip() or r.stderr.strip() or f"exit {r.returncode}"
                if state == "running":
                    return
                if state == "degraded":
                    raise RuntimeError(f"container {self.name} booted degraded: failed units: "
                                       f"{self.failed_units() or 'unknown'}")
            time.sleep(0.05)
        failed = self.failed_units() if self.leader else ""
        raise RuntimeError(f"container {self.name} did not reach running in {timeout:g}s "
                           f"(state: {state}; failed units: {failed or 'none'}; "
                           f"console: {self._last_console_line()})")

    def close(self) -> None:
        """Stop nspawn (SIGTERM, then SIGKILL), remove our cgroups; idempotent."""
        proc, self.proc = self.proc, None
        interrupted = None
        try:
            if proc is not None and proc.poll() is None:
                # SIGTERM makes nspawn ask the container's systemd for a clean halt.
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(self.stop_timeout)
                except (subprocess.TimeoutExpired, KeyboardInterrupt) as exc:
                    if isinstance(exc, KeyboardInterrupt):
                        interrupted = exc  # finish tearing down, then re-raise
                    proc.kill()
                    proc.wait()
            self.returncode = proc.returncode if proc else None
            # If nspawn was killed, the container's PID 1 may outlive it; killing
            # that one PID tears down its whole PID namespace (the container).
            for pid in self.cgroup_pids():
                if _is_ns_init(pid):
                    _kill(pid)
                    _wait_dead(pid, self.stop_timeout)
            self._remove_cgroups()
        finally:
            self.leader = None
            if self._log is not None:
                self._log.close()
                self._log = None
        if interrupted is not None:
            raise interrupted

    # ---- driving the container ------------------------------------------
    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 60.0,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run argv inside the container (text mode, output captured)."""
        if self.leader is None:
            raise RuntimeError(f"container {self.name} is not running")
        cmd = ["nsenter", f"--target={self.leader}", *NS_FLAGS, "--", *argv]
        # Own session so a timeout can kill nsenter *and* the child it forked.
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=CONTAINER_ENV, cwd="/", start_new_session=True)
        try:
            out, err = p.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_nsenter(p)
            raise RuntimeError(f"in container: {shlex.join(argv)} timed out after {timeout:g}s") from None
        except BaseException:  # e.g. KeyboardInterrupt: don't leave it running
            _stop_nsenter(p)
            raise
        res = subprocess.CompletedProcess(list(argv), p.returncode, out, err)
        if check and res.returncode != 0:
            msg = (err.strip() or out.strip()).splitlines()
            raise RuntimeError(f"in container: {shlex.join(argv)} exited {res.returncode}"
                               + (f": {msg[-1]}" if msg else ""))
        return res

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Create/replace a file in the container (parents created as needed)."""
        self.run(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"',
                  "sh", path, f"{mode:o}"], input=text)

    def read_file(self, path: str) -> str:
        return self.run(["cat", path]).stdout

    def failed_units(self) -> str:
        r = self.run(["systemctl", "list-units", "--failed", "--plain", "--no-legend"],
                     check=False, timeout=5)
        return ", ".join(line.split()[0] for line in r.stdout.splitlines() if line.strip())

    # ---- introspection --------------------------------------------------
    @property
    def pid(self) -> int | None:
        """PID of the systemd-nspawn process we started."""
        return self.proc.pid if self.proc else None

    def cgroup_pids(self) -> set[int]:
        """Host PIDs of every process still in our cgroups (any depth)."""
        return set().union(*(_tree_pids(cg) for cg in self.cgroups))

    def console(self) -> str:
        """What nspawn and the container console printed so far."""
        if self._log is None:
            return ""
        return Path(self._log.name).read_text(errors="replace")

    # ---- internals ------------------------------------------------------
    @staticmethod
    def _find_leader(nspawn_pid: int) -> int | None:
        # nspawn forks the container's init; we accept only a child that is
        # PID 1 of its own PID namespace (NSpid ends in 1) running systemd.
        for kid in _children(nspawn_pid):
            if _is_ns_init(kid) and _is_systemd(kid):
                return kid
        return None

    def _check_alive(self) -> None:
        if self.proc is None:
            raise RuntimeError(f"container {self.name} is not started")
        rc = self.proc.poll()
        if rc is not None:
            raise RuntimeError(f"systemd-nspawn exited early ({rc}): {self._last_console_line()}")

    def _last_console_line(self) -> str:
        lines = [l.strip() for l in self.console().splitlines() if l.strip()]
        return lines[-1] if lines else "no output"

    def _remove_cgroups(self) -> None:
        # Processes may take a moment to leave after the container dies.
        deadline = time.monotonic() + 5
        while self.cgroups:
            cg = self.cgroups[-1]
            try:
                _rmdir_tree(cg)
                self.cgroups.pop()
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"could not remove cgroup {cg}: {exc.strerror} "
                                       f"(pids left: {sorted(self.cgroup_pids())})") from None
                time.sleep(0.05)


def _tree_pids(cg: Path) -> set[int]:
    pids: set[int] = set()
    for procs in cg.rglob("cgroup.procs"):
        try:
            pids.update(int(x) for x in procs.read_text().split())
        except OSError:
            pass  # removed meanwhile
    return pids


def _rmdir_tree(cg: Path) -> None:
    # Deepest first: the container's systemd made subgroups. cgroupfs only
    # allows rmdir (the files inside are virtual) and fails while busy.
    if not cg.exists():
        return
    for sub in sorted((p for p in cg.rglob("*") if p.is_dir()),
                      key=lambda p: len(p.parts), reverse=True):
        sub.rmdir()
    cg.rmdir()


def _sweep_stale_cgroups(roots: list[Path], min_age: float = 120.0) -> None:
    """Remove empty fwgate-test-* cgroups a hard-killed test run left behind."""
    now = time.time()
    for root in roots:
        for cg in root.glob("fwgate-test-*"):
            try:
                # Old (not one being set up now) and no process anywhere in it.
                if now - cg.stat().st_mtime > min_age and not _tree_pids(cg):
                    _rmdir_tree(cg)
            except OSError:
                pass  # busy (still has processes) or already gone


def _bind_spec(bind: str) -> str:
    return bind if ":" in bind else f"{bind}:{bind}"


def _is_ns_init(pid: int) -> bool:
    """True if pid is PID 1 of a child PID namespace ("NSpid: <host> ... 1")."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    nspid = next((l.split()[1:] for l in status.splitlines() if l.startswith("NSpid:")), [])
    return len(nspid) >= 2 and nspid[-1] == "1"


def _is_systemd(pid: int) -> bool:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "systemd"
    except OSError:
        return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_dead(pid: int, timeout: float) -> None:
    # A killed PID 1 is reparented to the host's init, which reaps it later;
    # as a zombie it no longer runs, which is all we need.
    deadline = time.monotonic() + timeout
    while is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def is_running(pid: int) -> bool:
    """True if pid exists and is not a zombie/dead task."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids += map(int, children.read_text().split())
        except OSError:
            pass  # task exited meanwhile
    return kids


def _stop_nsenter(p: subprocess.Popen) -> None:
    # Kill nsenter's child (inside the container) first, so nsenter reaps it.
    # Were nsenter to die first, the child would be reparented to the *host's*
    # init, which reaps lazily here; that zombie stays in the container's PID
    # namespace and stalls its shutdown until close() escalates to SIGKILL.
    for kid in _children(p.pid):
        _kill(kid)
    try:
        p.wait(2)
    except subprocess.TimeoutExpired:
        pass
    _killpg(p.pid)  # nsenter itself and whatever else is left in its group
    p.wait()


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


PROJECT_ROOT = Path(__file__).resolve().parents[3]


def project_binds() -> list[str]:
    """Read-only binds so the checkout (and its .venv) run inside as on the host."""
    binds = [str(PROJECT_ROOT)]
    venv = PROJECT_ROOT / ".venv"
    cfg = venv / "pyvenv.cfg"
    if venv.is_dir() and not venv.resolve().is_relative_to(PROJECT_ROOT):
        binds.append(str(venv.resolve()))
    if cfg.is_file():
        # A venv's python is a symlink to its base interpreter ("home = .../bin");
        # bind that prefix too unless the rootfs has it (Debian's /usr/bin).
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                prefix = Path(value.strip()).parent
                if prefix != Path("/usr") and prefix.is_dir():
                    binds.append(str(prefix))
    return binds
