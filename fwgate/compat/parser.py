"""How one iptables-nft version reads one rule: a model of its rule parser
(nft_rule_to_iptables_command_state) and its listing check (nft_is_expr_compatible),
per version through a Profile (profiles.py). Pure: a rule in, a RuleVerdict out.
reader.py says what the verdicts mean for a node; memo.py remembers them by shape."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

from ..model import Expr, Rule
from ..netlink import consts as C
from ..netlink import registers
from .profiles import OLDEST, Profile

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



def port_range_after(lo: int, hi: int, op: int, low: int, high: int) -> tuple[int, int]:
    """The port range iptables keeps after one more test (port_match_single_to_range):
    == and != set both ends, < and <= the upper one, > and >= the lower one."""
    if op in (C.CMP_EQ, C.CMP_NEQ):
        return low, high
    if op == C.CMP_LT:
        return lo, max(low - 1, 1)
    if op == C.CMP_LTE:
        return lo, low
    if op == C.CMP_GT:
        return min(low + 1, 65535), hi
    if op == C.CMP_GTE:
        return low, hi
    return lo, hi

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
        self.icmp_code_tests: list[tuple[int, int, int]] = []   # code-only tests: op, value, where
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

    def compared(self, f: dict, op: str) -> _Reg | None:
        """The register a cmp or range compares, as iptables sees it; None after the
        error iptables gives (an undefined register: "cmp sreg undef")."""
        r, actual = self.read(f.get("sreg", 0))
        if r is None:
            return None
        if r.kind == "undef":
            self.error(f"{op} sreg undef", self.culprit(actual))
            return None
        self.aliased(r, actual)
        return r

    def cmp(self, f: dict) -> None:
        r = self.compared(f, "cmp")
        if r is None:
            return
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
                if r.offset == 1:
                    self.icmp_code_tests.append((op, data[0], r.src))
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
        lo, hi = port_range_after(lo, hi, op, low, high)
        true = {C.CMP_EQ: (low, high), C.CMP_LT: (0, low - 1), C.CMP_LTE: (0, low),
                C.CMP_GT: (low + 1, 65535), C.CMP_GTE: (low, 65535)}.get(op)
        if true:
            tlo, thi = max(tlo, true[0]), min(thi, true[1])
        self.port_ranges[name] = [lo, hi, tlo, thi, seen | {(op, low, high)},
                                  neq or op == C.CMP_NEQ, self.i]
        if seen:
            self.values = True  # two tests of one port: the verdict reads their values

    def range(self, f: dict) -> None:
        r = self.compared(f, "range")
        if r is None:
            return
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
    if p.icmp_code_tests and all(_holds(op, x, v) for x in range(256)
                                 for op, v, _ in p.icmp_code_tests):
        # the code tests select every code (`icmp code >= 0`): read as any type and any
        # code (xt_icmp's type 255), they match the same packets
        harmless = {at for _, _, at in p.icmp_code_tests}
        p.misread = [m for m in p.misread if not (m.index in harmless and m.kind == "icmp")]
        p.icmp_any = [(at, code) for at, code in p.icmp_any if at not in harmless]
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
