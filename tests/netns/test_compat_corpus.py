"""A corpus of rule encodings, each judged by the real iptables 1.8.9 and by the analyser.

For every case: a fresh namespace with kube-router's state built by real
iptables, the case's rule added (by netlink, nft or iptables) before or after
kube-router's jump, then kube-router's `iptables -C`, `iptables -S CHAIN` and
`iptables-save -t TABLE` run, and their exit codes compared with what the
analyser predicts from a snapshot of the same kernel state. The analyser's
verdict must also match the category the case is meant to exercise, so a case
that quietly turns harmless (nft optimising it away, say) fails too.

    FWGATE_UPDATE_DOCS=1 pytest tests/netns/test_compat_corpus.py

rewrites the results table in docs/compat.md.
"""
from __future__ import annotations

import os
import re
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from fwgate.netlink import consts as C
from fwgate.netlink import exprs as X
from fwgate import programmer as P
from fwgate.adapters.nfsock import NfSocket
from fwgate.netlink.consts import FAMILIES
from fwgate.adapters.nft import snapshot
from fwgate.compat.reader import analyse, read_rule
from fwgate.adapters.iptables import cross_check, find_iptables
from fwgate.compat.crosscheck import compare, managed
from fwgate.model import TableRef
from helpers import in_netns, sh

KR_COMMENT = "kube-router netpol - TEMCG2JMHZYE7H7T"
KR_MATCH = ["-m", "comment", "--comment", KR_COMMENT, "-j", "KUBE-ROUTER-FORWARD"]
DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "compat.md")

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
    expect: str                              # analyser's category: ok | misread | unlisted | unparsable
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
    Case("nft-meta-mark-set", "unparsable", nft="meta mark set 1"),
    Case("nft-nftrace-off", "unparsable", nft="meta nftrace set 0"),
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
    Case("nft-continue", "misread", nft="counter continue"),
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
    if bad and bad.iptables_error:
        return "unparsable"
    return "+".join(c for c, yes in (("unlisted", bad), ("misread", wrong)) if yes) or "ok"


@pytest.fixture(scope="module")
def results():
    yield RESULTS
    if os.environ.get("FWGATE_UPDATE_DOCS") == "1" and RESULTS:
        _write_docs(RESULTS)


@pytest.mark.parametrize("case,placement", PARAMS)
def test_corpus(netns, results, case: Case, placement: str):
    iptables, iptables_save = _tools(case.family)
    sh(netns, iptables, "-N", "KUBE-ROUTER-FORWARD")
    sh(netns, iptables, "-A", "FORWARD", *KR_MATCH)
    sh(netns, iptables, "-t", case.table, "-P", case.chain, "ACCEPT")  # iptables makes chains lazily
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

    # The judge: real iptables.
    check = sh(netns, iptables, "-t", "filter", "-C", "FORWARD", *KR_MATCH, check=False)
    listing = sh(netns, iptables, "-t", case.table, "-S", case.chain, check=False)
    saved = sh(netns, iptables_save, "-t", case.table, check=False)
    save_outcome = ("saved" if f"*{case.table}" in saved.stdout and "COMMIT" in saved.stdout
                    and saved.returncode == 0 else "aborted" if saved.returncode else "left out")

    # The analyser, on a snapshot of the same kernel state.
    def take():
        with NfSocket() as sock:
            return snapshot(sock, families=(case.family,))
    snap = in_netns(netns, take)
    report = analyse(snap)
    table = next(t for ref, t in snap.tables.items() if ref.name == case.table)
    forward = next(t for ref, t in snap.tables.items() if ref.name == "filter").rules_of("FORWARD")
    kr = next(r for r in forward if r.exprs and r.exprs[-1].fields.get("data") ==
              ("jump", "KUBE-ROUTER-FORWARD"))
    ours = [r for r in table.rules_of(case.chain) if r.handle != kr.handle]
    assert len(ours) == 1, f"expected the case's one rule in {case.chain}: {ours}"
    rule = ours[0]
    blocker = report.check_blocker(case.family, "filter", "FORWARD", kr.position)
    predicted = {"check": 3 if blocker else 0,
                 "list": report.listing_exit(case.family, case.table, case.chain),
                 "save": report.save_outcome(case.family, case.table)}
    actual = {"check": check.returncode, "list": listing.returncode, "save": save_outcome}
    category = _category(report, rule)
    findings = [f for f in (*report.findings, *report.misread) if f.rule.handle == rule.handle]
    results.append({"case": case, "placement": placement, "actual": actual,
                    "predicted": predicted, "category": category,
                    "reason": "; ".join(f.reason for f in findings)})

    assert predicted == actual, (
        f"analyser {predicted} != iptables {actual}\n-C: {check.stderr}\n-S: {listing.stderr}"
        f"\nsave: {saved.stdout[-300:]}{saved.stderr}\nverdict: {read_rule(rule)}")
    assert category == case.expect, f"{case.id}: analyser says {category}: {findings}"

    # The same comparison through the cross-check module, over every managed chain.
    verdict = cross_check(find_iptables("iptables"), netns, managed(snap.tables, report))
    assert compare(report, verdict) == []
    assert not verdict.skipped or all("not one of" in s for s in verdict.skipped)


# --- arptables and ebtables -------------------------------------------------------------

@dataclass(frozen=True)
class FamilyCase:
    family: str     # arp | bridge
    nft: str        # rule text for `nft insert rule FAMILY filter CHAIN`
    expect: str

    @property
    def chain(self) -> str:
        return "INPUT" if self.family == "arp" else "FORWARD"

    @property
    def tool(self) -> str:
        return "arptables" if self.family == "arp" else "ebtables"


FAMILY_CASES = [
    FamilyCase("arp", "meta mark 1 accept", "ok"),
    FamilyCase("arp", "arp operation request accept", "ok"),
    FamilyCase("arp", "meta skuid 0 accept", "unparsable"),
    FamilyCase("arp", "limit rate 1/second accept", "unparsable"),      # an internal BUG: exit 1
    FamilyCase("arp", "quota 10 bytes", "unlisted"),
    FamilyCase("bridge", "ether saddr 00:11:22:33:44:55 accept", "ok"),
    FamilyCase("bridge", "ether saddr & ff:ff:ff:00:00:00 == 00:11:22:00:00:00 accept", "ok"),
    FamilyCase("bridge", "ether saddr { 00:11:22:33:44:55, 00:11:22:33:44:66 } accept", "ok"),
    FamilyCase("bridge", "limit rate 1/second accept", "ok"),
    FamilyCase("bridge", 'iifname "eth0" accept', "ok"),
    FamilyCase("bridge", "ip saddr 10.0.0.1 accept", "misread"),
    FamilyCase("bridge", "meta protocol ip accept", "misread"),
    FamilyCase("bridge", "ip protocol tcp accept", "unparsable"),
    FamilyCase("bridge", "meta mark 1 accept", "unparsable"),
    FamilyCase("bridge", "meta skuid 0 accept", "unparsable"),
    FamilyCase("bridge", "meta iif lo accept", "unparsable"),           # ebtables segfaults
    FamilyCase("bridge", "tcp dport 22 accept", "unparsable"),
    FamilyCase("bridge", "numgen inc mod 2 0 accept", "unparsable"),
    FamilyCase("bridge", "log", "unlisted"),
]
FAMILY_RESULTS: list[dict] = []


@pytest.mark.parametrize("case", FAMILY_CASES, ids=[f"{c.family}-{c.nft}" for c in FAMILY_CASES])
def test_other_families(netns, results, case: FamilyCase):
    """arptables and ebtables: the same listing check, their own meta and header parsers."""
    sh(netns, case.tool, "-A", case.chain, "-j", "ACCEPT")
    sh(netns, "nft", f"insert rule {case.family} filter {case.chain} {case.nft}")
    listing = sh(netns, case.tool, "-L", case.chain, check=False)

    def take():
        with NfSocket() as sock:
            return snapshot(sock, families=(case.family,))
    snap = in_netns(netns, take)
    report = analyse(snap)
    rule = snap.tables[TableRef(case.family, "filter")].rules_of(case.chain)[0]
    predicted = report.listing_exit(case.family, "filter", case.chain)
    category = _category(report, rule)
    FAMILY_RESULTS.append({"case": case, "actual": listing.returncode, "predicted": predicted,
                           "category": category, "reason": "; ".join(
                               f.reason for f in (*report.findings, *report.misread))})
    assert predicted == listing.returncode, listing.stderr
    assert category == case.expect


# --- docs ---------------------------------------------------------------------------------

def _write_docs(rows: list[dict]) -> None:
    order = {c.id: i for i, c in enumerate(CORPUS)}
    places = ("before", "after", "top")
    rows = sorted(rows, key=lambda r: (order[r["case"].id], places.index(r["placement"])))
    lines = ["| case | placement | rule | iptables 1.8.9: -C / -S / save | analyser: -C / -S / save "
             "| analyser's reason |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        a, p = r["actual"], r["predicted"]
        cell = lambda d: f"{d['check']} / {d['list']} / {d['save']}"  # noqa: E731
        reason = r["reason"].replace("|", "\\|") or "—"
        what = r["case"].describe().replace("|", "\\|")
        lines.append(f"| `{r['case'].id}` | {r['placement']} | {what} | {cell(a)} | {cell(p)} "
                     f"| {r['category']}: {reason} |")
    families = ["| family | rule (nft) | `-L CHAIN` exit: real / predicted | analyser's reason |",
                "| --- | --- | --- | --- |"]
    for r in FAMILY_RESULTS:
        c = r["case"]
        families.append(f"| {c.family} | `{c.nft}` | {r['actual']} / {r['predicted']} "
                        f"| {r['category']}: {r['reason'].replace('|', chr(92) + '|') or '—'} |")
    with open(DOCS) as f:
        text = f.read()
    for name, table in (("corpus", lines), ("families", families)):
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        text = re.sub(f"{begin}.*?{end}", f"{begin}\n" + "\n".join(table) + f"\n{end}",
                      text, flags=re.S)
    with open(DOCS, "w") as f:
        f.write(text)
