"""A corpus of rule encodings, each judged by the real iptables of every version there is
here (1.8.9, 1.8.11, 1.8.13: tests/fwgate_testing/iptables_versions.py) and by the reader with that
version's profile.

For every case: a fresh namespace with kube-router's state built by real iptables,
the case's rule added (by netlink, nft or iptables) before or after kube-router's
jump, then, with each version, what kube-router runs — `-C FORWARD <its jump>`,
`-S KUBE-ROUTER-FORWARD 1` — and `-S CHAIN` and `iptables-save -t TABLE`; their exit
codes (and what iptables-save did) are compared with what the reader predicts for
that version from a snapshot of the same kernel state (compat.crosscheck.predict,
the same predictions the cross-check of `fwgate compat` uses). The reader's verdict
must also be the category the case is meant to exercise, per version, so a case that
quietly turns harmless (nft optimising it away, say) fails too. Then the cross-check
itself runs each version's binary over every managed chain and table: no
disagreement.

    FWGATE_UPDATE_DOCS=1 pytest tests/netns/test_compat_corpus.py

rewrites the results tables in docs/compat.md.
"""
from __future__ import annotations

import os
import re
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from fwgate import programmer as P
from fwgate.adapters.iptables import cross_check, version_of
from fwgate.adapters.nfsock import NfSocket
from fwgate.adapters.nft import snapshot
from fwgate.compat.binaries import asked
from fwgate.compat.crosscheck import Call, calls_for, compare, predict
from fwgate.compat.impact import jump_spec
from fwgate.compat.profiles import profile_for
from fwgate.compat.parser import TCP_FLAGS_CRASH, read_rule
from fwgate.compat.reader import BUILTIN_CHAINS, analyse
from fwgate.model import TableRef
from fwgate.netlink import consts as C
from fwgate.netlink import exprs as X
from fwgate.netlink.consts import FAMILIES
from fwgate_testing.helpers import in_netns, sh
from fwgate_testing.iptables_versions import builds

KR_COMMENT = "kube-router netpol - TEMCG2JMHZYE7H7T"
KR_MATCH = ["-m", "comment", "--comment", KR_COMMENT, "-j", "KUBE-ROUTER-FORWARD"]
DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "compat.md")
VERSIONS = builds()   # {version: bindir}, oldest first

S_EST_REL = struct.pack("=I", 0x6)
ZERO = b"\0\0\0\0"


def oifname(reg: int, padded: bool = True) -> list[bytes]:
    return [X.meta_load(C.META_OIFNAME, reg), X.cmp(C.CMP_EQ, X.ifname_bytes("wt0", padded), reg)]


def ct_state(reg: int) -> list[bytes]:
    return [X.ct_load(C.CT_STATE, reg), X.bitwise(reg, reg, S_EST_REL, ZERO),
            X.cmp(C.CMP_NEQ, ZERO, reg)]


ACCEPT = [X.counter(), X.verdict(C.NF_ACCEPT)]


@dataclass(frozen=True)
class Case:
    id: str
    # the reader's category: ok | misread | unlisted | unparsable | unlisted+misread;
    # a dict when versions differ: {"1.8.9": ..., "*": ...} (keys are profile versions)
    expect: str | dict
    nft: str | None = None                   # rule text for `nft insert/add rule FAMILY TABLE CHAIN`
    iptables: tuple[str, ...] | None = None  # arguments after `iptables -I CHAIN 1` / `-A CHAIN`
    exprs: Callable[[], list[bytes]] | None = None   # raw expressions over netlink
    userdata: bytes | None = None
    family: str = "ip"
    table: str = "filter"
    chain: str = "FORWARD"
    setup: tuple[tuple[str, ...], ...] = ()
    missing: str | None = None              # skip, with this reason, if the kernel refuses the rule
    placements: tuple[str, ...] = ("before", "after")
    note: str = ""

    def describe(self) -> str:
        if self.nft:
            return f"nft: `{self.nft}`"
        if self.iptables:
            return f"iptables: `{' '.join(self.iptables)}`"
        return self.note

    def expected(self, version: str) -> str:
        if isinstance(self.expect, str):
            return self.expect
        profile = profile_for(version).version
        return self.expect.get(profile, self.expect["*"])


NETBIRD = [
    Case("netbird-frwacceptoif", "unparsable", exprs=lambda: P.forward_oif_rule("wt0"),
         userdata=P.TAG_FORWARD_OIF, note="Netbird `frwacceptoif`: oifname + native ct state"),
    Case("netbird-frwacceptiif", "ok", exprs=lambda: P.iif_accept_rule("wt0"),
         userdata=P.TAG_FORWARD_IIF, note="Netbird `frwacceptiif`: iifname wt0 accept"),
    Case("netbird-inputaccept", "ok", exprs=lambda: P.iif_accept_rule("wt0"),
         userdata=P.TAG_INPUT, chain="INPUT", placements=("top",),
         note="Netbird `inputaccept` (INPUT)"),
]

REGISTERS = [
    Case("ct-reg1", "unparsable", exprs=lambda: ct_state(1) + ACCEPT,
         note="ct state in reg 1, nothing before it"),
    Case("ct-reg8", "unparsable", exprs=lambda: ct_state(8) + ACCEPT,
         note="ct state in NFT_REG32_00 (the kernel dumps it as reg 1)"),
    Case("ct-reg10", "unparsable", exprs=lambda: ct_state(10) + ACCEPT,
         note="ct state in NFT_REG32_02"),
    Case("ct-reg10-after-oifname-reg1", "unparsable",
         exprs=lambda: oifname(1) + ct_state(10) + ACCEPT,
         note="ct state in NFT_REG32_02: a slot of its own to iptables, so undefined"),
    Case("ct-reg9-after-oifname-reg1", "unlisted+misread", exprs=lambda: oifname(1) + ct_state(9) + ACCEPT,
         note="ct state in NFT_REG32_01: iptables maps it onto reg 1, which holds oifname"),
    Case("ct-reg13-after-oifname-reg2", "unlisted+misread",
         exprs=lambda: oifname(2) + ct_state(13) + ACCEPT,
         note="ct state in NFT_REG32_05: iptables maps it onto reg 2, which holds oifname"),
    Case("ct-reg1-over-oifname-reg1", "unlisted+misread",
         exprs=lambda: [X.meta_load(C.META_OIFNAME, 1), X.ct_load(C.CT_STATE, 1),
                        X.cmp(C.CMP_NEQ, ZERO, 1)] + ACCEPT,
         note="ct load over a pending oifname load in reg 1"),
    Case("oifname-reg9", "ok", exprs=lambda: oifname(9, padded=False) + ACCEPT,
         note="oifname in NFT_REG32_01"),
    Case("oifname-reg12", "ok", exprs=lambda: oifname(12) + ACCEPT,
         note="oifname in NFT_REG32_04 (dumped as reg 2)"),
    Case("shift-then-cmp", "unparsable",
         exprs=lambda: [X.meta_load(C.META_MARK, 1),
                        X.build("bitwise", sreg=1, dreg=1, len=4, op=C.BITWISE_RSHIFT,
                                data=struct.pack("=I", 8)),
                        X.cmp(C.CMP_EQ, struct.pack("=I", 1), 1)] + ACCEPT,
         note="meta mark >> 8 == 1: 1.8.9–1.8.11 read an uninitialised length (either way), "
              "1.8.12+ refuse it"),
    Case("immediate-then-cmp", "unparsable",
         exprs=lambda: [X.immediate_data(S_EST_REL, 1), X.cmp(C.CMP_EQ, S_EST_REL, 1)] + ACCEPT,
         note="cmp on a register an immediate loaded"),
]

NFT_ONLY = [
    Case("nft-ct-state", "unparsable", nft="ct state established,related accept"),
    Case("nft-oifname-ct-state", "unlisted+misread",
         nft='oifname "wt0" ct state established,related counter accept'),
    Case("nft-dport-then-ct-state", "unlisted+misread", nft="tcp dport 22 ct state new accept"),
    Case("nft-fib", "unparsable", nft="fib daddr type local accept"),
    Case("nft-rt", "unparsable", nft="rt mtu 1000 accept"),
    Case("nft-socket", "unparsable", nft="socket transparent 1 accept", chain="INPUT",
         placements=("top",), missing="nft_socket"),
    Case("nft-numgen", "unparsable", nft="numgen inc mod 2 0 accept"),
    Case("nft-jhash", "unparsable", nft="jhash ip saddr mod 2 0 accept"),
    Case("nft-exthdr-tcp-option", "unparsable", nft="tcp option maxseg size 1000 accept"),
    Case("nft-exthdr-after-l4proto", "unlisted+misread",
         nft="meta l4proto tcp tcp option maxseg size 1000 accept"),
    Case("nft-meta-skuid", "unparsable", nft="meta skuid 0 accept"),
    Case("nft-ether-saddr", "unparsable", nft="ether saddr 00:11:22:33:44:55 accept"),
    Case("nft-ip-length", "unparsable", nft="ip length 100 accept"),
    Case("nft-ip-dscp", "unparsable", nft="ip dscp 1 accept"),
    Case("nft-th-dport", "unparsable", nft="th dport 53 accept"),
    # 1.8.10 reads `meta mark set <constant>` as -j MARK (1.8.9: "meta sreg key not supported")
    Case("nft-meta-mark-set", {"1.8.9": "unparsable", "*": "ok"}, nft="meta mark set 1"),
    Case("nft-mark-set-then-match", {"1.8.9": "unparsable", "*": "misread"},
         nft="meta mark set 1 meta mark 1 accept",
         note="MARK target, then a verdict replaces it (1.8.10+)"),
    Case("nft-mark-set-from-mark", "unparsable", nft="meta mark set meta mark or 0x10"),
    # a shift: 1.8.9–1.8.11 read an uninitialised length, 1.8.12+ refuse it
    Case("nft-mark-shift", {"1.8.12": "unparsable", "1.8.13": "unparsable", "*": "unparsable"},
         nft="meta mark set meta mark << 8"),
    Case("nft-nftrace-off", "unparsable", nft="meta nftrace set 0"),
    Case("nft-nftrace-then-accept", "misread", nft="meta nftrace set 1 accept"),
    Case("nft-log-group-accept", "misread", nft="log group 1 accept"),
    Case("nft-address-range-eq", "misread", nft="ip saddr 10.0.0.1-10.0.0.9 accept"),
    Case("nft-mark-lt", "unlisted+misread", nft="meta mark < 5 accept"),
    Case("nft-frag-df", "misread", nft="ip frag-off & 0x4000 != 0 accept"),
    Case("nft-udp-length", "misread", nft="udp length 100 accept"),
    Case("nft-tcp-dport-lt", "ok", nft="tcp dport < 1024 accept"),
    Case("nft-ttl-gt", "ok", nft="ip ttl > 5 accept"),
    Case("nft-ttl-lte-255", "unparsable", nft="ip ttl <= 255 accept"),
    Case("nft-proto-neq", "ok", nft="ip protocol != 6 accept"),
    Case("nft-sport-dport", "ok", nft="tcp dport 22 tcp sport 1024 accept"),
    Case("nft-concat-set", "misread", nft="ip saddr . tcp dport { 10.0.0.1 . 22 } accept"),
    Case("nft-map-mark", "unparsable", nft="meta mark set ip saddr map { 10.0.0.1 : 1 }"),
    Case("nft-ct-mark", "unparsable", nft="ct mark 1 accept"),
    Case("nft-iiftype", "unparsable", nft="meta iiftype ether accept"),
    Case("nft-udp-dport-range", "ok", nft="udp dport 1000-2000 accept"),
    # nft_parse_icmp keeps type 255 (xt_icmp's "any") for a code alone: all ICMP
    Case("nft-icmp-code", "misread", nft="icmp code 3 accept"),
    # found by the differential generator (tests/fwgate_testing/differential.py)
    Case("nft-tcp-flags-eq", "crash", nft="tcp flags == syn accept"),
    Case("nft-tcp-flags-neq", "crash", nft="tcp flags != syn accept"),
    Case("nft-tcp-flags-zero", "crash", nft="tcp flags == 0x0 accept"),
    Case("nft-th-flags-raw", "crash", nft="meta l4proto tcp @th,104,8 0x2 accept"),
    Case("nft-tcp-flags-masked", "ok", nft="tcp flags & (syn | ack) == syn accept"),
    Case("nft-icmp-type-neq", "misread", nft="icmp type != echo-request drop"),
    Case("nft-icmp-type-gt", "misread", nft="icmp type > 3 drop"),
    Case("nft-icmp-type-255", "misread", nft="icmp type 255 accept"),
    Case("nft-port-mask", "misread", nft="tcp dport & 0xff00 == 0x100 accept"),
    Case("nft-saddr-continue", "ok", nft="ip saddr 10.0.0.1 continue"),
    Case("nft-nflog-goto", "misread", nft="log group 1 goto KUBE-ROUTER-FORWARD",
         note="NFLOG's options after -j: every sync fails"),
    # a base chain iptables does not know: dropped from its cache with its rules
    Case("nft-foreign-base-chain", "ok", nft="ct state new accept", chain="NB",
         setup=(("nft", "add chain ip filter NB { type filter hook forward priority 10; }"),),
         placements=("top",)),
    Case("nft-nat-ct-state", "unparsable", nft="ct state new accept", table="nat",
         chain="POSTROUTING", placements=("top",)),
    Case("nft-nftrace-on", "ok", nft="meta nftrace set 1"),
    Case("nft-ct-mark-set", "unlisted", nft="ct mark set 1"),
    Case("nft-reject", "unlisted", nft="reject"),
    Case("nft-quota", "unlisted", nft="quota 100 bytes"),
    Case("nft-notrack", "unlisted", nft="notrack"),
    Case("nft-log", "unlisted", nft='log prefix "x "'),
    Case("nft-log-group", "ok", nft="log group 1"),
    Case("nft-limit", "ok", nft="limit rate 10/second accept"),
    Case("nft-limit-bytes", "unlisted", nft="limit rate 10 bytes/second accept"),
    Case("nft-limit-over", "unlisted", nft="limit rate over 10/second accept"),
    Case("nft-counter", "ok", nft="counter"),
    # continue: shown without a target, which is where the rule goes on to anyway
    Case("nft-counter-continue", "ok", nft="counter continue"),
    Case("nft-set-anonymous", "misread", nft="ip saddr { 10.0.0.1, 10.0.0.2 } accept"),
    Case("nft-set-interval", "misread", nft="ip saddr { 10.0.0.0/8, 192.168.0.0/16 } accept"),
    Case("nft-set-named", "misread", nft="ip saddr @allowed accept",
         setup=(("nft", "add set ip filter allowed { type ipv4_addr; }"),)),
    Case("nft-concatenation", "misread",
         nft="ip saddr . ip daddr { 10.0.0.1 . 10.0.0.2 } accept"),
    Case("nft-vmap", "misread", nft="ip saddr vmap { 10.0.0.1 : accept, 10.0.0.2 : drop }"),
    Case("nft-l4proto-set", "misread", nft="meta l4proto { tcp, udp } accept"),
    Case("nft-port-range", "ok", nft="tcp dport 1000-2000 accept"),
    Case("nft-port-range-negated", "ok", nft="tcp dport != 1000-2000 accept"),
    Case("nft-address-range", "unparsable", nft="ip saddr != 10.0.0.1-10.0.0.9 accept"),
    Case("nft-payload-write", "misread", nft="ip ttl set 64"),
    Case("nft-saddr-prefix", "ok", nft="ip saddr 10.0.0.0/8 accept"),
    Case("nft-saddr-mask", "ok", nft="ip saddr & 255.0.255.0 == 10.0.1.0 accept"),
    Case("nft-iifname-wildcard", "ok", nft='iifname "eth*" accept'),
    Case("nft-meta-iif", "ok", nft="meta iif lo accept"),
    Case("nft-meta-mark", "ok", nft="meta mark & 0xff == 0x1 accept"),
    Case("nft-pkttype", "ok", nft="meta pkttype broadcast accept"),
    Case("nft-tcp-flags", "ok", nft="tcp flags syn accept"),
    Case("nft-icmp-type", "ok", nft="icmp type echo-request accept"),
    Case("nft-ttl", "ok", nft="ip ttl 5 accept"),
    Case("nft-frag", "ok", nft="ip frag-off & 0x1fff != 0 drop"),
    Case("nft-jump", "ok", nft="ip saddr 10.0.0.1 jump KUBE-ROUTER-FORWARD"),
    Case("nft-goto", "ok", nft="ip saddr 10.0.0.1 goto KUBE-ROUTER-FORWARD"),
    Case("nft-queue", "unlisted", nft="queue num 1", missing="nft_queue"),
    Case("nft-masquerade", "unlisted", nft='oifname "wt0" masquerade', table="nat",
         chain="POSTROUTING", placements=("top",)),
]

IPTABLES = [
    Case("ipt-comment", "ok", iptables=("-m", "comment", "--comment", "hello", "-j", "ACCEPT")),
    Case("ipt-conntrack", "ok", iptables=("-o", "wt0", "-m", "conntrack", "--ctstate",
                                          "RELATED,ESTABLISHED", "-j", "ACCEPT")),
    Case("ipt-state", "ok", iptables=("-m", "state", "--state", "NEW", "-j", "ACCEPT")),
    Case("ipt-multiport", "ok", iptables=("-p", "tcp", "-m", "multiport", "--dports", "80,443",
                                          "-j", "ACCEPT")),
    Case("ipt-mark", "ok", iptables=("-m", "mark", "--mark", "0x10/0x10", "-j", "DROP")),
    Case("ipt-limit", "ok", iptables=("-m", "limit", "--limit", "5/min", "-j", "ACCEPT")),
    Case("ipt-log", "ok", iptables=("-j", "LOG", "--log-prefix", "x ")),
    Case("ipt-nflog", "ok", iptables=("-j", "NFLOG", "--nflog-group", "2")),
    Case("ipt-reject", "ok", iptables=("-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset")),
    Case("ipt-addrtype", "ok", iptables=("-m", "addrtype", "--dst-type", "LOCAL", "-j", "ACCEPT")),
    Case("ipt-iprange", "ok", iptables=("-m", "iprange", "--src-range", "10.0.0.1-10.0.0.9",
                                        "-j", "ACCEPT")),
    Case("ipt-tcp-ports", "ok", iptables=("-p", "tcp", "--sport", "1024:65535", "--dport", "22",
                                          "-j", "ACCEPT")),
    Case("ipt-icmp", "ok", iptables=("-p", "icmp", "--icmp-type", "echo-request", "-j", "ACCEPT")),
    Case("ipt-addresses", "ok", iptables=("-s", "10.0.0.0/8", "!", "-d", "10.1.0.0/16",
                                          "-i", "eth+", "-j", "RETURN")),
    Case("ipt-tcpmss", "ok", iptables=("-p", "tcp", "--tcp-flags", "SYN,RST", "SYN", "-j",
                                       "TCPMSS", "--clamp-mss-to-pmtu")),
    Case("ipt-connmark", "ok", iptables=("-m", "connmark", "--mark", "0x1", "-j", "ACCEPT")),
    Case("ipt-set", "ok", iptables=("-m", "set", "--match-set", "foo", "src", "-j", "ACCEPT"),
         setup=(("ipset", "create", "foo", "hash:ip"),),
         missing="ip_set (needs the ipset tool and the kernel's ip_set module)"),
]

IP6 = [
    Case("ip6-netbird-oif-ct", "unparsable", family="ip6",
         exprs=lambda: P.forward_oif_rule("wt0"), userdata=P.TAG_FORWARD_OIF,
         note="Netbird's `frwacceptoif` shape in ip6 filter"),
    Case("ip6-nexthdr", "misread", family="ip6", nft="ip6 nexthdr tcp accept"),
    Case("ip6-nexthdr-neq", "misread", family="ip6", nft="ip6 nexthdr != tcp accept"),
    Case("ip6-icmpv6-type-255", "unparsable", family="ip6", nft="icmpv6 type 255 accept"),
    Case("ip6-hoplimit", "ok", family="ip6", nft="ip6 hoplimit 1 accept"),
    Case("ip6-flowlabel", "unparsable", family="ip6", nft="ip6 flowlabel 5 accept"),
    Case("ip6-icmpv6-code", "unparsable", family="ip6", nft="icmpv6 code 3 accept"),
    Case("ip6-saddr", "ok", family="ip6", nft="ip6 saddr ::1 accept"),
    Case("ip6-conntrack", "ok", family="ip6",
         iptables=("-o", "wt0", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
                   "-j", "ACCEPT")),
]

CORPUS = NETBIRD + REGISTERS + NFT_ONLY + IPTABLES + IP6
PARAMS = [pytest.param(c, p, id=f"{c.id}-{p}") for c in CORPUS for p in c.placements]

RESULTS: list[dict] = []


def _tools(family: str) -> tuple[str, str]:
    return ("ip6tables", "ip6tables-save") if family == "ip6" else ("iptables", "iptables-save")


def _add_rule(ns: str, case: Case, placement: str) -> subprocess.CompletedProcess | None:
    """Add the case's rule; the failed command if the kernel refused it."""
    append = placement == "after"
    iptables, _ = _tools(case.family)
    if case.nft:
        verb = "add" if append else "insert"
        done = sh(ns, "nft", f"{verb} rule {case.family} {case.table} {case.chain} {case.nft}",
                  check=False)
        return done if done.returncode else None
    if case.iptables:
        where = ["-A", case.chain] if append else ["-I", case.chain, "1"]
        done = sh(ns, iptables, "-t", case.table, *where, *case.iptables, check=False)
        return done if done.returncode else None

    def add() -> None:
        with NfSocket() as sock:
            sock.batch([P.rule_msg(FAMILIES[case.family], case.table, case.chain, case.exprs(),
                                   case.userdata, append=append)])
    in_netns(ns, add)
    return None


def _category(report, rule) -> str:
    """unparsable | unlisted | misread | ok, or "unlisted+misread"."""
    bad = next((f for f in report.findings if f.rule.handle == rule.handle), None)
    wrong = any(f.rule.handle == rule.handle for f in report.misread)
    if bad and bad.iptables_error == TCP_FLAGS_CRASH:
        return "crash"   # parses (-C works), listing it crashes
    if bad and bad.iptables_error:
        return "unparsable"
    return "+".join(c for c, yes in (("unlisted", bad), ("misread", wrong)) if yes) or "ok"


def _outcome(done: subprocess.CompletedProcess, table: str) -> str:
    lines = done.stdout.splitlines()
    saved = f"*{table}" in lines and "COMMIT" in lines[lines.index(f"*{table}"):]
    return "saved" if saved and done.returncode == 0 else "aborted" if done.returncode else "left out"


def _shown(values) -> str:
    return "/".join(str(v) for v in sorted(values, key=str)) if values else "?"


@pytest.fixture(scope="module")
def results():
    yield RESULTS
    if os.environ.get("FWGATE_UPDATE_DOCS") == "1" and RESULTS:
        _write_docs(RESULTS)


@pytest.mark.parametrize("case,placement", PARAMS)
def test_corpus(netns, results, case: Case, placement: str):
    iptables, _ = _tools(case.family)
    sh(netns, iptables, "-N", "KUBE-ROUTER-FORWARD")
    sh(netns, iptables, "-A", "FORWARD", *KR_MATCH)
    if case.chain in BUILTIN_CHAINS.get((case.family, case.table), {}):
        sh(netns, iptables, "-t", case.table, "-P", case.chain, "ACCEPT")  # made lazily
    for command in case.setup:
        done = sh(netns, *command, check=False)
        if done.returncode and case.missing:
            pytest.skip(f"cannot set up ({case.missing}): {done.stderr.strip()}")
        assert done.returncode == 0, done.stderr
    failed = _add_rule(netns, case, placement)
    if failed is not None:
        if case.missing:
            pytest.skip(f"this kernel refuses it ({case.missing}): {failed.stderr.strip()}")
        pytest.fail(f"could not add the rule: {failed.stderr.strip()}")

    def take():
        with NfSocket() as sock:
            return snapshot(sock, families=(case.family,))
    snap = in_netns(netns, take)
    table = snap.tables[TableRef(case.family, case.table)]
    filter_rules = snap.tables[TableRef(case.family, "filter")].rules_of("FORWARD")
    kr = next(r for r in filter_rules if r.exprs and r.exprs[-1].fields.get("data") ==
              ("jump", "KUBE-ROUTER-FORWARD"))
    ours = [r for r in table.rules_of(case.chain) if r.handle != kr.handle]
    assert len(ours) == 1, f"expected the case's one rule in {case.chain}: {ours}"
    rule = ours[0]

    calls = {"check": Call(case.family, "filter", "check", "FORWARD", tuple(jump_spec("FORWARD"))),
             "first": Call(case.family, "filter", "first", "KUBE-ROUTER-FORWARD"),
             "list": Call(case.family, case.table, "list", case.chain),
             "save": Call(case.family, case.table, "save")}
    wrong: list[str] = []
    row = {"case": case, "placement": placement, "versions": {}}
    for version, bindir in VERSIONS.items():
        profile = profile_for(version)
        report = analyse(snap, (profile,))
        actual = {}
        for name, call in calls.items():
            done = subprocess.run(["ip", "netns", "exec", netns, f"{bindir}/{call.tool}", *call.args],
                                  capture_output=True, text=True, errors="replace")
            actual[name] = _outcome(done, case.table) if name == "save" else done.returncode
            actual[name + ".err"] = done.stderr.strip()
        predicted = {name: predict(report, snap, call) for name, call in calls.items()}
        category = _category(report, rule)
        findings = [f for f in (*report.findings, *report.misread) if f.rule.handle == rule.handle]
        row["versions"][version] = {"actual": actual, "predicted": predicted, "category": category,
                                    "reason": "; ".join(f.reason for f in findings)}
        for name in calls:
            if actual[name] not in predicted[name]:
                wrong.append(f"{version} {calls[name].text}: reader {_shown(predicted[name])}, "
                             f"iptables {actual[name]} {actual.get(name + '.err', '')[:200]}")
        if category != case.expected(version):
            wrong.append(f"{version}: reader says {category}, the case is {case.expected(version)}: "
                         f"{findings} {read_rule(rule, profile)}")
        # The cross-check, as `fwgate compat` runs it: no disagreement with this binary.
        binary = version_of(asked(f"{bindir}/iptables", "--iptables"))
        assert binary.version == version, binary
        verdict = cross_check(binary, netns, calls_for(snap, report))
        wrong += [f"{version} cross-check: {d}" for d in compare(report, snap, verdict)]
    results.append(row)
    assert not wrong, "\n".join(wrong)


# --- arptables and ebtables -------------------------------------------------------------

@dataclass(frozen=True)
class FamilyCase:
    family: str     # arp | bridge
    nft: str        # rule text for `nft insert rule FAMILY filter CHAIN`
    expect: str | dict

    @property
    def chain(self) -> str:
        return "INPUT" if self.family == "arp" else "FORWARD"

    @property
    def tool(self) -> str:
        return "arptables" if self.family == "arp" else "ebtables"

    def expected(self, version: str) -> str:
        return Case.expected(self, version)  # type: ignore[arg-type]


FAMILY_CASES = [
    FamilyCase("arp", "meta mark 1 accept", "ok"),
    FamilyCase("arp", "arp operation request accept", "ok"),
    FamilyCase("arp", "arp htype 1 accept", "ok"),
    FamilyCase("arp", "arp plen 4 accept", "ok"),
    FamilyCase("arp", "arp plen 6 accept", "unparsable"),
    # 1.8.9/1.8.10 start from --h-length 0, so offset 14 is nothing to them; 1.8.11 from 6
    FamilyCase("arp", "arp saddr ip 10.0.0.1 accept",
               {"1.8.9": "unparsable", "1.8.10": "unparsable", "*": "ok"}),
    FamilyCase("arp", "arp hlen 6 arp saddr ip 10.0.0.1 accept", "ok"),
    FamilyCase("arp", "meta skuid 0 accept", "unparsable"),
    FamilyCase("arp", "limit rate 1/second accept", "unparsable"),      # an internal BUG: exit 1
    FamilyCase("arp", "quota 10 bytes", "unlisted"),
    FamilyCase("bridge", "ether saddr 00:11:22:33:44:55 accept", "ok"),
    FamilyCase("bridge", "ether saddr & ff:ff:ff:00:00:00 == 00:11:22:00:00:00 accept", "ok"),
    FamilyCase("bridge", "ether saddr { 00:11:22:33:44:55, 00:11:22:33:44:66 } accept", "ok"),
    FamilyCase("bridge", "ether saddr . ip saddr { 00:11:22:33:44:55 . 10.0.0.1 } accept", "ok"),
    FamilyCase("bridge", "ip saddr { 10.0.0.1, 10.0.0.2 } accept", "unparsable"),
    FamilyCase("bridge", "limit rate 1/second accept", "ok"),
    FamilyCase("bridge", 'iifname "eth0" accept', "ok"),
    FamilyCase("bridge", "ip saddr 10.0.0.1 accept", "misread"),
    FamilyCase("bridge", "meta protocol ip accept", "misread"),
    FamilyCase("bridge", "ip protocol tcp accept", "unparsable"),
    FamilyCase("bridge", "meta mark 1 accept", "unparsable"),
    FamilyCase("bridge", "meta skuid 0 accept", "unparsable"),
    FamilyCase("bridge", "meta iif lo accept", "unparsable"),  # 1.8.9/1.8.10: segfault
    FamilyCase("bridge", "tcp dport 22 accept", "unparsable"),
    FamilyCase("bridge", "numgen inc mod 2 0 accept", "unparsable"),
    FamilyCase("bridge", "log", "unlisted"),
]
FAMILY_RESULTS: list[dict] = []


@pytest.mark.parametrize("case", FAMILY_CASES, ids=[f"{c.family}-{c.nft}" for c in FAMILY_CASES])
def test_other_families(netns, results, case: FamilyCase):
    """arptables and ebtables: the same listing check, their own meta and header parsers;
    each version's `-L CHAIN` against the reader's prediction for it."""
    sh(netns, case.tool, "-A", case.chain, "-j", "ACCEPT")
    sh(netns, "nft", f"insert rule {case.family} filter {case.chain} {case.nft}")

    def take():
        with NfSocket() as sock:
            return snapshot(sock, families=(case.family,))
    snap = in_netns(netns, take)
    rule = snap.tables[TableRef(case.family, "filter")].rules_of(case.chain)[0]
    wrong, row = [], {"case": case, "versions": {}}
    for version, bindir in VERSIONS.items():
        listing = sh(netns, f"{bindir}/{case.tool}", "-L", case.chain, check=False)
        report = analyse(snap, (profile_for(version),))
        predicted = report.listing_exit(case.family, "filter", case.chain)
        category = _category(report, rule)
        row["versions"][version] = {"actual": listing.returncode, "predicted": predicted,
                                    "category": category, "reason": "; ".join(
                                        f.reason for f in (*report.findings, *report.misread))}
        if predicted != listing.returncode:
            wrong.append(f"{version}: reader {predicted}, {case.tool} {listing.returncode}: "
                         f"{listing.stderr.strip()[:200]}")
        if category != case.expected(version):
            wrong.append(f"{version}: reader says {category}, the case is {case.expected(version)}")
    FAMILY_RESULTS.append(row)
    assert not wrong, "\n".join(wrong)


# --- docs ---------------------------------------------------------------------------------

def _write_docs(rows: list[dict]) -> None:
    order = {c.id: i for i, c in enumerate(CORPUS)}
    places = ("before", "after", "top")
    rows = sorted(rows, key=lambda r: (order[r["case"].id], places.index(r["placement"])))
    versions = list(VERSIONS)
    head = " | ".join(f"{v}: -C / -S / save" for v in versions)
    lines = [f"| case | placement | rule | {head} | reader's reason (newest version) |",
             "| --- | --- | --- | " + " | ".join("---" for _ in versions) + " | --- |"]

    def cell(v: dict) -> str:
        a, p = v["actual"], v["predicted"]
        real = f"{a['check']} / {a['list']} / {a['save']}"
        same = all(a[k] in p[k] for k in ("check", "list", "save"))
        return f"{real} {'✓' if same else '✗ ' + ' / '.join(_shown(p[k]) for k in ('check', 'list', 'save'))}"

    for r in rows:
        newest = r["versions"][versions[-1]]
        reason = newest["reason"].replace("|", "\\|") or "—"
        what = r["case"].describe().replace("|", "\\|")
        cells = " | ".join(cell(r["versions"][v]) for v in versions)
        cats = {v: r["versions"][v]["category"] for v in versions}
        cat = newest["category"] if len(set(cats.values())) == 1 else \
            ", ".join(f"{v} {c}" for v, c in cats.items())
        lines.append(f"| `{r['case'].id}` | {r['placement']} | {what} | {cells} | {cat}: {reason} |")
    families = [f"| family | rule (nft) | {' | '.join(f'{v}: real / predicted' for v in versions)} "
                f"| reader's reason (newest version) |",
                "| --- | --- | " + " | ".join("---" for _ in versions) + " | --- |"]
    for r in FAMILY_RESULTS:
        c = r["case"]
        newest = r["versions"][versions[-1]]
        cells = " | ".join(f"{r['versions'][v]['actual']} / {r['versions'][v]['predicted']}"
                           for v in versions)
        families.append(f"| {c.family} | `{c.nft}` | {cells} | {newest['category']}: "
                        f"{newest['reason'].replace('|', chr(92) + '|') or '—'} |")
    with open(DOCS) as f:
        text = f.read()
    for name, table in (("corpus", lines), ("families", families)):
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        text = re.sub(f"{begin}.*?{end}", lambda m: f"{begin}\n" + "\n".join(table) + f"\n{end}",
                      text, flags=re.S)
    with open(DOCS, "w") as f:
        f.write(text)
