"""Which iptables k3s runs, resolved the way k3s resolves it. Pure: a small view of the
host's files in (adapters/iptables.py reads it), binaries out.

k3s (cmd/k3s/main.go stageAndRun) sets PATH to `<data-dir>/data/cni:<dir>/bin:$PATH:
<dir>/bin/aux`, or `…:<dir>/bin:<dir>/bin/aux:$PATH` with --prefer-bundled-bin (flag,
or `prefer-bundled-bin` in /etc/rancher/k3s/config.yaml and config.yaml.d/*.yaml), and
go-iptables resolves `iptables` once through it (exec.LookPath): the host's iptables
wins whenever it is installed. The bundled `bin/aux/iptables*` start as links to
iptables-detect.sh (k3s-root), which picks nft or legacy on first use — IPTABLES_MODE,
then the rule counts of iptables-legacy-save and iptables-nft-save, then a container
check, /etc/alternatives/iptables, then the OS — and relinks them to
xtables-nft-multi or xtables-legacy-multi (xtables-set-mode.sh). We never run the
detecting wrapper (it rewrites k3s's links); we run the multi-call binary it would pick.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from .impact import Setup
from .profiles import Profile, profile_for

SYSTEMD_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
DEFAULT_DATA_DIR = "/var/lib/rancher/k3s"
NFT, LEGACY = "nf_tables", "legacy"
# What k3s-root ships in bin/aux (the version k3s's copy is when it cannot be asked).
BUNDLED_VERSIONS = ("1.8.9", "1.8.11")


@dataclass(frozen=True)
class Binary:
    """An iptables that k3s runs (or could run), or the one asked for."""

    path: str                        # as k3s finds it on its PATH
    argv: tuple[str, ...] = ()       # how to run it read-only; () when it cannot be run
    source: str = "host"             # host | bundled | config | --iptables
    role: str = "runs"               # runs | could run | asked
    mode: str | None = None          # nf_tables | legacy | None (not known yet)
    version: str | None = None       # "1.8.9"
    why: str = ""                    # how it was resolved

    @property
    def profile(self) -> Profile | None:
        return profile_for(self.version)

    @property
    def reads_nftables(self) -> bool:
        return self.mode != LEGACY

    @property
    def label(self) -> str:
        """`/usr/sbin/iptables (iptables 1.8.9, nf_tables)`"""
        what = ", ".join(x for x in (f"iptables {self.version}" if self.version else
                                     "version unknown", self.mode) if x)
        return f"{self.path} ({what})"


@dataclass(frozen=True)
class HostView:
    """What resolution reads of the host; every field plain data."""

    service_path: tuple[str, ...] = SYSTEMD_PATH   # the PATH k3s's unit starts with
    executables: frozenset[str] = frozenset()      # candidate paths that are executable files
    links: dict = field(default_factory=dict)      # candidate path -> readlink() of it
    data_dir: str = DEFAULT_DATA_DIR
    current: str | None = None         # <data-dir>/data/current (or the newest) when unpacked
    k3s_args: tuple[str, ...] = ()     # k3s's flags (unit ExecStart) ...
    k3s_config: dict = field(default_factory=dict)   # ... and its merged config files
    config_error: str | None = None    # a config file that could not be read
    env: dict = field(default_factory=dict)           # k3s's environment (unit, env files)
    legacy_rules: int | None = 0       # x_tables rules (0: no legacy table loaded)
    containerized: bool = False
    alternatives: str | None = None    # readlink /etc/alternatives/iptables
    os_id: str = ""                    # as iptables-detect.sh's os_detect finds it
    os_major: int | None = None


@dataclass(frozen=True)
class Resolution:
    binaries: tuple[Binary, ...]
    notes: tuple[str, ...] = ()


# --- k3s's own settings ------------------------------------------------------------------

def _truth(value) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "t", "true"):
        return True
    if text in ("0", "f", "false", ""):
        return False
    return None


def k3s_setting(view: HostView, name: str, flag_value: str | None = None):
    """A k3s setting: the command line wins over the config files (configfilearg).
    Booleans given as a bare flag come back as "true"."""
    found = view.k3s_config.get(name)
    args = list(view.k3s_args)
    for i, arg in enumerate(args):
        if arg == f"--{name}":
            nxt = args[i + 1] if i + 1 < len(args) else None
            if flag_value is not None:
                found = flag_value
            elif nxt is not None and not nxt.startswith("-"):
                found = nxt
            else:
                found = "true"
        elif arg.startswith(f"--{name}="):
            found = arg.split("=", 1)[1]
    return found


def prefer_bundled(view: HostView) -> bool | None:
    value = k3s_setting(view, "prefer-bundled-bin", flag_value="true")
    if value is None:
        return None if view.config_error else False
    return _truth(value)


def k3s_setup(view: HostView) -> Setup:
    """Which components run, from k3s's flags and config."""
    cidrs = k3s_setting(view, "cluster-cidr")
    cidrs = ",".join(cidrs) if isinstance(cidrs, list) else (cidrs or "")
    dual = ":" in cidrs if cidrs else None
    backend = k3s_setting(view, "flannel-backend")
    return Setup(network_policy=not _truth(k3s_setting(view, "disable-network-policy",
                                                       flag_value="true") or False),
                 kube_proxy=not _truth(k3s_setting(view, "disable-kube-proxy",
                                                   flag_value="true") or False),
                 flannel=str(backend or "").lower() != "none", dual_stack=dual)


# --- iptables-detect.sh --------------------------------------------------------------------

def _os_mode(view: HostView) -> str:
    os_id, major = view.os_id, view.os_major
    if os_id in ("alpine", "ubuntu"):
        return LEGACY
    if os_id in ("debian", "raspbian"):
        return NFT if (major or 0) >= 10 else LEGACY
    if os_id in ("oracleserver", "centos", "redhat"):
        return NFT if (major or 0) >= 8 else LEGACY
    if os_id == "fedora":  # `rpm -qa | grep iptables-nft`: the package leaves iptables-nft
        return NFT if any(p.endswith("/iptables-nft") for p in view.executables) else LEGACY
    return NFT


def detect_modes(view: HostView) -> tuple[tuple[str, str], ...]:
    """The modes iptables-detect.sh can pick on its first run, each with why."""
    mode = view.env.get("IPTABLES_MODE")
    if mode:
        return ((NFT if mode == "nft" else LEGACY, f"IPTABLES_MODE={mode}"),)
    legacy = view.legacy_rules
    if legacy is not None and legacy >= 10:
        return ((LEGACY, f"{legacy} legacy rules"),)
    if view.containerized:
        fallback = (LEGACY, "no rules yet, and it runs in a container")
    elif view.alternatives:
        fallback = (NFT if "nft" in view.alternatives else LEGACY,
                    f"no rules yet; /etc/alternatives/iptables -> {view.alternatives}")
    else:
        fallback = (_os_mode(view), f"no rules yet; the OS ({view.os_id or 'unknown'})")
    if legacy is None:  # x_tables holds some rules: it counts them against nf_tables'
        return ((LEGACY, "legacy rules outnumber iptables-nft's, or " + fallback[1]),
                (NFT, "iptables-nft rules outnumber legacy ones"))
    nft_first = (NFT, "iptables-nft rules exist when k3s first runs it")
    return (fallback,) if fallback[0] == NFT else (nft_first, fallback)


# --- resolution ----------------------------------------------------------------------------

def _mode_of_link(target: str | None) -> str | None:
    name = os.path.basename(target or "")
    if "legacy" in name:
        return LEGACY
    if "nft" in name:
        return NFT
    return None


def _bundled(view: HostView, role: str, why: str) -> list[Binary]:
    if view.current is None:
        return [Binary(os.path.join(view.data_dir, "data", "<not unpacked yet>", "bin", "aux",
                                    "iptables"), (), "bundled", role, None, None,
                       f"{why}; k3s has not unpacked it yet: iptables "
                       f"{' or '.join(BUNDLED_VERSIONS)}, depending on the k3s release")]
    aux = os.path.join(view.current, "bin", "aux")
    path = os.path.join(aux, "iptables")
    target = view.links.get(path)
    multi = {NFT: os.path.join(aux, "xtables-nft-multi"),
             LEGACY: os.path.join(aux, "xtables-legacy-multi")}
    mode = _mode_of_link(target)
    if mode is not None:
        return [Binary(path, (multi[mode], "iptables"), "bundled", role, mode, None,
                       f"{why}; linked to {os.path.basename(target)}")]
    if "detect" not in os.path.basename(target or ""):  # a file of its own: it says its mode
        return [Binary(path, (path,), "bundled", role, None, None, why)]
    modes = detect_modes(view)
    return [Binary(path, (multi[m], "iptables"), "bundled", role if len(modes) == 1 else "could run",
                   m, None, f"{why}; iptables-detect.sh has not run yet: {how}")
            for m, how in modes]


def resolve(view: HostView) -> Resolution:
    """The iptables k3s runs; more than one when it cannot be told which (its config
    is unreadable, the bundled copy's mode is not decided yet)."""
    prefer = prefer_bundled(view)
    notes: list[str] = []
    if view.config_error:
        notes.append(f"k3s config: {view.config_error}")
    host = next((os.path.join(d, "iptables") for d in view.service_path
                 if os.path.join(d, "iptables") in view.executables), None)
    in_bin = os.path.join(view.current, "bin", "iptables") if view.current else None
    if in_bin and in_bin in view.executables:  # <dir>/bin comes before everything else
        return Resolution((Binary(in_bin, (in_bin,), "bundled", "runs", None, None,
                                  "first on k3s's PATH (<data-dir>/bin)"),), tuple(notes))
    out: list[Binary] = []
    if prefer is None:
        notes.append("cannot tell whether k3s prefers its bundled binaries: judging both")
    if prefer or prefer is None or host is None:
        why = "--prefer-bundled-bin puts bin/aux first" if prefer else \
            "no iptables on the host's PATH: bin/aux is last on k3s's PATH" if host is None else \
            "if k3s prefers its bundled binaries"
        out += _bundled(view, "runs" if prefer or host is None else "could run", why)
    if host and not prefer:
        target = view.links.get(host)
        out.append(Binary(host, (host,), "host", "runs" if prefer is False else "could run",
                          _mode_of_link(target), None,
                          "first on k3s's PATH ($PATH comes before bin/aux)"
                          + (f"; links to {target}" if target else "")))
    return Resolution(tuple(out), tuple(notes))


def asked(path: str, source: str) -> Binary:
    """--iptables PATH / compat.iptables PATH: that binary only."""
    return Binary(path, (path,), source, "asked", None, None, f"{source} {path}")


def with_version(binary: Binary, version: str | None, mode: str | None) -> Binary:
    return replace(binary, version=version or binary.version, mode=mode or binary.mode)
