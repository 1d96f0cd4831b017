"""Which rules iptables-nft cannot read, and why: one model of its reader, with the few
differences between versions 1.8.9 … 1.8.13 as a Profile (profiles.py). Pure:
snapshots in, reports out.

iptables-nft reads the kernel's rules back in three steps, and each can go wrong:

1. Its cache keeps only the tables it has names for (filter, nat, mangle, raw,
   security; arptables' filter; ebtables' filter, nat and, from 1.8.10, broute) and,
   in them, base chains whose name, hook, priority and type are its built-in ones
   (nft-cache.c nft_cache_add_base_chain): any other base chain, and its rules, it
   never sees.
2. Listing (`-S`, `-L`, `iptables-save`) checks every expression of the chain (the
   table, for `-S` without a chain and for iptables-save) against a fixed list
   (nft.c nft_is_expr_compatible). Anything else: "chain `X' in table `T' is
   incompatible, use 'nft' tool." (exit 1); iptables-save leaves the table out.
3. Parsing a rule (`-C`/`-D` parse each rule of the chain up to the one they look
   for; listing parses every rule) walks the expressions and tracks what each
   register holds (nft_rule_to_iptables_command_state). Expressions it has no case
   for (ct, fib, rt, socket, numgen, ...) are skipped, so the register they load stays
   "undefined" to it and the cmp reading it fails: "Error: cmp sreg undef" / "Parsing
   nftables rule failed" (exit 3). Other errors: meta keys and header fields it has
   no iptables equivalent for, and so on.

What it silently gets wrong is a "misread": set lookups and header rewrites it drops,
comparisons it reads as equality, a cmp reading a register that a skipped expression
loaded while an earlier load still sits in iptables' idea of that register (its
register map gives NFT_REG32_xx the slot xx, so NFT_REG32_01 shares NFT_REG_1's), ...
kube-router's restore writes misread rules back as iptables read them.

Speed: a rule's verdict depends on its expressions' shape, not on its addresses,
ports, comments or jump targets; verdicts are memoised per shape (`verdicts()`), and
the shape is read from the kernel's bytes without decoding most expressions.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from ..model import Expr, Rule, Snapshot, Table, TableRef
from ..netlink import consts as C
from ..netlink import registers
from ..netlink.registers import BYTEORDER
from ..netlink.attrs import attr_str, iter_packed
from ..netlink.exprs import decode_fields, element_bounds, split_expressions
from .equivalents import iptables_equivalent
from .impact import (
    KUBE_ROUTER_JUMPS, SYNC_EFFECT, Impact, Setup, after_sync, impacts, jump_spec,
)
from .profiles import BY_VERSION, OLDEST, PROFILES, Profile, profile_for
from .saveline import saved_line

# Tables iptables-nft has names for (nft.c xtables_ipv4/xtables_arp/xtables_bridge);
# bridge broute only from 1.8.10 (see tables_named()).
IPTABLES_TABLES: dict[str, tuple[str, ...]] = {
    "ip": ("filter", "nat", "mangle", "raw", "security"),
    "ip6": ("filter", "nat", "mangle", "raw", "security"),
    "arp": ("filter",),
    "bridge": ("filter", "nat", "broute"),
}
XT_EXPRESSIONS = ("match", "target")

# iptables-nft's own priorities (nft.c; security is its 150, not the kernel's 50) and
# ebtables' (linux/netfilter_bridge.h NF_BR_PRI_*).
_PRI_RAW, _PRI_MANGLE, _PRI_NAT_DST, _PRI_FILTER, _PRI_SECURITY, _PRI_NAT_SRC = \
    -300, -150, -100, 0, 150, 100
_BR_PRI_FIRST, _BR_PRI_NAT_DST_BRIDGED, _BR_PRI_FILTER_BRIDGED = -2**31, -300, -200
_BR_PRI_NAT_DST_OTHER, _BR_PRI_NAT_SRC = 100, 300
_NF_ARP_IN, _NF_ARP_OUT = 0, 1
_PRE, _IN, _FWD, _OUT, _POST = (C.NF_INET_PRE_ROUTING, C.NF_INET_LOCAL_IN, C.NF_INET_FORWARD,
                                C.NF_INET_LOCAL_OUT, C.NF_INET_POST_ROUTING)
_IP_CHAINS = {
    "raw": {"PREROUTING": (_PRE, _PRI_RAW, "filter"), "OUTPUT": (_OUT, _PRI_RAW, "filter")},
    "mangle": {"PREROUTING": (_PRE, _PRI_MANGLE, "filter"), "INPUT": (_IN, _PRI_MANGLE, "filter"),
               "FORWARD": (_FWD, _PRI_MANGLE, "filter"), "OUTPUT": (_OUT, _PRI_MANGLE, "route"),
               "POSTROUTING": (_POST, _PRI_MANGLE, "filter")},
    "filter": {"INPUT": (_IN, _PRI_FILTER, "filter"), "FORWARD": (_FWD, _PRI_FILTER, "filter"),
               "OUTPUT": (_OUT, _PRI_FILTER, "filter")},
    "security": {"INPUT": (_IN, _PRI_SECURITY, "filter"), "FORWARD": (_FWD, _PRI_SECURITY, "filter"),
                 "OUTPUT": (_OUT, _PRI_SECURITY, "filter")},
    "nat": {"PREROUTING": (_PRE, _PRI_NAT_DST, "nat"), "INPUT": (_IN, _PRI_NAT_SRC, "nat"),
            "POSTROUTING": (_POST, _PRI_NAT_SRC, "nat"), "OUTPUT": (_OUT, _PRI_NAT_DST, "nat")},
}
BUILTIN_CHAINS: dict[tuple[str, str], dict[str, tuple[int, int, str]]] = {
    **{(fam, t): chains for fam in ("ip", "ip6") for t, chains in _IP_CHAINS.items()},
    ("arp", "filter"): {"INPUT": (_NF_ARP_IN, _PRI_FILTER, "filter"),
                        "OUTPUT": (_NF_ARP_OUT, _PRI_FILTER, "filter")},
    ("bridge", "filter"): {"INPUT": (_IN, _BR_PRI_FILTER_BRIDGED, "filter"),
                           "FORWARD": (_FWD, _BR_PRI_FILTER_BRIDGED, "filter"),
                           "OUTPUT": (_OUT, _BR_PRI_FILTER_BRIDGED, "filter")},
    ("bridge", "nat"): {"PREROUTING": (_PRE, _BR_PRI_NAT_DST_BRIDGED, "filter"),
                        "OUTPUT": (_OUT, _BR_PRI_NAT_DST_OTHER, "filter"),
                        "POSTROUTING": (_POST, _BR_PRI_NAT_SRC, "filter")},
    ("bridge", "broute"): {"BROUTING": (_PRE, _BR_PRI_FIRST, "filter")},
}

# What breaks when iptables-nft meets the rule.
BREAKS_CHECK = "check"   # -C/-D of a rule further down the chain (kube-router's start-up check)
BREAKS_LIST = "list"     # -S/-L of the chain
BREAKS_SAVE = "save"     # iptables-save of the table

_LISTABLE = {"match", "target", "payload", "meta", "cmp", "counter", "immediate", "lookup", "range"}

# nf_tables constants the parser switches on
_LL, _NETWORK, _TRANSPORT = C.PAYLOAD_LL, C.PAYLOAD_NETWORK, C.PAYLOAD_TRANSPORT
_META_PARSED = {C.META_IIF, C.META_OIF, C.META_IIFNAME, C.META_OIFNAME, C.META_BRI_IIFNAME,
                C.META_BRI_OIFNAME, C.META_MARK, C.META_PKTTYPE}
_TCP, _UDP, _ICMP, _ICMPV6 = 6, 17, 1, 58  # IPPROTO_*
_ACTIONS = {"accept", "drop", "return", "jump", "goto"}
_META_KEY_ERROR = {"ip": "unknown ipv4 meta key", "ip6": "unknown ipv6 meta key",
                   "arp": "Unknown arp meta key"}
_IN_META = {C.META_IIF, C.META_IIFNAME, C.META_BRI_IIFNAME}
_OUT_META = {C.META_OIF, C.META_OIFNAME, C.META_BRI_OIFNAME}
# the interface names ebtables has options for
_BRIDGE_META_NAMES = {C.META_IIFNAME, C.META_OIFNAME, C.META_BRI_IIFNAME, C.META_BRI_OIFNAME}
_ARPHDR, _ETH_ALEN = 8, 6     # sizeof(struct arphdr), ETH_ALEN
_FRAG_MASK = b"\x1f\xff"      # what iptables writes for -f: frag-off & htons(0x1fff)
# Failures that end the program on the spot, with their exit status (subprocess-style);
# every other parse error ends it with exit 3 once the rule is parsed.
SEGFAULT = "ebtables crashes on meta iif/oif: segmentation fault"
UNKNOWN_SET = "BUG: lookup expression references unknown set"
# libxt_tcp.c print_tcpf() looks each set bit up in tcp_flag_names, which names FIN..URG
# only: a mask or value with ECE/CWR (0xc0) runs past the table's end. An unmasked
# `tcp flags == syn` gets the mask 0xff (nft-ruleparse.c nft_parse_transport, 1.8.10+;
# nft-shared.c in 1.8.9). Parsing (-C) never prints: only -S/-L and iptables-save crash.
TCP_FLAGS_CRASH = "printing TCP flags ECE/CWR (a flags test without a mask): segmentation fault"
_FATAL = {SEGFAULT: -11, TCP_FLAGS_CRASH: -11, "BUG: nft_parse_match() unknown family 3": 1,
          "BUG: nft_parse_limit() unknown family 3": 1, UNKNOWN_SET: 1}


def tables_named(family: str, profile: Profile) -> tuple[str, ...]:
    names = IPTABLES_TABLES.get(family, ())
    return names if profile.broute_table else tuple(n for n in names if n != "broute")


# --- results -------------------------------------------------------------------

@dataclass(frozen=True)
class ChainRef:
    family: str
    table: str
    chain: str


@dataclass(frozen=True)
class DroppedChain:
    """A base chain iptables-nft leaves out of its cache, with every rule in it."""

    family: str
    table: str
    chain: str
    why: str
    rules: int

    @property
    def after_sync(self) -> str | None:
        """kube-router restores ip (and ip6) filter from iptables-save's text without
        --noflush: a chain iptables never saw is not in it."""
        if self.table == "filter" and self.family in ("ip", "ip6"):
            return (f"deleted at every sync: kube-router's restore rebuilds {self.family} filter "
                    f"without the chain {self.chain} and its {self.rules} rule(s)")
        return None


class Misread(NamedTuple):
    index: int    # the culprit expression
    what: str     # what iptables gets wrong
    kind: str     # impact.after_sync's key


@dataclass(frozen=True)
class RuleVerdict:
    """How iptables-nft reads one rule. Indexes point into rule.exprs."""

    errors: tuple[tuple[int, str], ...] = ()     # (culprit, iptables' message): parsing fails
    unlisted: tuple[tuple[int, str], ...] = ()   # (index, what): listing refuses the chain
    misread: tuple[Misread, ...] = ()            # no error, a wrong rule
    unreadable: tuple[int, str] | None = None    # our own decoding failed: we cannot tell
    uncertain: bool = False                      # the binary reads uninitialised memory here
    crash: tuple[int, str] | None = None         # parses, but printing it crashes (-S, save)
    # it depends on compared values the shape does not keep (two bounds of one port, an
    # address under a mask): never memoised by shape
    values: bool = field(default=False, compare=False)

    @property
    def clean(self) -> bool:
        return not (self.errors or self.unlisted or self.misread or self.unreadable or self.crash)


_CLEAN = RuleVerdict()
_CLEAN_BY_VALUE = RuleVerdict(values=True)


@dataclass(frozen=True)
class Finding:
    rule: Rule
    reason: str                          # one line, in words an operator understands
    repairable: bool = False
    breaks: tuple[str, ...] = ()         # BREAKS_*; empty for a misread rule
    iptables_error: str | None = None    # what its rule parser prints after "Error: " (exit 3)
    unlisted: str | None = None          # the expression its listing check refuses (exit 1)
    impacts: tuple[Impact, ...] = ()     # the k3s calls it breaks
    versions: tuple[str, ...] = ()       # the iptables versions it holds for
    kind: str = ""                       # a misread's kind
    after_sync: str | None = None        # a misread rule after kube-router's next restore
    back: str | None = None              # what iptables writes back for the culprit test
    written_back: str | None = None      # the whole rule as iptables-save prints it (-A …)
    culprit: int = -1                    # a misread's culprit expression
    uncertain: bool = False              # the binary decides by reading uninitialised memory
    variants: tuple["Finding", ...] = ()  # each version's own, where versions differ

    def for_version(self, version: str) -> "Finding | None":
        if version not in self.versions:
            return None
        own = next((v for v in self.variants if version in v.versions), None)
        if own is None:
            return self
        # a misread's variant says what its own version writes back
        return replace(own, impacts=self.impacts,
                       after_sync=own.after_sync if own.written_back else self.after_sync)

    @property
    def blocking(self) -> bool:
        """It breaks a call k3s dies on."""
        return any(i.fatal for i in self.impacts)

    @property
    def key(self) -> tuple[str, str, str, int]:
        r = self.rule
        return r.family, r.table, r.chain, r.handle


@dataclass(frozen=True)
class CompatReport:
    managed_tables: tuple[TableRef, ...] = ()
    findings: tuple[Finding, ...] = ()             # rules iptables-nft fails on
    unlistable_chains: tuple[ChainRef, ...] = ()   # chains `iptables -S CHAIN` refuses
    misread: tuple[Finding, ...] = ()              # rules it reads without error, but wrongly
    dropped_chains: tuple[DroppedChain, ...] = ()  # base chains it never sees
    unnamed_tables: tuple[TableRef, ...] = ()      # iptables-managed, but no iptables names them
    versions: tuple[str, ...] = ()                 # the readers this report is for
    # where kube-router's `-m comment --comment "kube-router netpol - …" -j KUBE-ROUTER-X`
    # jump sits: (family, chain) -> position
    kube_router_jumps: dict = field(default_factory=dict, compare=False)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def blocking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.blocking)

    def for_version(self, version: str) -> "CompatReport":
        """The report of one reader (findings that hold for it)."""
        if self.versions == (version,):
            return self
        keep = lambda fs: tuple(x for x in (f.for_version(version) for f in fs) if x)  # noqa: E731
        findings = keep(self.findings)
        chains = tuple(dict.fromkeys(ChainRef(f.rule.family, f.rule.table, f.rule.chain)
                                     for f in findings))
        return replace(self, findings=findings, unlistable_chains=chains,
                       misread=keep(self.misread), versions=(version,))

    def without(self, rules: "Iterable[Rule]") -> "CompatReport":
        """The report as it reads once these rules were re-encoded (repaired)."""
        gone = {(r.family, r.table, r.chain, r.handle) for r in rules}
        if not gone:
            return self
        keep = tuple(f for f in self.findings if f.key not in gone)
        chains = tuple(dict.fromkeys(ChainRef(f.rule.family, f.rule.table, f.rule.chain)
                                     for f in keep))
        misread = tuple(f for f in self.misread if f.key not in gone)
        return replace(self, findings=keep, unlistable_chains=chains, misread=misread)

    @property
    def unsaveable_tables(self) -> tuple[TableRef, ...]:
        """Tables iptables-save leaves out (or aborts on)."""
        seen = dict.fromkeys(TableRef(c.family, c.table) for c in self.unlistable_chains)
        return tuple(seen)

    def _findings_in(self, family: str, table: str, chain: str | None = None) -> list[Finding]:
        return [f for f in self.findings if (f.rule.family, f.rule.table) == (family, table)
                and chain in (None, f.rule.chain)]

    def listing_exit(self, family: str, table: str, chain: str | None = None) -> int | None:
        """The exit code `iptables -t TABLE -S [CHAIN]` gives: 0; 1 when its expression
        check refuses the chain (it runs first); 3 when a rule fails to parse (or
        what a crash or an internal "BUG" gives); None when a rule is unreadable to us."""
        found = self._findings_in(family, table, chain)
        if any(f.unlisted for f in found):
            return 1
        failing = next((f for f in sorted(found, key=lambda f: (f.rule.chain, f.rule.position))
                        if f.iptables_error), None) if chain is None else \
            next((f for f in found if f.iptables_error), None)
        if failing:  # the first rule that fails to parse ends the listing
            return _FATAL.get(failing.iptables_error, 3)
        return None if found else 0

    def save_outcome(self, family: str, table: str) -> str | None:
        """What iptables-save does with the table: "saved"; "left out" (a "# Table
        `T' is incompatible" line instead, exit 0); "aborted" (a rule fails to
        parse, exit 3); None when we cannot tell."""
        found = self._findings_in(family, table)
        if any(f.unlisted for f in found):
            return "left out"
        if any(f.iptables_error for f in found):
            return "aborted"
        return None if found else "saved"

    def check_blocker(self, family: str, table: str, chain: str,
                      position: int | None = None) -> Finding | None:
        """The first rule before `position` (or anywhere, if None) on which
        `iptables -C`/`-D` fails while walking the chain."""
        found = [f for f in self.findings if BREAKS_CHECK in f.breaks
                 and (f.rule.family, f.rule.table, f.rule.chain) == (family, table, chain)
                 and (position is None or f.rule.position < position)]
        return min(found, key=lambda f: f.rule.position, default=None)


# --- which tables and chains --------------------------------------------------------

def is_managed(ref: TableRef, rules: tuple[Rule, ...] | list[Rule]) -> bool:
    """iptables-nft's table: one of its built-in table names, or one holding an xt
    match/target (the signal nft's "managed by iptables-nft" warning uses)."""
    if ref.name in IPTABLES_TABLES.get(ref.family, ()):
        return True
    return any(e.name in XT_EXPRESSIONS for r in rules for e in r.exprs)


def managed_tables(snapshot: Snapshot) -> list[TableRef]:
    refs = sorted(snapshot.tables, key=lambda r: (r.family, r.name))
    return [ref for ref in refs if ref.family in IPTABLES_TABLES
            and is_managed(ref, snapshot.tables[ref].rules)]


def dropped_chains(table: Table) -> dict[str, str]:
    """Base chains nft_cache_add_base_chain refuses: chain name -> why. A second base
    chain on a built-in hook is refused too (-EEXIST)."""
    builtin = BUILTIN_CHAINS.get((table.family, table.name))
    if builtin is None:
        return {}
    out: dict[str, str] = {}
    taken: set[int] = set()
    for c in table.chains:
        if c.hook is None:
            continue
        want = next(((name, spec) for name, spec in builtin.items() if spec[0] == c.hook), None)
        if want is None:
            out[c.name] = f"hook {C.HOOK_NAMES.get(c.hook, c.hook)} is not one of the table's"
        elif (c.name, c.priority, c.type) != (want[0], want[1][1], want[1][2]):
            out[c.name] = (f"base chain {c.type} hook {C.HOOK_NAMES.get(c.hook, c.hook)} priority "
                           f"{c.priority}: iptables' own is {want[0]}, {want[1][2]} priority "
                           f"{want[1][1]}")
        elif c.hook in taken:
            out[c.name] = "a second base chain on the same hook"
        else:
            taken.add(c.hook)
    return out


def _set_key_lengths(table: Table) -> dict[str, int]:
    """name -> NFTA_SET_KEY_LEN of the table's sets (ebtables' among needs it). The
    snapshot keeps a set's attributes back to back, without their padding."""
    out = {}
    for name, data in table.sets:
        for kind, start, end in iter_packed(data):
            if kind == C.NFTA_SET_KEY_LEN and end - start == 4:
                out[name] = int.from_bytes(data[start:end], "big")
                break
    return out


# --- the listing check -----------------------------------------------------------------

def _unlisted(expr: Expr, f: dict, profile: Profile) -> str | None:
    """Why nft_is_expr_compatible() rejects the expression, or None."""
    name = expr.name
    if name in _LISTABLE:
        return None
    if name == "bitwise":
        if profile.bitwise_strict and f.get("op", C.BITWISE_BOOL) != C.BITWISE_BOOL:
            return "bitwise expression (a shift or a two-register operation)"
        return None
    if name == "limit":
        if f.get("type", 0) == 0 and f.get("flags", 0) == 0:
            return None
        return "limit expression (a byte rate or `over`)"
    if name == "log":
        return None if "group" in f else "log expression without an nflog group"
    return f"{name or 'unnamed'} expression"


# --- the parser model ----------------------------------------------------------------

def _normalise(reg: int) -> int:
    """The kernel dumps 32-bit registers that start a 128-bit one (8, 12, 16, 20)
    as that register (1..4); iptables only ever sees the dumped number."""
    return (reg - 4) // 4 if reg in (8, 12, 16, 20) else reg


def _slot(reg: int) -> int | None:
    """iptables' register index (nft_xt_ctx_get_sreg): 1..4 are 128-bit registers at
    slots 1, 5, 9, 13; NFT_REG32_xx maps to slot xx. NFT_REG32_01 thus shares slot 1
    with NFT_REG_1, although in the kernel it is the second word of NFT_REG_1."""
    reg = _normalise(reg)
    if 0 <= reg <= 4:
        return (0, 1, 5, 9, 13)[reg]
    if 8 <= reg <= 23:
        return reg - 8
    return None


def _next_reg(reg: int, size: int) -> int:
    """nft_get_next_reg (ebtables' among): the 32-bit register after `size` bytes."""
    reg = _normalise(reg)
    if reg <= 4:
        reg = 8 + (reg - 1) * 4
    return reg + (size + 3) // 4


@dataclass(frozen=True)
class _Reg:
    """What iptables believes a register holds (struct nft_xt_ctx_reg). Replaced,
    never changed in place: an undefined one can be shared."""

    kind: str = "undef"      # undef | payload | immediate | meta
    src: int | None = None   # the expression iptables believes loaded it
    key: int = 0             # meta key
    base: int = 0            # payload base, offset and length
    offset: int = 0
    length: int = 0
    data: bytes = b""        # immediate data
    mask: bytes | None = None   # a bitwise applied to it (bitwise.set)


_UNDEF = _Reg()
_TARGETS_WITH_OPTIONS = ("NFLOG target", "MARK target", "x_tables target")
_OPS = {C.CMP_LT: "<", C.CMP_LTE: "<=", C.CMP_GT: ">", C.CMP_GTE: ">="}


def describe(expr: Expr) -> str:
    """A short name for an expression, for messages."""
    try:
        f = expr.fields
    except ValueError:
        return f"{expr.name} expression"
    if expr.name == "meta":
        key = C.META_KEYS.get(f.get("key"), f"key {f.get('key')}")
        return f"meta {key}{' set' if 'sreg' in f else ''} expression"
    if expr.name == "ct":
        key = C.CT_KEYS.get(f.get("key"), f"key {f.get('key')}")
        return f"ct {key}{' set' if 'sreg' in f else ''} expression"
    if expr.name == "payload":
        where = C.PAYLOAD_BASES.get(f.get("base"), f"base {f.get('base')}")
        return f"payload expression ({where}, offset {f.get('offset')})"
    return f"{expr.name or 'unnamed'} expression"


class _Parse:
    """One rule through a model of nft_rule_to_iptables_command_state()."""

    # Expressions it has a case for; it skips all others without a word.
    HANDLED = {"counter", "payload", "meta", "immediate", "bitwise", "cmp", "range", "lookup",
               "match", "target", "limit", "log"}

    def __init__(self, family: str, table: str, profile: Profile,
                 sets: dict[str, int] | None = None, chain: str = ""):
        self.family, self.table, self.p, self.sets = family, table, profile, sets
        self.chain = chain
        self.regs = [_UNDEF] * 17
        self.truth: dict[int, int] = {}     # kernel word -> expression that really wrote it
        self.skipped: set[int] = set()      # expressions iptables never looked at
        self.proto = 0                      # cs->fw.ip.proto, for transport header matches
        # arptables' hardware address length (--h-length): init_cs's 6 from 1.8.11
        self.arhln = 6 if profile.init_cs else 0
        self.action: tuple[int, str] | None = None   # the rule's target or verdict so far
        self.dropped_protocol: int | None = None     # ebtables' ignored `meta protocol`
        self.fields: dict[str, tuple] = {}  # cs->fw fields set so far: the last test wins
        self.field_at: dict[str, int] = {}  # the expression that set each
        self.crash: tuple[int, str] | None = None
        self.flags: tuple[int, int] | None = None   # the TCP flags iptables keeps, ECE/CWR
        self.values = False                 # the verdict read compared values (RuleVerdict)
        self.proto_neq = False              # some protocol test was `!=`: -p stays inverted
        self.icmp_any: list[tuple[int, int | None]] = []   # tests read as `any`: (where, code)
        self.icmp_codes: set[int] = set()   # codes a type+code test of the rule pins
        self.icmp_types: list[tuple[int, int, int]] = []   # one-byte type tests: op, value, where
        self.port_ranges: dict[str, list] = {}  # port -> [lo, hi, expression] as iptables has it
        # the protocol matches iptables makes of transport tests (icmp, tcp, udp) -> where
        self.l4_matches: dict[int, int] = {}
        self.errors: list[tuple[int, str]] = []
        self.misread: list[Misread] = []
        self.uncertain = False
        self.i = 0

    def error(self, message: str, at: int | None = None) -> None:
        self.errors.append((self.i if at is None else at, message))

    def wrong(self, what: str, kind: str, at: int | None = None) -> None:
        self.misread.append(Misread(self.i if at is None else at, what, kind))

    # registers
    def slot(self, num: int) -> int | None:
        slot = _slot(num)
        if slot is None:
            self.error("Unknown register requested")
        return slot

    def load(self, num: int, nbytes: int, **what) -> None:
        """A load iptables understands: it resets the register, then describes it."""
        slot = self.slot(num)
        if slot is not None:
            self.regs[slot] = _Reg(src=self.i, **what)
        self.write(num, nbytes, self.i)

    def write(self, num: int, length: int, origin: int | None) -> None:
        """What the kernel does: the load fills its words, whatever iptables believes."""
        for w in registers.span(num, length):
            if origin is None:
                self.truth.pop(w, None)
            else:
                self.truth[w] = origin

    def read(self, num: int) -> tuple[_Reg | None, int | None]:
        """iptables' view of a register, and the expression that really wrote it
        when iptables' view is wrong (a skipped or aliased load)."""
        slot = self.slot(num)
        if slot is None:
            return None, None
        r, actual = self.regs[slot], self.truth.get(registers.word(num))
        return r, (None if actual is None or actual == r.src else actual)

    def culprit(self, actual: int | None) -> int:
        return actual if actual is not None else self.i

    def aliased(self, r: _Reg, actual: int | None) -> None:
        if actual is None:
            return
        what = {"meta": "meta", "payload": "header"}.get(r.kind, r.kind)
        if actual in self.skipped:
            self.wrong(f"iptables-nft skips it and reads the next comparison as a {what} match "
                       f"of an earlier expression", "aliased", actual)
        else:
            self.wrong(f"iptables-nft mixes up registers and reads this comparison as a {what} "
                       f"match of another expression", "aliased")

    def act(self, what: str) -> None:
        """A target or verdict: a rule holds one (cs->target / cs->jumpto)."""
        if self.action is not None:
            self.wrong(f"iptables-nft keeps one action per rule: this {what} replaces the "
                       f"{self.action[1]} before it", "target")
        self.action = (self.i, what)

    def field(self, name: str, r: _Reg, f: dict) -> None:
        """A test iptables keeps in one field of the rule (an address, the protocol, an
        interface): a second, different test of it replaces the first."""
        value = (f.get("op", C.CMP_EQ), f.get("data"), r.mask, r.length, r.key)
        old = self.fields.get(name)
        if old is not None and old != value:
            self.wrong(f"iptables-nft keeps one {name} test per rule: this one replaces the "
                       f"earlier one", "overwritten")
        self.fields[name] = value
        self.field_at[name] = self.i

    def outside_mask(self, r: _Reg, f: dict) -> None:
        """An address compared under a mask with bits the mask clears: the kernel never
        matches it; iptables shows ADDRESS/MASK and restores the masked address."""
        if r.mask is None:
            return
        self.values = True
        data = f.get("data") or b""
        if any(d & ~m & 0xff for d, m in zip(data, r.mask)):
            self.wrong("iptables-nft shows this address with bits its mask clears; restored, "
                       "it compares the masked address and matches packets it never did",
                       "mask", r.src)

    def zero_mask(self, r: _Reg, op: int) -> None:
        """An address under an all-zero mask is shown as `! -s A/0`; restoring it, iptables
        writes a zero-length comparison the kernel refuses (RULE_APPEND failed)."""
        if r.mask is not None and not any(r.mask) and op == C.CMP_NEQ:
            self.wrong("iptables shows this test as `! -s/-d ADDRESS/0`, which iptables-restore "
                       "cannot write back", "refused", r.src)

    def unmasked(self, r: _Reg, what: str) -> None:
        """A bitwise before a test iptables reads without one: the mask is dropped
        (nft-ipv4.c/nft-ipv6.c payload parsers, nft_parse_transport, nft_parse_icmp read
        the compared value only; addresses, marks, frag-off and TCP flags keep theirs)."""
        if r.mask is not None and r.mask.strip(b"\xff"):  # all ones: no mask at all
            self.wrong(f"iptables-nft drops the mask and reads this {what} test on the whole "
                       f"field", "mask", r.src)

    def equality(self, op: int) -> None:
        """Only NEQ is looked at: every other operator reads as equality."""
        if op not in (C.CMP_EQ, C.CMP_NEQ):
            self.wrong(f"iptables-nft reads this `{_OPS.get(op, op)}` comparison as an equality",
                       "equality")

    # expressions
    def counter(self, f: dict) -> None:
        pass

    def payload(self, f: dict) -> None:
        if "sreg" in f:  # a payload write: iptables reads its absent dreg as 0 and moves on
            self.wrong("iptables-nft ignores this header rewrite", "rewrite")
            return
        self.load(f.get("dreg", 0), int(f.get("len", 0)), kind="payload", base=f.get("base", 0),
                  offset=f.get("offset", 0), length=int(f.get("len", 0)))

    def meta(self, f: dict) -> None:
        if "sreg" not in f:
            self.load(f.get("dreg", 0), registers.load_bytes("meta", f), kind="meta", key=f.get("key", 0))
            return
        r, _ = self.read(f["sreg"])
        if r is None:
            return
        key = f.get("key")
        if not self.p.meta_set_mark:  # 1.8.9 nft_meta_set_to_target: nftrace only
            if key != C.META_NFTRACE:
                self.error("meta sreg key not supported")
            elif r.kind != "immediate":
                self.error("meta nftrace but reg not immediate")
            elif not any(r.data[:4]):
                self.error("trace is cleared")
            else:
                self.act("TRACE target")
            return
        # 1.8.10+ nft_parse_meta_set: the immediate check happens inside each known key
        if key not in (C.META_NFTRACE, C.META_MARK, C.META_BRI_BROUTE):
            self.error("meta sreg key not supported")
        elif r.kind != "immediate":
            self.error("meta sreg is not an immediate")
        elif key == C.META_NFTRACE and not any(r.data[:4]):
            self.error("meta sreg immediate is 0")
        elif key == C.META_BRI_BROUTE:
            self.action = (self.i, "broute DROP")  # jumpto only, no target object
        else:
            self.act("MARK target" if key == C.META_MARK else "TRACE target")

    def immediate(self, f: dict) -> None:
        data = f.get("data")
        if isinstance(data, bytes):
            slot = self.slot(f.get("dreg", 0))
            if slot is None:
                return
            if len(data) > 16:  # the register was cleared: it stays undefined
                self.regs[slot] = _UNDEF
                self.write(f.get("dreg", 0), len(data), self.i)
                self.error("oversized immediate data")
                return
            self.load(f.get("dreg", 0), len(data), kind="immediate", data=data)
        elif isinstance(data, tuple):
            verdict = data[0]
            if verdict == "continue":
                pass  # no target shown, and none needed: the next rule is where it goes anyway
            elif verdict not in _ACTIONS:
                self.wrong(f"iptables-nft shows no target for verdict `{verdict}`", "verdict")
            elif verdict in ("jump", "goto") and self.action is not None and \
                    self.action[1] in _TARGETS_WITH_OPTIONS:
                # nft_parse_immediate sets jumpto for a chain but keeps the target: save
                # prints `-j CHAIN --nflog-group 1`, which iptables-restore refuses
                self.wrong(f"iptables-save writes the {self.action[1]}'s options after `-j "
                           f"CHAIN`, which iptables-restore refuses", "refused")
                self.action = (self.i, f"{verdict} verdict")
            elif verdict == "accept" and self.table == "broute" and self.action is not None \
                    and self.p.broute_table:
                pass  # ebtables' broute emulation: the earlier DROP stays
            else:
                self.act(f"{verdict} verdict")

    def bitwise(self, f: dict) -> None:
        sreg, dreg = f.get("sreg", 0), f.get("dreg", 0)
        src = self.slot(sreg)
        if src is None:
            return
        dst = src
        if _normalise(sreg) != _normalise(dreg):
            dst = self.slot(dreg)
            if dst is None:
                return
            self.regs[dst] = self.regs[src]  # a copy, not a fresh load
        # The result really comes from whatever loaded the source register.
        self.write(dreg, int(f.get("len", 4)), self.truth.get(registers.word(sreg)))
        xor, mask = f.get("xor"), f.get("mask")
        if self.p.bitwise_strict:
            if not isinstance(xor, bytes):
                self.error("missing bitwise xor attribute")
                return
        elif not (isinstance(xor, bytes) and isinstance(mask, bytes)):
            # 1.8.9–1.8.11: an uninitialised length is compared with 16, sometimes
            # it is larger (observed), sometimes not (observed), and a memcpy from NULL
            # could crash: unpredictable
            self.uncertain = True
            self.error("bitwise xor too large")
            return
        if len(xor) > 16:
            self.error("bitwise xor too large")
            return
        if not isinstance(mask, bytes):
            self.error("missing bitwise mask attribute")
            return
        if len(mask) > 16:
            self.error("bitwise mask too large")
            return
        self.regs[dst] = replace(self.regs[dst], mask=mask)

    def cmp(self, f: dict) -> None:
        r, actual = self.read(f.get("sreg", 0))
        if r is None:
            return
        if r.kind == "undef":
            self.error("cmp sreg undef", self.culprit(actual))
            return
        self.aliased(r, actual)
        if r.kind == "meta":
            self.meta_cmp(r, f)
        elif r.kind == "payload":
            if r.base == _TRANSPORT:
                if self.family in ("ip", "ip6"):
                    self.transport(r, f)
                else:
                    self.error("invalid family for TH match", r.src)
            elif r.base == _NETWORK or (r.base == _LL and self.family == "bridge"):
                getattr(self, f"{self.family}_payload")(r, f)
            else:  # a link-layer header outside ebtables, inner headers, ...
                self.wrong("iptables-nft ignores matches on this header", "header", r.src)
        else:
            self.error("cmp sreg has unknown type")

    def meta_cmp(self, r: _Reg, f: dict) -> None:
        data, op = f.get("data") or b"\0", f.get("op", C.CMP_EQ)
        if self.family == "bridge":
            self.bridge_meta(r, op)
        elif self.family in ("ip", "ip6") and r.key == C.META_L4PROTO:
            self.proto = data[0]
            self.field("protocol", _UNDEF, f)
            self.proto_neq |= op == C.CMP_NEQ  # IPT_INV_PROTO is set, never cleared
            self.equality(op)
            self.unmasked(r, "protocol")
        elif r.key in _META_PARSED:
            if r.key != C.META_MARK:  # -m mark keeps its mask
                self.unmasked(r, "meta")
            if r.key in _IN_META or r.key in _OUT_META:
                self.field("input interface" if r.key in _IN_META else "output interface", r, f)
            self.equality(op)
        else:
            self.error(_META_KEY_ERROR[self.family], r.src)

    def bridge_meta(self, r: _Reg, op: int) -> None:
        if r.key == C.META_PROTOCOL:    # dropped without a word (see among())
            self.dropped_protocol = r.src
        elif r.key in (C.META_IIF, C.META_OIF):
            # 1.8.9/1.8.10: if_indextoname() into a NULL buffer
            self.error(SEGFAULT if self.p.bridge_ifindex_crash else "unknown bridge meta key", r.src)
        elif r.key in _BRIDGE_META_NAMES:
            self.equality(op)
        else:
            self.error("unknown bridge meta key" if r.key in _META_PARSED else "unknown meta key",
                       r.src)

    def bridge_payload(self, r: _Reg, f: dict) -> None:
        """ebtables reads destination, source and type at offsets 0, 6, 12 — whatever
        the header: `ip saddr` (network header + 12) comes out as `-p`."""
        if r.offset not in (0, 6, 12):
            self.error("unknown payload offset", r.src)
        elif r.base != _LL:
            self.wrong("ebtables reads this network header field as an Ethernet header field",
                       "ethernet", r.src)

    def ip_payload(self, r: _Reg, f: dict) -> None:
        data, op = f.get("data") or b"\0", f.get("op", C.CMP_EQ)
        if r.offset in (12, 16):      # saddr, daddr
            self.field("source address" if r.offset == 12 else "destination address", r, f)
            self.equality(op)
            self.zero_mask(r, op)
            self.outside_mask(r, f)
        elif r.offset == 9:           # protocol
            self.proto = data[0]
            self.field("protocol", _UNDEF, f)
            self.proto_neq |= op == C.CMP_NEQ  # IPT_INV_PROTO is set, never cleared
            self.equality(op)
            self.unmasked(r, "protocol")
        elif r.offset == 6:           # frag_off: any test reads as -f
            self.field("fragment", r, f)
            if r.mask != _FRAG_MASK or data != b"\0\0":
                self.wrong("iptables-nft reads any test of the fragment field as `-f`", "frag",
                           r.src)
        elif r.offset == 8:           # ttl
            self.hop_limit(r, f)
            self.unmasked(r, "TTL")
            if r.length > 1:  # nft merges `ip ttl X ip protocol Y` into one 2-byte load
                self.wrong("iptables-nft reads this load of TTL and protocol as a TTL test "
                           "alone", "header", r.src)
        else:
            self.error("unknown payload offset", r.src)

    def ip6_payload(self, r: _Reg, f: dict) -> None:
        data, op = f.get("data") or b"\0", f.get("op", C.CMP_EQ)
        if r.offset in (8, 24):       # saddr, daddr
            self.field("source address" if r.offset == 8 else "destination address", r, f)
            self.equality(op)
            self.zero_mask(r, op)
            self.outside_mask(r, f)
        elif r.offset == 6:           # nexthdr: a missing break falls into the hop limit case
            self.proto = data[0]
            self.field("protocol", _UNDEF, f)
            self.proto_neq |= op == C.CMP_NEQ  # IPT_INV_PROTO is set, never cleared
            self.equality(op)
            self.unmasked(r, "next-header")
            self.wrong("ip6tables also reads the next-header test as a hop-limit match "
                       "(`-m hl --hl-eq N`)", "nexthdr", r.src)
            self.hop_limit(r, f)
        elif r.offset == 7:
            self.hop_limit(r, f)
            self.unmasked(r, "hop-limit")
        else:
            self.error("unknown payload offset", r.src)

    def arp_payload(self, r: _Reg, f: dict) -> None:
        data, op = f.get("data") or b"\0", f.get("op", C.CMP_EQ)
        off = r.offset
        if off in (0, 2, 6):          # hardware type, protocol type, opcode
            self.equality(op)
        elif off == 4:                # hardware address length: moves the later offsets
            self.arhln = data[0]
            self.equality(op)
        elif off == 5:                # protocol address length: only 4
            if data[0] != 4 or op == C.CMP_NEQ:
                self.error("unexpected ARP protocol length match", r.src)
        elif off in (_ARPHDR, _ARPHDR + self.arhln + 4):     # sender / target hardware address
            if len(data) != _ETH_ALEN:
                self.wrong("arptables ignores a hardware address test that is not 6 bytes",
                           "devaddr", r.src)
        elif off in (_ARPHDR + self.arhln, _ARPHDR + 2 * self.arhln + 4):   # IP addresses
            self.equality(op)
        else:
            self.error("unknown payload offset", r.src)

    def hop_limit(self, r: _Reg, f: dict) -> None:
        op, value = f.get("op", 0), (f.get("data") or b"\0")[0]
        if op > C.CMP_GTE or (op == C.CMP_LTE and value == 255) or (op == C.CMP_GTE and value == 0):
            self.error("invalid ttl field match", r.src)

    def l4(self, kind: int) -> int:
        """The protocol match a tcp/udp test lands in: 1.8.9 keeps one per rule (the first
        made), later versions one per protocol."""
        if self.p.tcpudp_shared and kind in (_TCP, _UDP):
            return next((k for k in self.l4_matches if k in (_TCP, _UDP)), kind)
        return kind

    def transport(self, r: _Reg, f: dict) -> None:
        """nft_parse_transport (nft-ruleparse.c 1.8.10+, nft-shared.c 1.8.9)."""
        data = f.get("data") or b""
        n, op = len(data), f.get("op", C.CMP_EQ)
        if self.proto in (_TCP, _UDP):
            ports = (r.offset == 0 and n in (2, 4)) or (r.offset == 2 and n == 2)
            flags = r.offset == 13 and n == 1 and self.proto == _TCP
            if flags and self.l4(_TCP) == _UDP:
                # 1.8.9: the flags are written into the udp match's memory, never shown
                self.wrong("iptables-nft 1.8.9 writes these TCP flags into the rule's UDP "
                           "match: they are lost", "transport", r.src)
            elif flags:
                # nft_parse_tcp_flags: one tcp match per rule, the last test's flags win
                mask = r.mask[0] if r.mask else 0xff
                self.flags = (r.src, (mask | data[0]) & 0xc0)  # the last test's are printed
                self.field("TCP flags", r, f)
                self.l4_matches.setdefault(_TCP, r.src)
                if op not in (C.CMP_EQ, C.CMP_NEQ):
                    self.equality(op)
            elif ports:
                self.l4_matches.setdefault(self.l4(self.proto), r.src)
                self.unmasked(r, "port")
                self.ports(r, f, data)
            else:
                self.wrong("iptables-nft ignores this transport header match", "transport", r.src)
        elif self.proto in (_ICMP, _ICMPV6):
            kind = data[0] if n and r.offset == 0 else 255   # UINT8_MAX: any type
            if n < 1 or (r.offset == 0 and n > 2) or (r.offset == 1 and n > 1):
                self.error("unexpected RHS data length", r.src)
            elif r.offset not in (0, 1):
                self.error("unexpected payload offset", r.src)
            elif self.family == "ip6" and kind == 255:
                self.error("icmp6 code with any type match not supported", r.src)
            else:
                # nft_parse_icmp reads the value only: not the operator, not a mask; type
                # 255 (UINT8_MAX) is xt_icmp's "any", and a code alone keeps type 255
                if op != C.CMP_EQ and not (r.offset == 0 and n == 1 and kind != 255):
                    what = "negation" if op == C.CMP_NEQ else f"`{_OPS.get(op, op)}` comparison"
                    self.wrong(f"iptables-nft reads this ICMP {what} as an equality "
                               f"(`--icmp-type N`): it matches other packets", "icmp", r.src)
                elif r.offset == 0 and n == 1 and kind != 255:
                    self.icmp_types.append((op, kind, r.src))  # judged at the end
                self.unmasked(r, "ICMP")
                self.l4_matches.setdefault(self.proto, r.src)
                if kind == 255:  # judged at the end: another test may pin the same code
                    self.icmp_any.append((r.src, data[0] if r.offset == 1 else None))
                elif n == 2 and op == C.CMP_EQ:
                    self.icmp_codes.add(data[1])
                    self.values = True
        else:
            self.error("unsupported layer 4 protocol value", r.src)

    def ports(self, r: _Reg, f: dict, data: bytes) -> None:
        """port_match_single_to_range: == and != set both ends (and != inverts the whole
        test), < and <= the upper end, > and >= the lower one, in one tcp/udp match per
        rule. `< 1` reads as 0..1 and `> 65535` as 65535 (max(port - 1, 1),
        min(port + 1, 65535))."""
        op = f.get("op", C.CMP_EQ)
        value = int.from_bytes(data[:2], "big")
        if (op == C.CMP_LT and value <= 1) or (op == C.CMP_GT and value == 65535):
            self.wrong(f"iptables-nft reads `{_OPS[op]} {value}` as the port range "
                       f"{'0:1' if op == C.CMP_LT else '65535'}", "equality", r.src)
        # a 4-byte load at offset 0 holds both ports (nft merges `sport X dport Y`)
        for source, end, port in ((True, r.offset == 0, value),
                                  (False, r.offset == 2 or len(data) == 4,
                                   int.from_bytes(data[2:4] if len(data) == 4 else data[:2],
                                                  "big"))):
            if end:
                self.bound(source, op, port, port)

    def bound(self, source: bool, op: int, low: int, high: int) -> None:
        """One port test: the range iptables builds of it (port_match_single_to_range,
        nft_parse_*_range: == and != set both ends, != inverts the whole match, < and <=
        the upper end, > and >= the lower one, in one tcp/udp match) beside the ports the
        tests together really accept."""
        name = f"{'TCP' if self.proto == _TCP else 'UDP'} {'source' if source else 'destination'} port"
        old = self.port_ranges.get(name)
        lo, hi, tlo, thi, seen, neq = old[:6] if old else (0, 65535, 0, 65535, frozenset(), False)
        if op in (C.CMP_EQ, C.CMP_NEQ):
            lo, hi = low, high
        elif op == C.CMP_LT:
            hi = max(low - 1, 1)
        elif op == C.CMP_LTE:
            hi = low
        elif op == C.CMP_GT:
            lo = min(low + 1, 65535)
        elif op == C.CMP_GTE:
            lo = low
        true = {C.CMP_EQ: (low, high), C.CMP_LT: (0, low - 1), C.CMP_LTE: (0, low),
                C.CMP_GT: (low + 1, 65535), C.CMP_GTE: (low, 65535)}.get(op)
        if true:
            tlo, thi = max(tlo, true[0]), min(thi, true[1])
        self.port_ranges[name] = [lo, hi, tlo, thi, seen | {(op, low, high)},
                                  neq or op == C.CMP_NEQ, self.i]
        if seen:
            self.values = True  # two tests of one port: the verdict reads their values

    def range(self, f: dict) -> None:
        r, actual = self.read(f.get("sreg", 0))
        if r is None:
            return
        if r.kind == "undef":
            self.error("range sreg undef", self.culprit(actual))
            return
        self.aliased(r, actual)
        if r.kind != "payload":
            self.error("range sreg type unsupported")
        elif r.base != _TRANSPORT:
            self.error("range with unknown payload base")
        # nft_parse_transport_range reads FROM's length twice: TO's is never checked
        elif not (self.family in ("ip", "ip6") and self.proto in (_TCP, _UDP)
                  and r.offset in (0, 2) and len(f.get("from") or b"") == 2):
            self.wrong("iptables-nft ignores this port range", "range")
        else:  # nft_parse_transport_range: both ends of the tcp/udp match's range
            self.unmasked(r, "port")
            # NFT_RANGE_EQ/NEQ have NFT_CMP_EQ/NEQ's values: nft_parse_*_range mixes them too
            self.bound(r.offset == 0, f.get("op", C.CMP_EQ),
                       int.from_bytes(f.get("from") or b"\0\0", "big"),
                       int.from_bytes(f.get("to") or b"\0\0", "big"))

    def lookup(self, f: dict) -> None:
        if self.family == "bridge":
            self.among(f)
            return
        dreg = f.get("dreg")
        kind = "lookup" if dreg is None else "vmap" if dreg == C.REG_VERDICT else "map"
        what = {"lookup": "set lookup", "vmap": "verdict map", "map": "map lookup"}[kind]
        self.wrong(f"iptables-nft ignores the {what} and shows the rule without it", kind)
        self.skip("lookup", f)

    def among(self, f: dict) -> None:
        """ebtables' among match (nft_bridge_parse_lookup). Without the table's sets
        (a rule judged alone) it is not modelled."""
        if self.sets is None:
            return
        key_len = self.sets.get(f.get("set"))
        if key_len is None:
            self.error(UNKNOWN_SET)
            return
        r, _ = self.read(f.get("sreg", 0))
        if r is None:
            return
        if r.kind != "payload":
            self.error("lookup reg is not payload type")
            return
        ether = r.base == _LL and r.offset in (0, 6) and r.length == _ETH_ALEN
        if key_len == 6:
            ok = ether
        elif key_len == 12:
            nxt, _ = self.read(_next_reg(f.get("sreg", 0), _ETH_ALEN))
            if nxt is None:
                return
            if nxt.kind != "payload":
                self.error("next lookup reg is not payload type")
                return
            ok = ether and nxt.base == _NETWORK and nxt.length == 4 and \
                (nxt.offset == 16) == (r.offset == 0) and nxt.offset in (12, 16)
        else:
            self.error("unsupported lookup key length")
            return
        if not ok:
            self.wrong("ebtables ignores this set lookup (not a MAC/IP pair it knows)", "among")
        elif key_len == 12:  # ebtables writes `meta protocol ip` itself for MAC=IP pairs
            self.dropped_protocol = None

    def match(self, f: dict) -> None:
        if self.family == "arp":
            self.error("BUG: nft_parse_match() unknown family 3")

    def target(self, f: dict) -> None:
        if self.family == "bridge" and f.get("name") in ("log", "nflog"):
            return  # ebtables watchers, not targets
        self.act("x_tables target")  # (no name: the verdict is memoised without it)

    def limit(self, f: dict) -> None:
        if self.family == "arp":
            self.error("BUG: nft_parse_limit() unknown family 3")

    def log(self, f: dict) -> None:
        self.act("NFLOG target")

    def skip(self, name: str, f: dict) -> None:
        """An expression iptables has no case for: whatever it loads, iptables never sees."""
        self.skipped.add(self.i)
        if isinstance(f.get("dreg"), int) and f["dreg"]:
            self.write(f["dreg"], registers.load_bytes(name, f), self.i)


def _holds(op: int, x: int, value: int) -> bool:
    return {C.CMP_EQ: x == value, C.CMP_NEQ: x != value, C.CMP_LT: x < value,
            C.CMP_LTE: x <= value, C.CMP_GT: x > value, C.CMP_GTE: x >= value}.get(op, False)


def read_rule(rule: Rule, profile: Profile = OLDEST, sets: dict[str, int] | None = None
              ) -> RuleVerdict:
    """How one iptables-nft version reads one rule. sets: the table's set key lengths
    (ebtables' among match needs them)."""
    p = _Parse(rule.family, rule.table, profile, sets, rule.chain)
    unlisted: list[tuple[int, str]] = []
    for i, expr in enumerate(rule.exprs):
        p.i = i
        try:
            if not expr.name:
                raise ValueError("expression without a name")
            f = expr.fields
            why = _unlisted(expr, f, profile)
            if why:
                unlisted.append((i, why))
            if expr.name in _Parse.HANDLED:
                getattr(p, expr.name)(f)
            else:
                p.skip(expr.name, f)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            return RuleVerdict(unreadable=(i, str(exc) or type(exc).__name__))
    if p.dropped_protocol is not None:
        p.wrong("ebtables ignores it and shows the rule without it", "protocol", p.dropped_protocol)
    if rule.family in ("ip", "ip6"):
        # xshared.c do_parse (every version): iptables-restore refuses -o in PREROUTING and
        # INPUT, -i in OUTPUT and POSTROUTING, by chain name, whatever the table
        wrong_way = {"PREROUTING": "output interface", "INPUT": "output interface",
                     "OUTPUT": "input interface", "POSTROUTING": "input interface"}
        name = wrong_way.get(rule.chain)
        if name in p.fields:
            flag = "-o" if name == "output interface" else "-i"
            p.wrong(f"iptables shows it as `{flag}` in {rule.chain}, which iptables-restore "
                    f"refuses (\"Can't use {flag} with {rule.chain}\")", "refused",
                    p.field_at[name])
        # Restoring `-p P -m icmp|tcp|udp` needs P to be the match's own protocol, not
        # inverted: the kernel's xt_check_match refuses icmp (RULE_APPEND failed: Invalid
        # argument), nft.c add_nft_tcp/add_nft_udp say "TCP/UDP match requires '-p tcp'".
        # iptables writes the match whatever -p it read last.
        proto = p.fields.get("protocol")
        last = (proto[1] or b"\0")[0] if proto else None
        for kind, at in p.l4_matches.items():
            # the kernel's check also refuses an inverted protocol (xt_check_match's
            # inv_proto) for the icmp match; add_nft_tcp/udp look at the value only
            if kind != last or (p.proto_neq and kind in (_ICMP, _ICMPV6)):
                name = {_TCP: "TCP", _UDP: "UDP"}.get(kind, "ICMP")
                p.wrong(f"iptables shows this {name} test under another protocol (`-p`), "
                        f"which iptables-restore refuses", "refused", at)
                break
        if rule.table == "nat" and p.action and p.action[1] == "drop verdict":
            # xshared.c do_parse: "The "nat" table is not intended for filtering"
            p.wrong("iptables-restore refuses DROP in the nat table", "refused", p.action[0])
    if p.flags and p.flags[1]:
        p.crash = (p.flags[0], TCP_FLAGS_CRASH)
    if any(op != C.CMP_EQ for op, _, _ in p.icmp_types):
        # iptables reads each type test as `== value`: wrong unless the tests together
        # select the same types either way (`>= 1` beside `== 1`)
        p.values = True
        real, read = set(range(256)), set(range(256))
        for op, value, _ in p.icmp_types:
            real &= {x for x in range(256) if _holds(op, x, value)}
            read &= {value}
        if real != read:
            op, _, at = next(t for t in p.icmp_types if t[0] != C.CMP_EQ)
            what = "negation" if op == C.CMP_NEQ else f"`{_OPS.get(op, op)}` comparison"
            p.wrong(f"iptables-nft reads this ICMP {what} as an equality (`--icmp-type N`): "
                    f"it matches other packets (the opposite ones, for `!=`)", "icmp", at)
    for at, code in p.icmp_any:
        if code is None or code not in p.icmp_codes:
            p.wrong("iptables-nft reads ICMP type 255, or a code without a type, as any ICMP "
                    "type (`--icmp-type any`)", "icmp-any", at)
    for name, (lo, hi, tlo, thi, seen, neq, at) in p.port_ranges.items():
        if lo > hi and (name.startswith("TCP") or p.p.udp_range_checked):
            # libxt_tcp: "invalid portrange (min > max)"; libxt_udp from 1.8.11 too
            p.wrong(f"iptables shows the {name} tests as the range {lo}:{hi}, which "
                    f"iptables-restore refuses", "refused", at)
        elif len(seen) > 1 and (neq or (lo, hi) != (tlo, thi)):  # the same test twice is one
            p.wrong(f"iptables-nft keeps one {name} range per rule: it reads these tests as "
                    f"{lo}:{hi}", "overwritten", at)
    if not (p.errors or unlisted or p.misread or p.crash):
        return _CLEAN_BY_VALUE if p.values else _CLEAN
    return RuleVerdict(tuple(p.errors), tuple(unlisted), tuple(dict.fromkeys(p.misread)),
                       None, p.uncertain, p.crash, p.values)


# --- memoised verdicts ----------------------------------------------------------------
#
# The reader looks at registers, operators, keys, offsets, lengths, the first bytes of
# small constants and the names of verdicts, never at addresses, ports, comments, set
# names or jump targets. A shape keeps exactly what it looks at, so rules of one shape
# get one verdict. An element's shape is found from its bytes (kept in a bounded
# cache: most elements repeat); xt match/target elements, whose info (a comment, a
# port list) makes them unique, are told apart by their name attribute alone.

_IGNORED_FIELDS = {"info", "set", "set_id", "prefix", "imm_name", "set_name", "rev"}
_MATCH_HEAD = attr_str(C.NFTA_EXPR_NAME, "match")
_TARGET_HEAD = attr_str(C.NFTA_EXPR_NAME, "target")
_HEAD_LEN = len(_MATCH_HEAD)
_SHAPES: dict[bytes, int] = {}        # element bytes -> shape id
_SHAPE_IDS: dict[object, int] = {}     # shape -> its id (a few hundred)
_SHAPES_MAX = 65536
_MEMO: dict[tuple, list] = {}
_MEMO_MAX = 32768


def _bytes_shape(key: str, v: bytes):
    # Small masks are compared whole (`-f` is frag-off & 0x1fff); of any other constant
    # the reader reads its length, its first byte (a protocol, a ttl, an ICMP type, an
    # ARP length) and whether its first word is zero (nftrace, `-f`'s 0).
    if key == "mask" and len(v) <= 2:
        return v
    return len(v), v[:1], any(v[:4])


def _shape_of(name: str, fields: dict) -> tuple:
    """What the reader reads of one expression."""
    if name == "counter":
        return ("counter",)
    out: list = [name]
    for k, v in fields.items():
        if k in _IGNORED_FIELDS:
            continue
        if isinstance(v, bytes):
            v = _bytes_shape(k, v)
        elif isinstance(v, tuple):
            v = v[0]            # (verdict, chain): the chain is never read
        elif isinstance(v, str) and k != "name":
            continue
        out.append((k, v))
    return tuple(out)


def _attr_head(length: int, kind: int) -> bytes:
    return length.to_bytes(2, BYTEORDER) + kind.to_bytes(2, BYTEORDER)


# cmp and verdict immediates are the elements that rarely repeat (addresses, ports, jump
# targets): their shape is read at fixed offsets of the kernel's layout, checked
# attribute by attribute, without decoding (tests/unit/test_compat_speed.py holds both
# ways to the same answers). Anything laid out otherwise is decoded.
_CMP_NAME = attr_str(C.NFTA_EXPR_NAME, "cmp")
_CMP_SREG, _CMP_OP = _attr_head(8, 1), _attr_head(8, 2)
_IMM_NAME = attr_str(C.NFTA_EXPR_NAME, "immediate")
_IMM_DREG, _VERDICT_CODE = _attr_head(8, 1), _attr_head(8, C.NFTA_VERDICT_CODE)


def _type_at(element: bytes, at: int) -> int:
    return int.from_bytes(element[at:at + 2], BYTEORDER) & C.NLA_TYPE_MASK


def _fast_shape(element: bytes) -> tuple | None:
    if element[4:4 + len(_CMP_NAME)] == _CMP_NAME and len(element) >= 40 \
            and element[16:20] == _CMP_SREG and element[24:28] == _CMP_OP \
            and _type_at(element, 34) == 3 and _type_at(element, 38) == C.NFTA_DATA_VALUE:
        vlen = int.from_bytes(element[36:38], BYTEORDER) - 4
        value = element[40:40 + vlen]
        if vlen < 0 or len(value) != vlen or \
                int.from_bytes(element[32:34], BYTEORDER) != ((vlen + 3) & ~3) + 8:
            return None
        return ("cmp", ("sreg", int.from_bytes(element[20:24], "big")),
                ("op", int.from_bytes(element[28:32], "big")), ("data", _bytes_shape("data", value)))
    if element[4:4 + len(_IMM_NAME)] == _IMM_NAME and len(element) >= 48 \
            and element[24:28] == _IMM_DREG and _type_at(element, 34) == 2 \
            and _type_at(element, 38) == C.NFTA_DATA_VERDICT and element[40:44] == _VERDICT_CODE:
        code = int.from_bytes(element[44:48], "big", signed=True)
        return ("immediate", ("dreg", int.from_bytes(element[28:32], "big")),
                ("data", C.VERDICTS.get(code, str(code))))
    return None


def _element_shape(element: bytes) -> object:
    try:
        (name, data), = split_expressions(element)
        return _shape_of(name, decode_fields(name, data))
    except ValueError:
        return ("unreadable", element)


def shape_key(rule: Rule) -> tuple | None:
    """The rule's shape, from the kernel's bytes; None when they do not parse."""
    blob = rule.expressions_payload
    bounds = element_bounds(blob)
    if bounds is None:
        return None
    shapes, out = _SHAPES, []
    bridge = rule.family == "bridge"
    for start, end in bounds:
        head = blob[start + 4:start + 4 + _HEAD_LEN]
        if head == _MATCH_HEAD:
            out.append(-1)
        elif head == _TARGET_HEAD and not bridge:  # ebtables tells log/nflog apart
            out.append(-2)
        else:
            element = blob[start:end]
            shape = shapes.get(element)
            if shape is None:  # shapes are numbered: a rule's key hashes fast
                shape = _SHAPE_IDS.setdefault(_fast_shape(element) or _element_shape(element),
                                              len(_SHAPE_IDS))
                if len(shapes) < _SHAPES_MAX:
                    shapes[element] = shape
            out.append(shape)
    return tuple(out)


# chains whose name makes iptables-restore refuse -o (1) or -i (2): part of a verdict
_DIRECTION = {"PREROUTING": 1, "INPUT": 1, "OUTPUT": 2, "POSTROUTING": 2}
# tables read differently: ebtables' broute, nat (DROP refused on restore)
_TABLE_KIND = {"broute": 1, "nat": 2}


def verdicts(rule: Rule, profiles: tuple[Profile, ...], sets: dict[str, int] | None = None
             ) -> tuple[RuleVerdict, ...]:
    """read_rule() for each profile, memoised by the rule's shape; () when every one
    reads it cleanly (the common case, answered by one lookup)."""
    if sets is not None and rule.family == "bridge" and b"lookup" in rule.expressions_payload:
        return _unless_clean(tuple(read_rule(rule, p, sets) for p in profiles))
    key = shape_key(rule)
    if key is None:
        return _unless_clean(tuple(read_rule(rule, p, sets) for p in profiles))
    where = (rule.family, _TABLE_KIND.get(rule.table, 0), _DIRECTION.get(rule.chain, 0), key)
    slots = _MEMO.get(where)
    if slots is None:
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()
            if len(_SHAPE_IDS) >= _SHAPES_MAX:  # ids live as long as the keys holding them
                _SHAPE_IDS.clear()
                _SHAPES.clear()
        slots = _MEMO[where] = {}
    found = slots.get(profiles)
    if found is None:
        read = tuple(read_rule(rule, p) for p in profiles)
        found = _unless_clean(read)
        if not any(v.values for v in read):
            slots[profiles] = found
    return found


def _unless_clean(vs: tuple[RuleVerdict, ...]) -> tuple[RuleVerdict, ...]:
    return () if all(v.clean for v in vs) else vs


# --- findings ---------------------------------------------------------------------------

def _findings(rule: Rule, verdict: RuleVerdict) -> tuple[Finding | None, Finding | None]:
    """(the rule's finding if iptables-nft fails on it, its misread finding), without
    versions and consequences."""
    if verdict.clean:
        return None, None  # the common case: no need to look for an equivalent
    repairable = iptables_equivalent(rule) is not None
    everything = (BREAKS_CHECK, BREAKS_LIST, BREAKS_SAVE)
    if verdict.unreadable:
        i, why = verdict.unreadable
        name = rule.exprs[i].name or "unnamed"
        return Finding(rule, f"expression {i} ({name}): unreadable attribute data ({why}); "
                             f"cannot tell what iptables-nft makes of it",
                       False, everything), None
    unlisted = verdict.unlisted[0][1] if verdict.unlisted else None
    misread = None
    if verdict.misread:
        # what the sync does to it: a restore that is refused outweighs any misreading
        m = next((m for m in verdict.misread if m.kind == "refused"), verdict.misread[0])
        misread = Finding(rule, f"{describe(rule.exprs[m.index])}: {m.what}", repairable, kind=m.kind,
                          back=written_back(rule, m.kind, m.index), culprit=m.index)
    if verdict.errors:
        # A crash or an internal "BUG" ends the program before the rule's other errors.
        i, message = next((e for e in verdict.errors if e[1] in _FATAL), verdict.errors[0])
        how = "may fail to parse it (it reads uninitialised memory: some runs fail)" \
            if verdict.uncertain else "cannot parse it"
        return Finding(rule, f"{describe(rule.exprs[i])}: iptables-nft {how} ({message})",
                       repairable, everything, message, unlisted,
                       uncertain=verdict.uncertain), None
    if verdict.crash and not unlisted:  # the listing check runs first: exit 1, no crash
        i, message = verdict.crash
        return Finding(rule, f"{describe(rule.exprs[i])}: iptables-nft reads it, but listing "
                             f"it crashes (-S/-L and iptables-save die; -C still works): "
                             f"{message}", repairable, (BREAKS_LIST, BREAKS_SAVE), message,
                       None), misread
    if unlisted:
        return Finding(rule, f"{unlisted}: iptables-nft refuses to list a chain holding it "
                             f"(-S/-L fail, iptables-save skips the table; -C still works)",
                       repairable, (BREAKS_LIST, BREAKS_SAVE), None, unlisted), misread
    return None, misread


_PORT_NAMES = {0: "--sport", 2: "--dport"}


def _compared(rule: Rule, index: int) -> dict | None:
    """The cmp reading what expression `index` loaded."""
    try:
        dreg = _normalise(rule.exprs[index].fields.get("dreg", -1))
        for e in rule.exprs[index + 1:]:
            f = e.fields
            if e.name == "cmp" and _normalise(f.get("sreg", -2)) == dreg:
                return f
    except (ValueError, TypeError, KeyError, IndexError):
        pass
    return None


def written_back(rule: Rule, kind: str, index: int, version: str | None = None) -> str | None:
    """The iptables option a misread test comes back as, from the rule's own values
    (not memoised: misread rules are few). None where it takes the whole rule to say."""
    try:
        expr = rule.exprs[index]
        load = expr.fields
    except (ValueError, IndexError):
        return None
    if expr.name != "payload":
        return None
    cmp = _compared(rule, index)
    data = (cmp or {}).get("data") or b""
    base, offset = load.get("base"), load.get("offset")
    icmp6 = rule.family == "ip6"
    option = "--icmpv6-type" if icmp6 else "--icmp-type"
    if kind == "icmp-any" or (kind == "icmp" and offset == 1):
        # a code alone: 1.8.9/1.8.10 print `any`, 1.8.11 on `255/CODE` (libxt_icmp's
        # print of type 255 with a code range); both match every ICMP type
        shown = profile_for(version) if version else None
        if offset == 1 and data and shown is not None and shown.icmp_any_code_shown:
            return f"{option} 255/{data[0]}"
        return f"{option} any"
    if not data:
        return None
    if kind == "icmp" and base == _TRANSPORT:
        return f"{option} {data[0]}/{data[1]}" if len(data) == 2 else f"{option} {data[0]}"
    if kind == "mask" and base == _TRANSPORT and offset in _PORT_NAMES and len(data) == 2 \
            and _is_port_rule(rule):
        return f"{'! ' if (cmp or {}).get('op') == C.CMP_NEQ else ''}{_PORT_NAMES[offset]} " \
               f"{int.from_bytes(data, 'big')}"
    neq = "! " if (cmp or {}).get("op") == C.CMP_NEQ else ""
    if kind in ("mask", "header") and base == _NETWORK and not icmp6 and offset == 8:
        # libnftnl's nftnl_expr_get_u8 gives 0 for data that is not one byte
        return f"-m ttl {neq}--ttl-eq {data[0] if len(data) == 1 else 0}"
    if kind == "nexthdr":
        return f"-m hl --hl-eq {data[0]}"
    return None


def _is_port_rule(rule: Rule) -> bool:
    """The rule's protocol test says tcp or udp (ports, not ICMP, at offset 0)."""
    for e in rule.exprs:
        try:
            f = e.fields
        except ValueError:
            continue
        if e.name == "cmp" and (f.get("data") or b"\0")[:1] in (bytes([_TCP]), bytes([_UDP])):
            return True
    return False


def judge_rule(rule: Rule, profile: Profile = OLDEST, setup: Setup = Setup()
               ) -> tuple[Finding | None, Finding | None]:
    """(the rule's finding if iptables-nft fails on it, its misread finding), judged
    alone: what it breaks, as if it were in a table of its own."""
    bad, wrong = _findings(rule, read_rule(rule, profile))
    if wrong:
        wrong = replace(wrong, back=written_back(rule, wrong.kind, wrong.culprit, profile.version),
                        written_back=saved_line(rule, profile))
    return _complete(bad, (profile.version,), setup), _complete(wrong, (profile.version,), setup)


def _by_line(rule: Rule, wrong: Finding, versions: list[str]) -> list[Finding]:
    """A misread finding per distinct line the versions' iptables-save print for it."""
    lines: dict[str | None, list[str]] = {}
    for v in versions:
        lines.setdefault(saved_line(rule, BY_VERSION[v]), []).append(v)
    return [replace(wrong, versions=tuple(vs), written_back=line,
                    back=written_back(rule, wrong.kind, wrong.culprit, vs[0]))
            for line, vs in lines.items()]


def _merge(found: list[Finding]) -> Finding:
    """One finding per rule: the first version's, holding for every version that has
    one; where versions say it differently, each version's own is kept (variants)."""
    if len(found) == 1:
        return found[0]
    first = found[0]
    said = lambda f: f.iptables_error or f.unlisted or f.kind  # noqa: E731
    others = "; ".join(f"iptables {', '.join(f.versions)}: {said(f)}"
                       for f in found[1:] if said(f) != said(first))
    breaks = tuple(b for b in (BREAKS_CHECK, BREAKS_LIST, BREAKS_SAVE)
                   if any(b in f.breaks for f in found))
    return replace(first, reason=f"{first.reason} ({others})" if others else first.reason,
                   breaks=breaks,
                   versions=tuple(v for f in found for v in f.versions),
                   uncertain=any(f.uncertain for f in found), variants=tuple(found))


def _complete(f: Finding | None, versions: tuple[str, ...] | None, setup: Setup,
              ip6_kube_router: bool = False, sync_blocked: bool = False) -> Finding | None:
    if f is None:
        return None
    versions = f.versions if versions is None else versions
    r = f.rule
    if f.breaks:
        found = impacts(r.family, r.table, r.chain, r.position, f.breaks, setup, ip6_kube_router)
        sync = next((i for i in found if i.effect == SYNC_EFFECT), None)
        after = None
        if sync is not None:
            after = (f"after kube-router's next policy sync: every sync fails: `{sync.command}` "
                     f"fails on this rule, the sync is aborted (logged), network policies are "
                     f"not applied")
        return replace(f, versions=versions, impacts=found, after_sync=after)
    restored = setup.network_policy and r.table == "filter" and (
        r.family == "ip" or (r.family == "ip6" and (setup.dual_stack or ip6_kube_router)))
    after = None
    if restored:
        after = f"after kube-router's next policy sync: {after_sync(f.kind)}"
        if f.written_back and f.kind == "refused":
            after += f"; the line it refuses: `{f.written_back}`"
        elif f.written_back:
            after += f"; it writes back `{f.written_back}`"
        elif f.back:
            after += f"; the test comes back as `{f.back}`"
        if sync_blocked:
            after += " (not while the table holds rules iptables cannot read: the sync aborts)"
    variants = tuple(_complete(v, None, setup, ip6_kube_router, sync_blocked)
                     for v in f.variants)
    return replace(f, versions=versions, after_sync=after, variants=variants)


def _ip6_kube_router(snapshot: Snapshot) -> bool:
    """kube-router's chains in ip6 filter: the node is dual-stack."""
    table = snapshot.tables.get(TableRef("ip6", "filter"))
    own = set(KUBE_ROUTER_JUMPS.values())
    return table is not None and any(c.name in own for c in table.chains)


def kube_router_jump(rule: Rule) -> str | None:
    """The builtin chain whose kube-router jump this rule is, as `iptables -C` compares
    it (nft_rule_cmp: the comment match's data and the jump; a counter does not count)."""
    target = KUBE_ROUTER_JUMPS.get(rule.chain)
    if target is None or rule.table != "filter" or rule.family not in ("ip", "ip6"):
        return None
    comment = jump_spec(rule.chain)[3].encode()
    data = rule.userdata or b""
    if len(data) >= 2 and data[0] == 0 and 0 < data[1] <= len(data) - 2:
        return None  # an nft comment: iptables adds it as a second comment match
    try:
        exprs = [e for e in rule.exprs if e.name != "counter"]
        if len(exprs) != 2 or [e.name for e in exprs] != ["match", "immediate"]:
            return None
        m, imm = exprs[0].fields, exprs[1].fields
    except ValueError:
        return None
    info = m.get("info") or b""
    if m.get("name") != "comment" or info.split(b"\0", 1)[0] != comment or info[len(comment):].strip(b"\0"):
        return None
    return rule.chain if imm.get("data") == ("jump", target) else None


def analyse(snapshot: Snapshot, profiles: Iterable[Profile] = PROFILES,
            setup: Setup = Setup()) -> CompatReport:
    """Every managed table read by each of `profiles`; a finding holds for the versions
    it lists (Finding.versions)."""
    profiles = tuple(profiles) or PROFILES
    versions = tuple(p.version for p in profiles)
    ip6_kr = _ip6_kube_router(snapshot)
    managed = managed_tables(snapshot)
    findings: list[Finding] = []
    misread: list[Finding] = []
    dropped: list[DroppedChain] = []
    unnamed: list[TableRef] = []
    jumps: dict[tuple[str, str], int] = {}
    sync_blocked: set[TableRef] = set()
    for ref in managed:
        table = snapshot.tables[ref]
        named = [p for p in profiles if ref.name in tables_named(ref.family, p)]
        if len(named) < len(profiles):
            unnamed.append(ref)
        if not named:
            continue  # no command of these versions reads it
        gone = dropped_chains(table)
        for name, why in gone.items():
            dropped.append(DroppedChain(ref.family, ref.name, name, why,
                                        sum(1 for r in table.rules if r.chain == name)))
        sets = _set_key_lengths(table) if ref.family == "bridge" else None
        named = tuple(named)
        for rule in table.rules:
            if rule.chain in gone:
                continue  # never in iptables' cache: no command reads it
            if rule.chain in KUBE_ROUTER_JUMPS and ref.name == "filter" and \
                    (ref.family, rule.chain) not in jumps and kube_router_jump(rule):
                jumps[(ref.family, rule.chain)] = rule.position
            vs = verdicts(rule, named, sets)
            if not vs:
                continue
            groups: dict[RuleVerdict, list[str]] = {}
            for p, v in zip(named, vs):
                if not v.clean:
                    groups.setdefault(v, []).append(p.version)
            bads, wrongs = [], []
            for v, vers in groups.items():
                bad, wrong = _findings(rule, v)
                if bad:
                    bads.append(replace(bad, versions=tuple(vers)))
                if wrong:
                    # how it is shown can depend on the version (`255/3` from 1.8.10)
                    wrongs += _by_line(rule, wrong, vers)
            if bads:
                findings.append(_complete(_merge(bads), None, setup, ip6_kr))
                sync_blocked.add(ref)
            if wrongs:
                misread.append(_merge(wrongs))
    misread = [_complete(f, None, setup, ip6_kr,
                         TableRef(f.rule.family, f.rule.table) in sync_blocked)
               for f in misread]
    chains = tuple(dict.fromkeys(ChainRef(f.rule.family, f.rule.table, f.rule.chain)
                                 for f in findings))
    return CompatReport(tuple(managed), tuple(findings), chains, tuple(misread), tuple(dropped),
                        tuple(unnamed), versions, jumps)
