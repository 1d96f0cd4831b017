"""Which iptables k3s runs: the pure resolution over a view of the host, and the reading
of that view from a fake host tree. No binary is run here."""
from __future__ import annotations

import os

import pytest

from fwgate.adapters.iptables import read_host
from fwgate.compat.binaries import (
    LEGACY, NFT, HostView, detect_modes, k3s_setup, prefer_bundled, resolve,
)
from fwgate.compat.profiles import PROFILES, parse_version, profile_for

DATA = "/var/lib/rancher/k3s/data/abc"
AUX = f"{DATA}/bin/aux"


def view(host=True, link="xtables-nft-multi", **kw) -> HostView:
    executables = {f"{AUX}/iptables", f"{AUX}/xtables-nft-multi"} | (
        {"/usr/sbin/iptables"} if host else set())
    links = {f"{AUX}/iptables": link, "/usr/sbin/iptables": "/etc/alternatives/iptables"}
    base = dict(executables=frozenset(executables), links=links, current=DATA)
    base.update(kw)
    return HostView(**base)


def paths(resolution) -> list[tuple[str, str, str | None]]:
    return [(b.path, b.role, b.mode) for b in resolution.binaries]


# --- PATH order -----------------------------------------------------------------------

def test_the_hosts_iptables_wins_when_installed():
    (b,) = resolve(view()).binaries
    assert (b.path, b.source, b.role, b.argv) == ("/usr/sbin/iptables", "host", "runs",
                                                  ("/usr/sbin/iptables",))
    assert "$PATH comes before bin/aux" in b.why


def test_prefer_bundled_bin_from_config_flag_and_override():
    for kw in ({"k3s_config": {"prefer-bundled-bin": True}},
               {"k3s_args": ("server", "--prefer-bundled-bin")},
               {"k3s_args": ("--prefer-bundled-bin=true",)}):
        (b,) = resolve(view(**kw)).binaries
        assert (b.path, b.source, b.role, b.mode) == (f"{AUX}/iptables", "bundled", "runs", NFT), kw
        assert b.argv == (f"{AUX}/xtables-nft-multi", "iptables")  # never the wrapper
    # the command line wins over the config file
    v = view(k3s_config={"prefer-bundled-bin": True}, k3s_args=("--prefer-bundled-bin=false",))
    assert prefer_bundled(v) is False and paths(resolve(v))[0][0] == "/usr/sbin/iptables"


def test_without_a_host_iptables_bin_aux_is_last_on_the_path():
    (b,) = resolve(view(host=False)).binaries
    assert (b.path, b.role) == (f"{AUX}/iptables", "runs")
    assert "no iptables on the host's PATH" in b.why


def test_a_custom_service_path_is_searched_in_order():
    v = view(service_path=("/opt/bin", "/usr/sbin"),
             executables=frozenset({"/opt/bin/iptables", "/usr/sbin/iptables"}))
    assert resolve(v).binaries[0].path == "/opt/bin/iptables"


def test_an_unreadable_k3s_config_judges_both():
    v = view(config_error="config.yaml: mapping values are not allowed here")
    assert prefer_bundled(v) is None
    got = paths(resolve(v))
    assert got == [(f"{AUX}/iptables", "could run", NFT), ("/usr/sbin/iptables", "could run", None)]
    assert any("judging both" in n for n in resolve(v).notes)


def test_k3s_not_unpacked_yet():
    (b,) = resolve(view(host=False, current=None, executables=frozenset())).binaries
    assert b.argv == () and b.version is None and b.profile is None
    assert "1.8.9 or 1.8.11" in b.why


def test_a_bundled_file_that_is_no_link_is_run_as_it_is():
    v = view(host=False, links={})
    (b,) = resolve(v).binaries
    assert (b.argv, b.mode) == ((f"{AUX}/iptables",), None)


def test_legacy_link_is_reported_not_judged():
    (b,) = resolve(view(host=False, link="xtables-legacy-multi")).binaries
    assert b.mode == LEGACY and not b.reads_nftables


# --- iptables-detect.sh ------------------------------------------------------------------

def detect(**kw) -> list[str]:
    return [m for m, _ in detect_modes(view(host=False, link="iptables-detect.sh", **kw))]


def test_detection_order():
    assert detect(env={"IPTABLES_MODE": "legacy"}) == [LEGACY]
    assert detect(legacy_rules=12) == [LEGACY]
    assert detect(alternatives="/usr/sbin/iptables-nft") == [NFT]
    assert detect(os_id="debian", os_major=12) == [NFT]
    # Ubuntu without alternatives: legacy, unless nf_tables holds iptables rules by then
    assert detect(os_id="ubuntu") == [NFT, LEGACY]
    assert detect(containerized=True) == [NFT, LEGACY]
    assert detect(legacy_rules=None, os_id="debian", os_major=12) == [LEGACY, NFT]


def test_an_undecided_bundled_copy_is_judged_for_each_mode():
    v = view(host=False, link="iptables-detect.sh", os_id="ubuntu")
    got = resolve(v).binaries
    assert [(b.mode, b.role, b.argv[0]) for b in got] == [
        (NFT, "could run", f"{AUX}/xtables-nft-multi"),
        (LEGACY, "could run", f"{AUX}/xtables-legacy-multi")]
    assert "iptables-detect.sh has not run yet" in got[0].why


# --- components --------------------------------------------------------------------------

def test_k3s_setup_from_flags_and_config():
    assert k3s_setup(view()) == k3s_setup(view())
    plain = k3s_setup(view())
    assert plain.network_policy and plain.kube_proxy and plain.flannel and plain.dual_stack is None
    s = k3s_setup(view(k3s_config={"cluster-cidr": "10.42.0.0/16,2001:cafe:42::/56",
                                   "flannel-backend": "none"},
                       k3s_args=("server", "--disable-network-policy")))
    assert (s.network_policy, s.flannel, s.dual_stack) == (False, False, True)
    assert k3s_setup(view(k3s_config={"cluster-cidr": ["10.42.0.0/16"]})).dual_stack is False


# --- versions ---------------------------------------------------------------------------

def test_profiles_for_versions():
    assert [profile_for(v).version for v in ("1.8.9", "1.8.10", "1.8.11", "1.8.12", "1.8.13",
                                             "1.8.8", "1.8.14", "1.8.10.1")] == \
        ["1.8.9", "1.8.10", "1.8.11", "1.8.12", "1.8.13", "1.8.9", "1.8.13", "1.8.10"]
    assert profile_for(None) is None and profile_for("") is None
    assert parse_version("iptables v1.8.11 (nf_tables)\n") == ("1.8.11", "nf_tables")
    assert parse_version("iptables v1.8.9 (legacy)") == ("1.8.9", "legacy")
    assert parse_version("nope") == (None, None)
    # each switch flips once, in version order
    for name in ("meta_set_mark", "broute_table", "bitwise_strict"):
        flags = [getattr(p, name) for p in PROFILES]
        assert flags == sorted(flags), name
    assert [p.bridge_ifindex_crash for p in PROFILES] == [True, True, False, False, False]


# --- reading the host --------------------------------------------------------------------

def exe(path, text="#!/bin/sh\n"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture
def host(tmp_path):
    root = tmp_path
    aux = root / "var/lib/rancher/k3s/data/abc/bin/aux"
    exe(str(aux / "iptables-detect.sh"))
    exe(str(aux / "xtables-nft-multi"))
    os.symlink("iptables-detect.sh", aux / "iptables")
    os.symlink(str(root / "var/lib/rancher/k3s/data/abc"), root / "var/lib/rancher/k3s/data/current")
    exe(str(root / "usr/sbin/iptables-nft"))
    os.makedirs(root / "etc/alternatives")
    os.symlink("/usr/sbin/iptables-nft", root / "etc/alternatives/iptables")
    write(str(root / "etc/os-release"), 'ID=debian\nVERSION_ID="12"\n')
    write(str(root / "etc/debian_version"), "12.8\n")
    write(str(root / "etc/systemd/system/k3s.service"),
          "[Service]\nEnvironmentFile=-/etc/default/%N\nExecStart=/usr/local/bin/k3s \\\n"
          "    server \\\n    '--disable-network-policy'\n")
    write(str(root / "etc/default/k3s"), "IPTABLES_MODE=nft\n")
    write(str(root / "etc/rancher/k3s/config.yaml"), "cluster-cidr: 10.42.0.0/16\n")
    write(str(root / "etc/rancher/k3s/config.yaml.d/50-bundled.yaml"), "prefer-bundled-bin: true\n")
    return str(root)


def test_read_host_from_a_fake_tree(host):
    v = read_host(host)
    assert v.current == "/var/lib/rancher/k3s/data/abc"
    assert v.k3s_args == ("server", "--disable-network-policy")
    assert v.k3s_config == {"cluster-cidr": "10.42.0.0/16", "prefer-bundled-bin": True}
    assert v.env["IPTABLES_MODE"] == "nft"
    assert v.alternatives == "/usr/sbin/iptables-nft" and (v.os_id, v.os_major) == ("debian", 12)
    assert v.links["/var/lib/rancher/k3s/data/abc/bin/aux/iptables"] == "iptables-detect.sh"
    (b,) = resolve(v).binaries  # prefer-bundled-bin from config.yaml.d
    assert (b.path, b.mode, b.argv) == ("/var/lib/rancher/k3s/data/abc/bin/aux/iptables", NFT,
                                        ("/var/lib/rancher/k3s/data/abc/bin/aux/xtables-nft-multi",
                                         "iptables"))
    assert "IPTABLES_MODE=nft" in b.why
    assert k3s_setup(v).network_policy is False


def test_read_host_appends_and_reports_bad_config(host):
    write(os.path.join(host, "etc/rancher/k3s/config.yaml.d/60-more.yaml"),
          "cluster-cidr+: [2001:cafe:42::/56]\n")
    v = read_host(host)
    assert v.k3s_config["cluster-cidr"] == ["10.42.0.0/16", "2001:cafe:42::/56"]
    assert k3s_setup(v).dual_stack is True
    write(os.path.join(host, "etc/rancher/k3s/config.yaml.d/70-bad.yaml"), "a: [\n")
    bad = read_host(host)
    assert bad.config_error and "70-bad.yaml" in bad.config_error


def test_read_host_without_k3s(tmp_path):
    exe(str(tmp_path / "usr/sbin/iptables"))
    v = read_host(str(tmp_path))
    assert v.current is None and v.k3s_config == {} and v.config_error is None
    (b,) = resolve(v).binaries
    assert (b.path, b.role) == ("/usr/sbin/iptables", "runs")
