"""Which rules iptables-nft 1.8.9 cannot read, and why. Pure: snapshots in, reports out.

iptables-nft reads the kernel's rules back in two steps, and either can fail:

1. Listing (`-S`, `-L`, `iptables-save`) first checks every expression of the
   chain (of the table, for `-S` without a chain and for `iptables-save`)
   against a fixed list: match, target, payload, meta, cmp, bitwise, counter,
   immediate, lookup, range, `limit` counting packets, `log` to an nflog group
   (nft.c `nft_is_expr_compatible`). Anything else: "chain `X' in table `T' is
   incompatible, use 'nft' tool." (exit 1), and iptables-save prints "# Table
   `T' is incompatible" instead of the table.
2. Parsing a rule (`-C`/`-D` parse each rule of the chain up to the one they
   look for; listing parses every rule) walks the expressions and tracks what
   each register holds (nft-shared.c `nft_rule_to_iptables_command_state`).
   Expressions it has no case for (ct, fib, rt, socket, numgen, ...) are
   skipped, so the register they load stays "undefined" to it and the cmp that
   reads it fails: "Error: cmp sreg undef" / "Parsing nftables rule failed"
   (exit 3). Other errors: meta keys and header fields it has no iptables
   equivalent for, and so on.

What it silently gets wrong is reported apart ("misread"): set lookups it
ignores, header fields it drops, and a cmp reading a register that a skipped
expression loaded while an earlier load still sits in iptables' idea of that
register. Its register map makes that easy: it gives NFT_REG32_xx the slot xx,
so NFT_REG32_01 shares the slot of NFT_REG_1 (and _05 that of NFT_REG_2, ...).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..model import Expr, Rule, Snapshot, TableRef
from ..netlink import consts as C
from .equivalents import iptables_equivalent

# Tables iptables-nft creates: iptables/ip6tables, arptables, ebtables.
IPTABLES_TABLES: dict[str, tuple[str, ...]] = {
    "ip": ("filter", "nat", "mangle", "raw", "security"),
    "ip6": ("filter", "nat", "mangle", "raw", "security"),
    "arp": ("filter",),
    "bridge": ("filter", "nat", "broute"),
}
XT_EXPRESSIONS = ("match", "target")

# What breaks when iptables-nft meets the rule.
BREAKS_CHECK = "check"   # -C/-D of a rule further down the chain (kube-router's start-up check)
BREAKS_LIST = "list"     # -S/-L of the chain
BREAKS_SAVE = "save"     # iptables-save of the table

_LISTABLE = {"match", "target", "payload", "meta", "cmp", "bitwise", "counter", "immediate",
             "lookup", "range"}

# nf_tables constants the parser switches on
_LL, _NETWORK, _TRANSPORT = C.PAYLOAD_LL, C.PAYLOAD_NETWORK, C.PAYLOAD_TRANSPORT
_META_PARSED = {C.META_IIF, C.META_OIF, C.META_IIFNAME, C.META_OIFNAME, C.META_BRI_IIFNAME,
                C.META_BRI_OIFNAME, C.META_MARK, C.META_PKTTYPE}
_TCP, _UDP, _ICMP, _ICMPV6 = 6, 17, 1, 58  # IPPROTO_*
_VERDICTS_PARSED = {"accept", "drop", "return", "jump", "goto"}
_META_KEY_ERROR = {"ip": "unknown ipv4 meta key", "ip6": "unknown ipv6 meta key",
                   "arp": "Unknown arp meta key"}
# the interface names ebtables has options for
_BRIDGE_META_NAMES = {C.META_IIFNAME, C.META_OIFNAME, C.META_BRI_IIFNAME, C.META_BRI_OIFNAME}
# Failures that end the program on the spot, with their exit status (subprocess-style);
# every other parse error ends it with exit 3 once the rule is parsed.
SEGFAULT = "ebtables 1.8.9 crashes on meta iif/oif: segmentation fault"
_FATAL = {SEGFAULT: -11, "BUG: nft_parse_match() unknown family 3": 1,
          "BUG: nft_parse_limit() unknown family 3": 1}
# interface names and kinds: 16 bytes
_WIDE_META = {C.META_IIFNAME, C.META_OIFNAME, C.META_BRI_IIFNAME, C.META_BRI_OIFNAME,
              C.META_IIFKIND, C.META_OIFKIND, C.META_SDIFNAME}
# addresses, labels, helper name: 16 bytes
_WIDE_CT = {C.CT_SRC, C.CT_DST, C.CT_LABELS, C.CT_HELPER, C.CT_SRC_IP6, C.CT_DST_IP6}


# --- results -------------------------------------------------------------------

@dataclass(frozen=True)
class ChainRef:
    family: str
    table: str
    chain: str


@dataclass(frozen=True)
class RuleVerdict:
    """How iptables-nft reads one rule. Indexes point into rule.exprs."""

    errors: tuple[tuple[int, str], ...] = ()     # (culprit, iptables' message): parsing fails
    unlisted: tuple[tuple[int, str], ...] = ()   # (index, what): listing refuses the chain
    misread: tuple[tuple[int, str], ...] = ()    # (culprit, what iptables gets wrong), no error
    unreadable: tuple[int, str] | None = None    # our own decoding failed: we cannot tell


@dataclass(frozen=True)
class Finding:
    rule: Rule
    reason: str                          # one line, in words an operator understands
    repairable: bool = False
    breaks: tuple[str, ...] = ()         # BREAKS_*; empty for a misread rule
    iptables_error: str | None = None    # what its rule parser prints after "Error: " (exit 3)
    unlisted: str | None = None          # the expression its listing check refuses (exit 1)


@dataclass(frozen=True)
class CompatReport:
    managed_tables: tuple[TableRef, ...] = ()
    findings: tuple[Finding, ...] = ()             # rules iptables-nft fails on
    unlistable_chains: tuple[ChainRef, ...] = ()   # chains `iptables -S CHAIN` refuses
    misread: tuple[Finding, ...] = ()              # rules it reads without error, but wrongly

    @property
    def ok(self) -> bool:
        return not self.findings

    def without(self, rules: "Iterable[Rule]") -> "CompatReport":
        """The report as it reads once these rules were re-encoded (repaired)."""
        gone = {(r.family, r.table, r.chain, r.handle) for r in rules}
        if not gone:
            return self
        keep = [f for f in self.findings
                if (f.rule.family, f.rule.table, f.rule.chain, f.rule.handle) not in gone]
        chains = dict.fromkeys(ChainRef(f.rule.family, f.rule.table, f.rule.chain) for f in keep)
        misread = tuple(f for f in self.misread
                        if (f.rule.family, f.rule.table, f.rule.chain, f.rule.handle) not in gone)
        return CompatReport(self.managed_tables, tuple(keep), tuple(chains), misread)

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
        failing = next((f for f in found if f.iptables_error), None)
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
        for f in self.findings:
            r = f.rule
            if (BREAKS_CHECK in f.breaks and (r.family, r.table, r.chain) == (family, table, chain)
                    and (position is None or r.position < position)):
                return f
        return None


# --- which tables ----------------------------------------------------------------

def is_managed(ref: TableRef, rules: tuple[Rule, ...] | list[Rule]) -> bool:
    """iptables-nft's table: one of its built-in table names, or one holding an xt
    match/target (the signal nft's "managed by iptables-nft" warning uses)."""
    if ref.name in IPTABLES_TABLES.get(ref.family, ()):
        return True
    return any(e.name in XT_EXPRESSIONS for r in rules for e in r.exprs)


def managed_tables(snapshot: Snapshot) -> list[TableRef]:
    refs = sorted(snapshot.tables, key=lambda r: (r.family, r.name))
    return [ref for ref in refs if is_managed(ref, snapshot.tables[ref].rules)]


# --- the listing check -----------------------------------------------------------------

def _unlisted(expr: Expr) -> str | None:
    """Why nft_is_expr_compatible() rejects the expression, or None."""
    if expr.name in _LISTABLE:
        return None
    f = expr.fields
    if expr.name == "limit":
        if f.get("type", 0) == 0 and f.get("flags", 0) == 0:
            return None
        return "limit expression (a byte rate or `over`)"
    if expr.name == "log":
        return None if "group" in f else "log expression without an nflog group"
    return f"{expr.name or 'unnamed'} expression"


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


def _word(reg: int) -> int:
    """The kernel's 32-bit word a register starts at."""
    reg = _normalise(reg)
    return 4 * reg if reg <= 4 else reg - 4


def _load_len(name: str, f: dict) -> int:
    if name in ("payload", "bitwise", "exthdr"):
        return int(f.get("len", 4))
    if name == "meta":
        return 16 if f.get("key") in _WIDE_META else 4
    if name == "ct":
        return 16 if f.get("key") in _WIDE_CT else 4
    if name == "fib":
        return 16 if f.get("result") == 2 else 4
    return 4


@dataclass(frozen=True)
class _Reg:
    """What iptables believes a register holds (struct nft_xt_ctx_reg). Replaced,
    never changed in place: an undefined one can be shared."""

    kind: str = "undef"      # undef | payload | immediate | meta
    src: int | None = None   # the expression iptables believes loaded it
    key: int = 0             # meta key
    base: int = 0            # payload base and offset
    offset: int = 0
    data: bytes = b""        # immediate data


_UNDEF = _Reg()


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

    def __init__(self, family: str):
        self.family = family
        self.regs = [_UNDEF] * 17
        self.truth: dict[int, int] = {}     # kernel word -> expression that really wrote it
        self.skipped: set[int] = set()      # expressions iptables never looked at
        self.proto = 0                      # cs->fw.ip.proto, for transport header matches
        self.errors: list[tuple[int, str]] = []
        self.misread: list[tuple[int, str]] = []
        self.i = 0

    # registers
    def slot(self, num: int) -> int | None:
        slot = _slot(num)
        if slot is None:
            self.errors.append((self.i, "Unknown register requested"))
        return slot

    def load(self, num: int, nbytes: int, **what) -> None:
        """A load iptables understands: it resets the register, then describes it."""
        slot = self.slot(num)
        if slot is not None:
            self.regs[slot] = _Reg(src=self.i, **what)
        self.write(num, nbytes, self.i)

    def write(self, num: int, length: int, origin: int | None) -> None:
        start = _word(num)
        for w in range(start, start + max(1, (length + 3) // 4)):
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
        r, actual = self.regs[slot], self.truth.get(_word(num))
        return r, (None if actual is None or actual == r.src else actual)

    def culprit(self, actual: int | None) -> int:
        return actual if actual is not None else self.i

    # expressions
    def counter(self, f: dict) -> None:
        pass

    def payload(self, f: dict) -> None:
        if "sreg" in f:  # a payload write: iptables reads its absent dreg as 0 and moves on
            self.misread.append((self.i, "iptables-nft ignores this header rewrite"))
            return
        self.load(f.get("dreg", 0), int(f.get("len", 0)), kind="payload", base=f.get("base", 0),
                  offset=f.get("offset", 0))

    def meta(self, f: dict) -> None:
        if "sreg" not in f:
            key = f.get("key", 0)
            self.load(f.get("dreg", 0), _load_len("meta", f), kind="meta", key=key)
            return
        r, _ = self.read(f["sreg"])
        if r is None:
            return
        if f.get("key") != C.META_NFTRACE:
            self.errors.append((self.i, "meta sreg key not supported"))
        elif r.kind != "immediate":
            self.errors.append((self.i, "meta nftrace but reg not immediate"))
        elif not any(r.data[:4]):
            self.errors.append((self.i, "trace is cleared"))

    def immediate(self, f: dict) -> None:
        data = f.get("data")
        if isinstance(data, bytes):
            # Oversized data: iptables clears the register and gives up on it.
            kind = "immediate" if len(data) <= 16 else "undef"
            self.load(f.get("dreg", 0), len(data), kind=kind, data=data)
        elif isinstance(data, tuple) and data[0] not in _VERDICTS_PARSED:
            self.misread.append((self.i, f"iptables-nft shows no target for verdict `{data[0]}`"))

    def bitwise(self, f: dict) -> None:
        sreg, dreg = f.get("sreg", 0), f.get("dreg", 0)
        src = self.slot(sreg)
        if src is None:
            return
        if _normalise(sreg) != _normalise(dreg):
            dst = self.slot(dreg)
            if dst is None:
                return
            self.regs[dst] = _Reg(**vars(self.regs[src]))  # a copy, not a fresh load
        # The result really comes from whatever loaded the source register.
        self.write(dreg, int(f.get("len", 4)), self.truth.get(_word(sreg)))
        for attr in ("xor", "mask"):
            value = f.get(attr, b"")
            if isinstance(value, bytes) and len(value) > 16:
                self.errors.append((self.i, f"bitwise {attr} too large"))
                return

    def cmp(self, f: dict) -> None:
        r, actual = self.read(f.get("sreg", 0))
        if r is None:
            return
        if r.kind == "undef":
            self.errors.append((self.culprit(actual), "cmp sreg undef"))
            return
        if actual is not None:
            what = {"meta": "meta", "payload": "header"}.get(r.kind, r.kind)
            if actual in self.skipped:
                self.misread.append((actual, f"iptables-nft skips it and reads the next "
                                             f"comparison as a {what} match of an earlier expression"))
            else:
                self.misread.append((self.i, f"iptables-nft mixes up registers and reads this "
                                             f"comparison as a {what} match of another expression"))
        if r.kind == "meta":
            self.meta_cmp(r, f)
        elif r.kind == "payload":
            self.payload_cmp(r, f)
        else:
            self.errors.append((self.i, "cmp sreg has unknown type"))

    def meta_cmp(self, r: _Reg, f: dict) -> None:
        data = f.get("data") or b"\0"
        if self.family == "bridge":
            self.bridge_meta(r)
        elif self.family in ("ip", "ip6") and r.key == C.META_L4PROTO:
            self.proto = data[0]
        elif r.key not in _META_PARSED:
            self.errors.append((r.src, _META_KEY_ERROR[self.family]))

    def bridge_meta(self, r: _Reg) -> None:
        if r.key in (4, 5):       # iif, oif: if_indextoname() into a NULL buffer
            self.errors.append((r.src, SEGFAULT))
        elif r.key == 1:          # protocol: dropped without a word
            self.misread.append((r.src, "ebtables ignores it and shows the rule without it"))
        elif r.key not in _BRIDGE_META_NAMES:
            self.errors.append((r.src, "unknown bridge meta key" if r.key in _META_PARSED
                                else "unknown meta key"))

    def payload_cmp(self, r: _Reg, f: dict) -> None:
        if r.base == _TRANSPORT:
            if self.family in ("ip", "ip6"):
                self.transport(r, f)
            else:
                self.errors.append((r.src, "invalid family for TH match"))
        elif self.family == "bridge" and r.base in (_LL, _NETWORK):
            self.ethernet(r)
        elif r.base == _NETWORK and self.family in ("ip", "ip6"):
            self.network(r, f)
        elif r.base != _NETWORK:  # arp's own header fields are not modelled
            self.misread.append((r.src, "iptables-nft ignores matches on this header"))

    def ethernet(self, r: _Reg) -> None:
        """ebtables reads destination, source and type at offsets 0, 6, 12 — whatever
        the header: `ip saddr` (network header + 12) comes out as `-p`."""
        if r.offset not in (0, 6, 12):
            self.errors.append((r.src, "unknown payload offset"))
        elif r.base != _LL:
            self.misread.append((r.src, "ebtables reads this network header field as an "
                                        "Ethernet header field"))

    def network(self, r: _Reg, f: dict) -> None:
        data = f.get("data") or b"\0"
        if self.family == "ip":
            if r.offset == 9:          # protocol
                self.proto = data[0]
            elif r.offset == 8:        # ttl
                self.hop_limit(r, f)
            elif r.offset not in (6, 12, 16):   # frag_off, saddr, daddr
                self.errors.append((r.src, "unknown payload offset"))
            return
        if r.offset == 6:              # nexthdr; 1.8.9 falls through into the hop limit case
            self.proto = data[0]
            self.misread.append((r.src, "ip6tables 1.8.9 also shows the next-header test "
                                        "as a hop-limit match"))
            self.hop_limit(r, f)
        elif r.offset == 7:
            self.hop_limit(r, f)
        elif r.offset not in (8, 24):
            self.errors.append((r.src, "unknown payload offset"))

    def hop_limit(self, r: _Reg, f: dict) -> None:
        op, value = f.get("op", 0), (f.get("data") or b"\0")[0]
        if op > C.CMP_GTE or (op == C.CMP_LTE and value == 255) or (op == C.CMP_GTE and value == 0):
            self.errors.append((r.src, "invalid ttl field match"))

    def transport(self, r: _Reg, f: dict) -> None:
        data = f.get("data") or b""
        n = len(data)
        if self.proto in (_TCP, _UDP):
            known = ((r.offset == 0 and n in (2, 4)) or (r.offset == 2 and n == 2)
                     or (r.offset == 13 and n == 1 and self.proto == _TCP))
            if not known:
                self.misread.append((r.src, "iptables-nft ignores this transport header match"))
        elif self.proto in (_ICMP, _ICMPV6):
            if n < 1 or (r.offset == 0 and n > 2) or (r.offset == 1 and n > 1):
                self.errors.append((r.src, "unexpected RHS data length"))
            elif r.offset not in (0, 1):
                self.errors.append((r.src, "unexpected payload offset"))
            elif r.offset == 1 and self.family == "ip6":
                self.errors.append((r.src, "icmp6 code with any type match not supported"))
        else:
            self.errors.append((r.src, "unsupported layer 4 protocol value"))

    def range(self, f: dict) -> None:
        r, actual = self.read(f.get("sreg", 0))
        if r is None:
            return
        if r.kind == "undef":
            self.errors.append((self.culprit(actual), "range sreg undef"))
        elif r.kind != "payload":
            self.errors.append((self.i, "range sreg type unsupported"))
        elif r.base != _TRANSPORT:
            self.errors.append((self.i, "range with unknown payload base"))
        elif not (self.proto in (_TCP, _UDP) and r.offset in (0, 2)
                  and len(f.get("from") or b"") == 2 == len(f.get("to") or b"")):
            self.misread.append((self.i, "iptables-nft ignores this port range"))

    def lookup(self, f: dict) -> None:
        if self.family == "bridge":
            return  # ebtables' among match: not modelled
        what = "map" if "dreg" in f else "set"
        self.misread.append((self.i, f"iptables-nft ignores the {what} lookup and shows the rule "
                                     f"without it"))
        self.skip("lookup", f)

    def match(self, f: dict) -> None:
        if self.family == "arp":
            self.errors.append((self.i, "BUG: nft_parse_match() unknown family 3"))

    def target(self, f: dict) -> None:
        pass

    def limit(self, f: dict) -> None:
        if self.family == "arp":
            self.errors.append((self.i, "BUG: nft_parse_limit() unknown family 3"))

    def log(self, f: dict) -> None:
        pass

    def skip(self, name: str, f: dict) -> None:
        """An expression iptables has no case for: whatever it loads, iptables never sees."""
        self.skipped.add(self.i)
        if isinstance(f.get("dreg"), int) and f["dreg"]:
            self.write(f["dreg"], _load_len(name, f), self.i)


def read_rule(rule: Rule) -> RuleVerdict:
    """How iptables-nft 1.8.9 reads one rule."""
    p = _Parse(rule.family)
    unlisted: list[tuple[int, str]] = []
    for i, expr in enumerate(rule.exprs):
        p.i = i
        try:
            if not expr.name:
                raise ValueError("expression without a name")
            f = expr.fields
            why = _unlisted(expr)
            if why:
                unlisted.append((i, why))
            if expr.name in _Parse.HANDLED:
                getattr(p, expr.name)(f)
            else:
                p.skip(expr.name, f)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            return RuleVerdict(unreadable=(i, str(exc) or type(exc).__name__))
    return RuleVerdict(tuple(p.errors), tuple(unlisted), tuple(dict.fromkeys(p.misread)))


# --- findings ---------------------------------------------------------------------------

def _finding(rule: Rule, verdict: RuleVerdict) -> tuple[Finding | None, Finding | None]:
    """(the rule's finding if iptables-nft fails on it, its misread finding)."""
    if not (verdict.unreadable or verdict.errors or verdict.misread or verdict.unlisted):
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
    if verdict.errors:
        # A crash or an internal "BUG" ends the program before the rule's other errors.
        i, message = next((e for e in verdict.errors if e[1] in _FATAL), verdict.errors[0])
        return Finding(rule, f"{describe(rule.exprs[i])}: iptables-nft cannot parse it ({message})",
                       repairable, everything, message, unlisted), None
    misread = None
    if verdict.misread:
        i, what = verdict.misread[0]
        misread = Finding(rule, f"{describe(rule.exprs[i])}: {what}", repairable)
    if unlisted:
        return Finding(rule, f"{unlisted}: iptables-nft refuses to list a chain holding it "
                             f"(-S/-L fail, iptables-save skips the table; -C still works)",
                       repairable, (BREAKS_LIST, BREAKS_SAVE), None, unlisted), misread
    return None, misread


def judge_rule(rule: Rule) -> tuple[Finding | None, Finding | None]:
    """(the rule's finding if iptables-nft fails on it, its misread finding)."""
    return _finding(rule, read_rule(rule))


def analyse(snapshot: Snapshot) -> CompatReport:
    managed = managed_tables(snapshot)
    findings: list[Finding] = []
    misread: list[Finding] = []
    unlistable: list[ChainRef] = []
    for ref in managed:
        for rule in snapshot.tables[ref].rules:
            bad, wrong = judge_rule(rule)
            if bad:
                findings.append(bad)
                chain = ChainRef(rule.family, rule.table, rule.chain)
                if chain not in unlistable:
                    unlistable.append(chain)
            if wrong:
                misread.append(wrong)
    return CompatReport(tuple(managed), tuple(findings), tuple(unlistable), tuple(misread))


# --- JSON ---------------------------------------------------------------------------------

def finding_json(f: Finding) -> dict:
    r = f.rule
    out = {"family": r.family, "table": r.table, "chain": r.chain, "handle": r.handle,
           "position": r.position, "userdata": r.userdata_text(),
           "expressions": r.expr_names, "reason": f.reason, "repairable": f.repairable,
           "breaks": list(f.breaks), "iptables_error": f.iptables_error,
           "unlisted": f.unlisted}
    if f.repairable:
        equivalent = iptables_equivalent(r)
        out["equivalent"] = equivalent.text if equivalent else None
    return out


def report_json(report: CompatReport) -> dict:
    """DESIGN section 3's shape, plus the chains iptables cannot list and misread rules."""
    return {
        "ok": report.ok,
        "managed_tables": [{"family": t.family, "table": t.name} for t in report.managed_tables],
        "incompatible": [finding_json(f) for f in report.findings],
        "unlistable_chains": [{"family": c.family, "table": c.table, "chain": c.chain}
                              for c in report.unlistable_chains],
        "misread": [finding_json(f) for f in report.misread],
    }
