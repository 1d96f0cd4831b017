"""The iptables binaries k3s runs: read the host for compat.binaries.resolve(), ask them
their version, and run what k3s runs as a second opinion.

Read-only: only `--version`, `-S`, `-C` and `iptables-save` are run, inside the
namespace we work in (`ip netns exec`). k3s's bundled wrapper iptables-detect.sh is
never run (it relinks k3s's binaries): the multi-call binary it would pick is.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..compat.binaries import (
    DEFAULT_DATA_DIR, LEGACY, NFT, SYSTEMD_PATH, Binary, HostView, asked, resolve, with_version,
)
from ..compat.crosscheck import Call, IptablesVerdict, Ran
from ..compat.profiles import parse_version
from ..errors import EnvironmentProblem

K3S_DATA = os.path.join(DEFAULT_DATA_DIR, "data")
TIMEOUT = 30.0
K3S_UNITS = ("k3s.service", "k3s-agent.service")
UNIT_DIRS = ("etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system")

Runner = Callable[[list[str]], subprocess.CompletedProcess]


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


# --- the host, for resolve() -----------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _unit(root: str) -> tuple[list[str], dict[str, str]]:
    """k3s's ExecStart arguments and Environment= of its unit (the first unit found),
    with the environment files the installer's unit names."""
    import shlex
    for name in K3S_UNITS:
        for d in UNIT_DIRS:
            text = _read(os.path.join(root, d, name))
            if text is None:
                continue
            args: list[str] = []
            env: dict[str, str] = {}
            joined = text.replace("\\\n", " ")
            for line in joined.splitlines():
                line = line.strip()
                if line.startswith("ExecStart="):
                    try:
                        args = shlex.split(line.split("=", 1)[1])[1:]
                    except ValueError:
                        args = line.split()[1:]
                elif line.startswith("Environment="):
                    for item in shlex.split(line.split("=", 1)[1]):
                        if "=" in item:
                            k, v = item.split("=", 1)
                            env[k] = v
                elif line.startswith("EnvironmentFile="):
                    path = line.split("=", 1)[1].lstrip("-").replace("%N", name[:-8])
                    env.update(_env_file(os.path.join(root, path.lstrip("/"))))
            return args, env
    return [], {}


def _env_file(path: str) -> dict[str, str]:
    out = {}
    for line in (_read(path) or "").splitlines():
        line = line.strip()
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().strip("'\"")
    return out


def _k3s_config(root: str, args: list[str], env: dict[str, str]) -> tuple[dict, str | None]:
    """config.yaml, then config.yaml.d/*.yaml in order (configfilearg): later files
    override, a key ending in "+" appends."""
    import yaml
    base = env.get("K3S_CONFIG_FILE") or next(
        (args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config", "-c")),
        "/etc/rancher/k3s/config.yaml")
    path = os.path.join(root, base.lstrip("/"))
    merged: dict = {}
    for f in [path] + sorted(glob.glob(path + ".d/*.yaml")):
        text = _read(f)
        if text is None:
            if os.path.exists(f):
                return merged, f"{f}: cannot be read"
            continue
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            return merged, f"{f}: {str(exc).splitlines()[0]}"
        if not isinstance(data, dict):
            return merged, f"{f}: not a mapping"
        for k, v in data.items():
            k = str(k)
            if k.endswith("+"):
                old = merged.get(k[:-1], [])
                merged[k[:-1]] = (old if isinstance(old, list) else [old]) + \
                    (v if isinstance(v, list) else [v])
            else:
                merged[k] = v
    return merged, None


def _os(root: str) -> tuple[str, int | None]:
    """iptables-detect.sh's os_detect: lsb-release, debian_version, …, os-release."""
    def value(text: str | None, key: str) -> str:
        for line in (text or "").splitlines():
            if line.startswith(key + "="):
                return line.split("=", 1)[1].strip().strip("'\"")
        return ""
    os_release = _read(os.path.join(root, "etc/os-release"))
    dist = value(_read(os.path.join(root, "etc/lsb-release")), "DISTRIB_ID")
    version = ""
    if not dist and os.path.exists(os.path.join(root, "etc/debian_version")):
        dist = "debian"
        version = (_read(os.path.join(root, "etc/debian_version")) or "").split("/")[0]
    for name, ident in (("fedora-release", "fedora"), ("oracle-release", "oracleserver"),
                        ("centos-release", "centos"), ("redhat-release", "redhat")):
        if not dist and os.path.exists(os.path.join(root, "etc", name)):
            dist = ident
    if not dist:
        dist = value(os_release, "ID")
    dist = dist.lower()
    dist = "redhat" if dist == "redhatenterpriseserver" else dist
    version = version or value(os_release, "VERSION_ID")
    major = version.split(".")[0]
    return dist, int(major) if major.isdigit() else None


def _legacy_rules() -> int | None:
    """0 when no x_tables table is loaded in this namespace; None when some is (its
    rules would have to be counted by running iptables-legacy-save)."""
    for name in ("ip_tables_names", "ip6_tables_names"):
        text = _read(f"/proc/net/{name}")
        if text and text.strip():
            return None
    return 0


def _data_dir(root: str, args: list[str], env: dict[str, str], config: dict) -> tuple[str, str | None]:
    data = env.get("K3S_DATA_DIR") or next(
        (a.split("=", 1)[1] for a in args if a.startswith("--data-dir=")), None) or next(
        (args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--data-dir", "-d")), None) or \
        config.get("data-dir") or DEFAULT_DATA_DIR
    base = os.path.join(root, str(data).lstrip("/"), "data")
    current = os.path.join(base, "current")
    if os.path.isdir(current):
        return str(data), os.path.realpath(current)
    found = [d for d in glob.glob(os.path.join(base, "*")) if os.path.isdir(os.path.join(d, "bin", "aux"))]
    return str(data), max(found, key=os.path.getmtime, default=None)


def read_host(root: str = "/") -> HostView:
    """The view resolve() decides on. `root` is for tests (a fake host tree); paths in
    the view are the host's."""
    args, env = _unit(root)
    config, error = _k3s_config(root, args, env)
    data_dir, current = _data_dir(root, args, env, config)
    service_path = tuple(env["PATH"].split(":")) if env.get("PATH") else SYSTEMD_PATH
    strip = (lambda p: "/" + os.path.relpath(p, root)) if root != "/" else (lambda p: p)
    candidates = [os.path.join(root, d.lstrip("/"), "iptables") for d in service_path]
    if current:
        candidates += [os.path.join(current, "bin", "iptables"),
                       os.path.join(current, "bin", "aux", "iptables"),
                       os.path.join(current, "bin", "aux", "xtables-nft-multi")]
    executables, links = set(), {}
    for path in candidates:
        if _executable(path):
            executables.add(strip(path))
        if os.path.islink(path):
            links[strip(path)] = os.readlink(path)
    for d in service_path:  # the package's alternatives, for Fedora's os_detect
        if _executable(os.path.join(root, d.lstrip("/"), "iptables-nft")):
            executables.add(os.path.join(d, "iptables-nft"))
    cgroup = _read(os.path.join(root, "proc/1/cgroup")) or ""
    containerized = any(line.split(":")[2].strip("/") for line in cgroup.splitlines()
                        if "cpuset" in line and line.count(":") >= 2)
    alternatives = os.path.join(root, "etc/alternatives/iptables")
    os_id, os_major = _os(root)
    return HostView(service_path, frozenset(executables), links, data_dir,
                    strip(current) if current else None, tuple(args), config, error, env,
                    _legacy_rules(), containerized,
                    os.readlink(alternatives) if os.path.islink(alternatives) else None,
                    os_id, os_major)


# --- which binaries -----------------------------------------------------------------------

def find_iptables(setting: str) -> str | None:
    """An explicit iptables (compat.iptables / --iptables): "none" → None; a path (or a
    name on PATH) → that binary, or EnvironmentProblem if missing or not executable."""
    if setting == "none":
        return None
    if "/" not in setting:
        found = shutil.which(setting)
        if found is None:
            raise EnvironmentProblem(f"iptables binary {setting!r}: not found on PATH")
        return found
    if not os.path.exists(setting):
        raise EnvironmentProblem(f"iptables binary {setting}: no such file")
    if not _executable(setting):
        raise EnvironmentProblem(f"iptables binary {setting}: not an executable file")
    return setting


def _safe(binary: Binary) -> Binary:
    """Never the detecting wrapper: it relinks k3s's binaries when run."""
    real = os.path.realpath(binary.argv[0]) if binary.argv else ""
    if os.path.basename(real) == "iptables-detect.sh":
        multi = os.path.join(os.path.dirname(binary.argv[0]), "xtables-nft-multi")
        return Binary(binary.path, (multi, "iptables"), binary.source, binary.role, NFT,
                      binary.version, binary.why + "; run as its xtables-nft-multi, not through "
                                                   "iptables-detect.sh")
    return binary


def version_of(binary: Binary, run: Runner | None = None) -> Binary:
    """The binary with its version and mode from `--version` (unchanged if it does not run)."""
    if not binary.argv:
        return binary
    try:
        done = (run or _run)([*binary.argv, "--version"])
    except EnvironmentProblem:
        return binary
    version, mode = parse_version(done.stdout + done.stderr)
    return with_version(binary, version, mode)


def binaries_for(setting: str, override: str | None = None, root: str = "/",
                 run: Runner | None = None, view: HostView | None = None
                 ) -> tuple[tuple[Binary, ...], tuple[str, ...]]:
    """The binaries to judge for, with their versions, and notes on how they were found:
    --iptables PATH, else compat.iptables PATH, else (auto) the ones k3s runs (view:
    the host as read_host() read it, if it was)."""
    if override or setting not in ("auto", "none"):
        path = find_iptables(override or setting)
        if path is None:
            return (), ()
        binary = asked(path, "--iptables" if override else "compat.iptables")
        return (version_of(_safe(binary), run),), ()
    if setting == "none":
        return (), ("compat.iptables: none: no binary is asked; judged for every modelled "
                    "version",)
    resolution = resolve(view or read_host(root))
    return tuple(version_of(_safe(b), run) for b in resolution.binaries), resolution.notes



# --- running what k3s runs ----------------------------------------------------------------

def tool_argv(binary: str | Binary, family: str, save: bool = False) -> list[str] | None:
    """The command for `family` ("ip" or "ip6"), listing or saving, beside `binary`:
    .../iptables → .../ip6tables, .../iptables-save; .../iptables-nft →
    .../ip6tables-nft-save. A multi-call binary (xtables-nft-multi) gets the tool name
    as its first argument. None if the sibling does not exist."""
    if isinstance(binary, Binary):
        if len(binary.argv) == 2:  # (multi-call binary, applet)
            return [binary.argv[0], ("ip6tables" if family == "ip6" else "iptables")
                    + ("-save" if save else "")]
        binary = binary.argv[0] if binary.argv else binary.path
    directory, base = os.path.split(binary)
    stem = base.replace("ip6tables", "iptables", 1).removesuffix("-save")
    if "iptables" not in stem:
        name = ("ip6tables" if family == "ip6" else "iptables") + ("-save" if save else "")
        return [binary, name]
    if family == "ip6":
        stem = stem.replace("iptables", "ip6tables", 1)
    base = stem + ("-save" if save else "")
    path = os.path.join(directory, base)
    return [path] if path == binary or _executable(path) else None


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, errors="replace",
                              timeout=TIMEOUT, check=False)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot run {argv[0]}: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"{' '.join(argv)}: no answer in {TIMEOUT:.0f}s") from None


def _lines(text: str) -> str | None:
    text = text.strip()
    return text or None


def _saved(stdout: str, table: str) -> bool:
    lines = stdout.splitlines()
    if f"*{table}" not in lines:
        return False
    return "COMMIT" in lines[lines.index(f"*{table}"):]


@dataclass
class _Started:
    call: Call
    proc: subprocess.Popen | None
    out: object
    err: object
    done: subprocess.CompletedProcess | None = None


class Running:
    """Calls started at once (their output goes to files, so a large iptables-save
    never waits for us), collected by finish()."""

    def __init__(self, binary: Binary, netns: str | None, calls: Iterable[Call],
                 run: Runner | None = None):
        self.binary, self.netns, self.run = binary, netns, run
        self.prefix = ["ip", "netns", "exec", netns] if netns else []
        self.skipped: list[str] = []
        self.started: list[_Started] = []
        self.add(calls)

    def add(self, calls: Iterable[Call]) -> None:
        for call in calls:
            argv = tool_argv(self.binary, call.family, call.kind == "save")
            if argv is None:
                self.skipped.append(f"{call.text}: no {call.tool} beside {self.binary.path}")
                continue
            self.started.append(self._start(call, self.prefix + argv + call.args))

    def _start(self, call: Call, argv: list[str]) -> _Started:
        if self.run is not None:  # a fake, in tests: synchronous
            return _Started(call, None, None, None, self.run(argv))
        out, err = tempfile.TemporaryFile("w+", errors="replace"), \
            tempfile.TemporaryFile("w+", errors="replace")
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        except OSError as exc:
            out.close(), err.close()
            raise EnvironmentProblem(f"cannot run {argv[0]}: {exc.strerror}") from None
        return _Started(call, proc, out, err)

    def finish(self, moved: bool = False) -> IptablesVerdict:
        runs: list[Ran] = []
        for s in self.started:
            done = s.done or self._wait(s)
            call = s.call
            if call.kind == "save":
                note = next((ln for ln in done.stdout.splitlines() if ln.startswith("# Table")), None)
                saved = _saved(done.stdout, call.table) and done.returncode == 0
                outcome = "saved" if saved else "aborted" if done.returncode else "left out"
                runs.append(Ran(call, done.returncode, _lines(done.stderr), outcome,
                                note or _lines(done.stderr)))
            else:
                runs.append(Ran(call, done.returncode, _lines(done.stderr)))
        if self.binary.mode == LEGACY:
            self.skipped.append(f"{self.binary.path} runs in legacy mode: it does not read nf_tables")
        return IptablesVerdict(self.binary.label, self.binary.version and
                               f"iptables v{self.binary.version} ({self.binary.mode or '?'})",
                               tuple(runs), tuple(self.skipped), moved)

    @staticmethod
    def _wait(s: _Started) -> subprocess.CompletedProcess:
        try:
            code = s.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            code = s.proc.wait()
        texts = []
        for fh in (s.out, s.err):
            fh.seek(0)
            texts.append(fh.read())
            fh.close()
        return subprocess.CompletedProcess(s.proc.args, code, *texts)


def cross_check(binary: Binary | str, netns: str | None, calls: Iterable[Call],
                run: Runner | None = None) -> IptablesVerdict:
    """Run the calls with `binary` inside `netns` and collect the answers."""
    if isinstance(binary, str):
        binary = version_of(asked(binary, "--iptables"), run)
    return Running(binary, netns, calls, run).finish()


def mode_of(binary: str) -> str | None:
    """"nf_tables" or "legacy", from `binary --version`; None if it does not answer."""
    return version_of(asked(binary, "--iptables")).mode
