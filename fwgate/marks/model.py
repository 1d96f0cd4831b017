"""The mark model: which bits of `meta mark` / `ct mark` each rule writes and tests,
what it does then, and which base chains reach it. Pure: a Snapshot in, facts out.

A write is kept as what it does to each bit: forced to 0, forced to 1, toggled, or
given a value we cannot know here (copied from the other mark, or from packet data);
every other bit keeps its value. That covers nft's `meta/ct mark set` (a constant,
or `mark and M or X`), iptables' MARK (`(mark & ~mask) ^ value`: --set-xmark,
--set-mark, --or-mark, --and-mark, --xor-mark) and CONNMARK (set, --save-mark,
--restore-mark; kernel net/netfilter/xt_connmark.c). A test is `(mark & mask) == value`,
possibly negated; `value` None means one we do not evaluate (set lookups, ranges, < >).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from ..model import Chain, Rule, Snapshot, TableRef
from ..netlink.attrs import attr, attr_str
from ..netlink import registers
from ..netlink.consts import (
    BITWISE_BOOL, CMP_EQ, CMP_NEQ, CT_MARK, META_IIFNAME, META_MARK, META_OIFNAME, NFT_GOTO,
    NFT_JUMP, NFTA_EXPR_NAME, NFTA_VERDICT_CHAIN, NFTA_VERDICT_CODE, NLA_TYPE_MASK,
    REG_VERDICT, VERDICTS,
)
from ..netlink.exprs import SCHEMA, decode_fields, expression_spans, split_expressions
from ..netlink.registers import BYTEORDER

ALL = 0xFFFFFFFF
META, CT = "meta", "ct"   # the two marks: the packet's (skb->mark) and its connection's

# x_tables ABI numbers that nf_tables' consts do not hold.
# linux/netfilter/xt_connmark.h: enum { XT_CONNMARK_SET, XT_CONNMARK_SAVE, XT_CONNMARK_RESTORE }
XT_CONNMARK_SET, XT_CONNMARK_SAVE, XT_CONNMARK_RESTORE = 0, 1, 2
# linux/netfilter/nf_tables.h: enum nft_nat_types { NFT_NAT_SNAT, NFT_NAT_DNAT }
_NAT_TYPES = {0: "snat", 1: "dnat"}
_JUMPS = (VERDICTS[NFT_JUMP], VERDICTS[NFT_GOTO])
# what an x_tables target does, in the words of a conflict's effect
_TARGET_ACTIONS = {"MASQUERADE": "masquerade", "SNAT": "snat", "DNAT": "dnat", "REJECT": "reject",
                   "REDIRECT": "redirect", "MARK": "mark", "CONNMARK": "mark", "TPROXY": "tproxy",
                   "NFLOG": "log", "LOG": "log", "NFQUEUE": "queue"}


# --- what one rule does to marks ---------------------------------------------------

class Write(NamedTuple):   # tuples: hashed and compared in C, and there are thousands
    key: str          # META or CT
    force0: int = 0
    force1: int = 0
    toggle: int = 0
    unknown: int = 0  # bits set to a value we do not follow (shifted, packet data, maps)
    copied: int = 0   # bits that take the other mark's (CONNMARK save/restore, `set ct mark`)

    @property
    def bits(self) -> int:
        """Every bit the write may change."""
        return self.force0 | self.force1 | self.toggle | self.unknown | self.copied

    def describe(self) -> str:
        if self.force0 | self.force1 == ALL:
            return f"{self.key} mark set {self.force1:#x}"
        other = CT if self.key == META else META
        parts = [f"{word} {bits:#x}" for word, bits in (
            ("set bits", self.force1), ("clear bits", self.force0), ("toggle bits", self.toggle),
            (f"copy {other} mark into bits", self.copied), ("set unknown bits", self.unknown))
            if bits]
        return f"{self.key} mark: " + ", ".join(parts)

    def given(self, source: tuple[int, int]) -> "Write":
        """The write once the other mark is known to lie in the cube `source` (fixed
        value, free bits): copied bits become forced, or unknown where it is free."""
        value, free = source
        fixed = self.copied & ~free
        return Write(self.key, self.force0 | (fixed & ~value & ALL), self.force1 | (fixed & value),
                     self.toggle, self.unknown | (self.copied & free))


def affine_write(key: str, src: str | None, mask: int, xor: int) -> Write:
    """The write `key = (src & mask) ^ xor` (src None: a constant, mask 0)."""
    mask &= ALL
    xor &= ALL
    fixed = ~mask & ALL            # bits that no longer depend on src
    if src == key:                 # the mark changed in place
        return Write(key, fixed & ~xor, fixed & xor, mask & xor)
    if src is None:                # a constant
        return Write(key, fixed & ~xor, fixed & xor)
    return Write(key, fixed & ~xor, fixed & xor, unknown=mask & xor, copied=mask & ~xor)


def opaque_write(key: str) -> Write:
    return Write(key, unknown=ALL)


class Read(NamedTuple):
    key: str
    mask: int
    value: int | None      # None: a test we do not evaluate (lookup, range, < >)
    negate: bool = False   # the rule goes on when the masked mark is NOT value

    def describe(self) -> str:
        masked = f"{self.key} mark" + (f" & {self.mask:#x}" if self.mask != ALL else "")
        if self.value is None:
            return f"{masked} (set lookup, range or order test)"
        return f"{masked} {'!=' if self.negate else '=='} {self.value:#x}"


class RuleMarks(NamedTuple):
    """What a rule does with marks, the chains it jumps to and what it does at the end."""

    writes: tuple[Write, ...] = ()
    reads: tuple[Read, ...] = ()
    action: str = ""                           # accept, drop, jump X, masquerade, mark, ... or ""
    jumps: tuple[str, ...] = ()                # chains it jumps or goes to
    vmap: bool = False                         # a verdict map: jumps we cannot see
    # The packets it applies to, by interface: the name it requires for iifname and for
    # oifname (None: any). One VPN's rules touch only its own interface's traffic.
    iif: str | None = None
    oif: str | None = None


_NOTHING = RuleMarks()


# Registers are tracked by 32-bit word, as the kernel lays them out (netlink/registers.py).
_word = registers.word


def _load_words(name: str, f: dict) -> int:
    """How many 4-byte words an expression's load fills (so it overwrites them)."""
    return registers.words(registers.load_bytes(name, f))


def _u32(data: bytes, offset: int = 0) -> int:
    return int.from_bytes(data[offset:offset + 4], BYTEORDER)


# A register's content, when it derives from a mark: value = (src & mask) ^ xor, src a
# mark (META, CT), None for a constant, or "?" for something derived we do not follow.
_Reg = tuple


# Decoded attributes of small expressions seen before (counter, meta, cmp of a mark ...),
# per expression name; bounded, like model.py's shared expressions.
_FIELDS: dict[str, dict[bytes, dict]] = {}
_FIELDS_MAX_BYTES, _FIELDS_ENTRIES = 256, 16384
_ALWAYS = {META, CT, "immediate", "match", "target", "lookup", "nat"}   # may matter on their own
_IFACE_KEYS = {META_IIFNAME: "iif", META_OIFNAME: "oif"}   # which packets a rule applies to
_IFACES = ("iif", "oif")
_NO_FIELDS = {"counter", "masq", "reject", "redir", "queue", "log", "limit", "notrack", "quota"}


def _fields(name: str, raw: bytes) -> dict | None:
    seen = _FIELDS.setdefault(name, {})
    f = seen.get(raw)
    if f is None:
        try:
            f = decode_fields(name, raw)
        except ValueError:
            return None
        if len(raw) <= _FIELDS_MAX_BYTES and len(seen) < _FIELDS_ENTRIES:
            seen[raw] = f
    return f


_HEADER = struct.Struct("=HH")       # netlink attribute headers are host-endian


def rule_marks(rule: Rule) -> RuleMarks:
    """The marks one rule writes and tests, walking its expressions the kernel's way."""
    regs: dict[int, _Reg] = {}
    writes: list[Write] = []
    reads: list[Read] = []
    jumps: list[str] = []
    action, vmap = "", False
    ifaces: dict[str, str] = {}   # "iif"/"oif" -> the name a cmp == requires
    try:
        blob, elements = expression_spans(rule.expressions_payload)
    except ValueError:
        return _NOTHING
    for name, start, end in elements:
        # Until a register holds a mark, only a few expressions can matter: skip decoding.
        if name == "counter":
            continue
        if name in _NO_FIELDS:
            f = {}
        elif not (regs or name in _ALWAYS) \
                or (name == "match" and not blob.startswith(_MARK_MATCHES, start)):
            continue
        else:
            f = _fields(name, blob[start:end])
            if f is None:
                continue
        if name in (META, CT):
            mark_key = META_MARK if name == META else CT_MARK
            if "dreg" in f:
                word = _word(f["dreg"])
                if f.get("key") == mark_key:
                    regs[word] = (name, ALL, 0)
                else:
                    _clobber(regs, word, _load_words(name, f))
                    if name == META and f.get("key") in _IFACE_KEYS:
                        regs[word] = (_IFACE_KEYS[f["key"]], 0, 0)
            elif f.get("key") == mark_key and "sreg" in f:
                writes.append(_write_from(name, regs.get(_word(f["sreg"]))))
        elif name == "immediate":
            data = f.get("data")
            if f.get("dreg") == REG_VERDICT and isinstance(data, tuple):
                verdict, chain = data
                action = f"{verdict} {chain}" if chain else verdict
                if verdict in _JUMPS and chain:
                    jumps.append(chain)
            elif "dreg" in f and isinstance(data, bytes):
                word = _word(f["dreg"])
                _clobber(regs, word, registers.words(len(data)))
                if len(data) == 4:
                    regs[word] = (None, 0, _u32(data))
        elif name == "bitwise":
            src = regs.get(_word(f.get("sreg", 0)))
            word = _word(f.get("dreg", 0))
            _clobber(regs, word, _load_words(name, f))
            if src is not None:
                regs[word] = _bitwise(src, f)
        elif name == "cmp":
            src = regs.get(_word(f.get("sreg", 0)))
            if src is not None and src[0] in _IFACES:
                data = f.get("data")
                if f.get("op") == CMP_EQ and isinstance(data, bytes) and not data.endswith(b"*"):
                    ifaces[src[0]] = data.split(b"\0", 1)[0].decode(errors="replace")
            elif src is not None:
                read = _compare(src, f)
                if read is not None:
                    reads.append(read)
        elif name in ("lookup", "range"):
            src = regs.get(_word(f.get("sreg", 0)))
            if src is not None and src[0] in (META, CT):
                reads.append(Read(src[0], src[1], None))
            if name == "lookup" and f.get("dreg") == REG_VERDICT:
                vmap, action = True, "verdict map"
            elif "dreg" in f:
                _clobber(regs, _word(f["dreg"]), 4)
        elif name == "match":
            read = _xt_match(f)
            if read is not None:
                reads.append(read)
        elif name == "target":
            target = f.get("name", "")
            writes.extend(_xt_target(target, f.get("rev", 0), f.get("info", b"")))
            action = _TARGET_ACTIONS.get(target, target.lower())
        elif name == "masq":
            action = "masquerade"
        elif name == "nat":
            action = _NAT_TYPES.get(f.get("type"), "nat")
        elif name in ("reject", "redir", "queue", "log"):
            action = {"redir": "redirect"}.get(name, name)
        elif "dreg" in f:
            _clobber(regs, _word(f["dreg"]), _load_words(name, f))
    if writes and not action:
        action = "mark"
    if not (writes or reads or jumps or vmap or action):
        return _NOTHING
    return RuleMarks(tuple(writes), tuple(reads), action, tuple(jumps), vmap,
                     ifaces.get("iif"), ifaces.get("oif"))


def _clobber(regs: dict[int, _Reg], word: int, count: int) -> None:
    for w in range(word, word + count):
        regs.pop(w, None)


def _write_from(key: str, src: _Reg | None) -> Write:
    if src is None or src[0] == "?":
        return opaque_write(key)
    return affine_write(key, src[0], src[1], src[2])


def _bitwise(src: _Reg, f: dict) -> _Reg:
    """`dreg = (sreg & mask) ^ xor` composes; shifts and the newer ops we do not follow."""
    mask, xor = f.get("mask"), f.get("xor")
    if f.get("op", BITWISE_BOOL) == BITWISE_BOOL and isinstance(mask, bytes) \
            and isinstance(xor, bytes) and len(mask) == 4 and len(xor) == 4:
        m, x = _u32(mask), _u32(xor)
        return (src[0], src[1] & m, (src[2] & m) ^ x)
    origin = src[0]
    return ("?" + origin if origin in (META, CT) else origin or "?", ALL, 0)


def _compare(src: _Reg, f: dict) -> Read | None:
    origin, mask, xor = src
    if origin is None:                 # a constant compared: no mark in it
        return None
    key = origin.lstrip("?")
    if key not in (META, CT):
        return None
    data = f.get("data")
    op = f.get("op")
    if origin.startswith("?") or not isinstance(data, bytes) or len(data) != 4 \
            or op not in (CMP_EQ, CMP_NEQ):
        return Read(key, mask or ALL, None)
    if mask == 0:                      # nothing of the mark is left to test
        return None
    value = _u32(data) ^ xor
    if value & ~mask:                  # can never be equal: the test never depends on the mark
        return None
    return Read(key, mask, value, op == CMP_NEQ)


def _xt_match(f: dict) -> Read | None:
    """The mark test of an x_tables match."""
    name, rev, info = f.get("name", ""), f.get("rev", 0), f.get("info", b"")
    if name not in ("mark", "connmark"):
        return None
    key = META if name == "mark" else CT
    # xt_mark_mtinfo1 / xt_connmark_mtinfo1: { __u32 mark, mask; __u8 invert; }
    if rev != 1 or len(info) < 9:
        return Read(key, ALL, None)
    mark, mask, invert = _u32(info, 0), _u32(info, 4), bool(info[8])
    if mark & ~mask:           # the kernel compares (mark & mask) == mark: never true
        return None
    return Read(key, mask, mark, invert)


def comment_of(rule: Rule) -> str | None:
    """The rule's comment: iptables' `-m comment` match, else nft's (in userdata)."""
    blob = rule.expressions_payload
    if _COMMENT_NAME in blob:
        for name, raw in split_expressions(blob):
            if name == "match" and raw.startswith(_COMMENT_NAME):
                info = decode_fields(name, raw).get("info", b"")   # struct xt_comment_info
                return info.split(b"\0", 1)[0].decode(errors="replace")
    return rule.userdata_text()


@lru_cache(maxsize=4096)   # one MARK or CONNMARK target serves thousands of rules
def _xt_target(name: str, rev: int, info: bytes) -> tuple[Write, ...]:
    if name == "MARK":
        # xt_mark_tginfo2 { __u32 mark, mask; }: skb->mark = (skb->mark & ~mask) ^ mark
        if rev == 2 and len(info) >= 8:
            return (affine_write(META, META, ~_u32(info, 4), _u32(info, 0)),)
        return (opaque_write(META),)
    if name == "CONNMARK":
        return (_connmark(rev, info),)
    if name == "TPROXY" and rev in (1, 2) and len(info) >= 8:
        # xt_tproxy_target_info_v1 { __u32 mark_mask, mark_value; ... }
        return (affine_write(META, META, ~_u32(info, 0), _u32(info, 4)),)
    return ()


def _connmark(rev: int, info: bytes) -> Write:
    """xt_connmark_tginfo1 { __u32 ctmark, ctmask, nfmask; __u8 mode; }; tginfo2 puts
    shift_dir and shift_bits before mode."""
    if rev not in (1, 2) or len(info) < (15 if rev == 2 else 13):
        return opaque_write(CT)
    ctmark, ctmask, nfmask = _u32(info, 0), _u32(info, 4), _u32(info, 8)
    mode, shift = (info[14], info[13]) if rev == 2 else (info[12], 0)
    if mode == XT_CONNMARK_SET:
        return opaque_write(CT) if shift else affine_write(CT, CT, ~ctmask, ctmark)
    if mode == XT_CONNMARK_SAVE:       # ct = (ct & ~ctmask) ^ (mark & nfmask)
        return opaque_write(CT) if shift else _copy(CT, dst_mask=ctmask, src_mask=nfmask)
    if mode == XT_CONNMARK_RESTORE:    # mark = (mark & ~nfmask) ^ (ct & ctmask)
        return opaque_write(META) if shift else _copy(META, dst_mask=nfmask, src_mask=ctmask)
    return opaque_write(CT)


def _copy(key: str, dst_mask: int, src_mask: int) -> Write:
    """`key = (key & ~dst_mask) ^ (other & src_mask)`: bits in both masks take the other
    mark's value, bits only in dst_mask are cleared, bits only in src_mask are xored
    with it (unknown), the rest stay."""
    return Write(key, force0=dst_mask & ~src_mask & ALL, unknown=src_mask & ~dst_mask & ALL,
                 copied=dst_mask & src_mask & ALL)


# --- where rules sit on the packet's path ---------------------------------------------

class BaseChain(NamedTuple):
    family: str
    table: str
    chain: str
    hook: int
    priority: int
    policy: int | None = None

    @property
    def name(self) -> str:
        return f"{self.family} {self.table} {self.chain}"


class Placed(NamedTuple):
    """A rule that writes or tests a mark, as reached from one base chain."""

    rule: Rule
    marks: RuleMarks
    base: BaseChain
    first: int    # its index in the base chain's depth-first walk
    last: int     # the latest index it can have (its chain is called from several places)


@dataclass
class MarkModel:
    placed: list[Placed]
    snapshot: Snapshot
    _chains: dict = field(default_factory=dict)   # (family, table) → {chain: [rules]}, on demand

    def chain_rules(self, family: str, table: str, chain: str) -> list[Rule]:
        by_chain = self._chains.get((family, table))
        if by_chain is None:
            by_chain = self._chains[(family, table)] = {}
            found = self.snapshot.tables.get(TableRef(family, table))
            for rule in found.rules if found else ():
                by_chain.setdefault(rule.chain, []).append(rule)
        return by_chain.get(chain, [])

    def chain(self, family: str, table: str, chain: str) -> Chain | None:
        found = self.snapshot.tables.get(TableRef(family, table))
        return found.chain(chain) if found else None


FAMILIES = ("ip", "ip6", "inet")   # the families whose hooks we model (not arp/bridge/netdev)
# What rules gave, by their payload less any iptables comment: rules repeat (one per pod or
# service), and the guard reads nearly the same ruleset after every change. A few MB at most.
_DECODED: dict = {}
_DECODED_ENTRIES = 65536
_ANYWHERE = (0, 1 << 40)           # (first, last) of rules only a verdict map reaches


def build(snapshot: Snapshot) -> MarkModel:
    """Every mark-touching rule with every base chain that reaches it (jumps and gotos
    followed depth first, in rule order)."""
    placed: list[Placed] = []
    if len(_DECODED) > _DECODED_ENTRIES:   # bounded: a ruleset that churns starts it afresh
        _DECODED.clear()
    for table in snapshot.tables.values():
        if table.family not in FAMILIES:
            continue
        if table.lean:   # it holds some chains' rules only: the answer would be wrong
            raise ValueError(f"{table.ref}: a lean snapshot; mark conflicts need every rule")
        # Only the rules that touch a mark or lead somewhere matter here, in chain order.
        by_chain: dict[str, list[tuple[Rule, RuleMarks]]] = {c.name: [] for c in table.chains}
        for rule in table.rules:
            marks = scan(rule, _DECODED)
            if marks is not _NOTHING:
                by_chain.setdefault(rule.chain, []).append((rule, marks))
        reached: set[str] = set()
        with_vmap: list[BaseChain] = []
        for c in table.chains:
            if c.hook is None:
                continue
            base = BaseChain(table.family, table.name, c.name, c.hook, c.priority or 0, c.policy)
            seen, has_vmap = _walk(base, c.name, by_chain, placed)
            reached |= seen
            if has_vmap:
                with_vmap.append(base)
        # Chains only a verdict map reaches: reached from those base chains, order unknown.
        orphans = [c.name for c in table.chains if c.hook is None and c.name not in reached]
        for base in with_vmap:
            for name in orphans:
                _walk(base, name, by_chain, placed, ordered=False)
    return MarkModel(placed, snapshot)


def _walk(base: BaseChain, start: str, by_chain: dict, placed: list[Placed], ordered: bool = True
          ) -> tuple[set[str], bool]:
    """Depth-first from `start`; appends the placed mark rules. Returns the chains seen
    and whether a verdict map was met. The counter orders the rules of by_chain as a
    packet meets them (the rules left out of by_chain touch nothing); unordered, they
    count as anywhere in the base chain."""
    counter = 0
    entry: dict[str, list[int]] = {start: [0, 0]}   # chain → [first, last] entry index
    found: list[tuple[Rule, RuleMarks, str, int]] = []
    stack = [(start, 0)]
    has_vmap = False
    while stack:
        chain, pos = stack.pop()
        rules = by_chain.get(chain, ())
        while pos < len(rules):
            rule, marks = rules[pos]
            pos += 1
            counter += 1
            writes, reads, jumps, vmap = marks.writes, marks.reads, marks.jumps, marks.vmap
            has_vmap |= vmap
            if writes or reads:
                found.append((rule, marks, chain, counter))
            if jumps:
                callee = None
                for target in jumps:
                    if target in entry:   # called before (or a loop, which the kernel forbids)
                        entry[target][1] = counter
                    elif target in by_chain:
                        callee = target
                if callee is not None:    # walk the callee, then come back after this rule
                    entry[callee] = [counter, counter]
                    stack += [(chain, pos), (callee, 0)]
                    break
    new = tuple.__new__   # Placed(...) runs Python code per call; there are tens of thousands
    for rule, marks, chain, index in found:
        first, last = entry[chain]
        span = (index, index + (last - first)) if ordered else _ANYWHERE
        placed.append(new(Placed, (rule, marks, base, *span)))
    return set(entry), has_vmap


# --- reading 50k rules fast ----------------------------------------------------------------
# Most rules touch no mark: they are not decoded. A byte search of the kernel's payload
# finds the ones that may (a false hit only costs a decode); of the others, only a jump's
# target is read, from the verdict's attributes.

def _field_attr(expr: str, field: str, payload: bytes) -> bytes:
    """An attribute of an expression as the kernel lays it out."""
    number = next(n for n, (name, _) in SCHEMA[expr].items() if name == field)
    return attr(number, payload)


_MARK_KEY = _field_attr(META, "key", struct.pack(">I", META_MARK))
assert _MARK_KEY == _field_attr(CT, "key", struct.pack(">I", CT_MARK))   # one search for both
# Signs that a rule may touch a mark: a meta/ct mark key; an xt mark, connmark, MARK,
# CONNMARK or TPROXY (their names end so); a lookup (a verdict map may lead anywhere).
_SIGNS = (_MARK_KEY, b"mark\0", b"MARK\0", b"TPROXY\0", attr_str(NFTA_EXPR_NAME, "lookup"))
_MARK_MATCHES = tuple(_field_attr("match", "name", n + b"\0") for n in (b"mark", b"connmark"))
_MATCH = attr_str(NFTA_EXPR_NAME, "match")
_COMMENT_NAME = _field_attr("match", "name", b"comment\0")
_JUMP_CODES = {attr(NFTA_VERDICT_CODE, struct.pack(">i", code)): VERDICTS[code]
               for code in (NFT_JUMP, NFT_GOTO)}
_VERDICT_CODE = next(iter(_JUMP_CODES))[:-1]   # both codes but their last byte: one search
assert all(code.startswith(_VERDICT_CODE) for code in _JUMP_CODES)


def scan(rule: Rule, seen: dict | None = None) -> RuleMarks:
    """rule_marks(), without decoding the rules that cannot touch a mark. `seen` keeps
    what rules with the same expressions (but for an iptables comment) gave."""
    blob = rule.expressions_payload
    a, b, c, d, e = _SIGNS
    if a in blob or b in blob or c in blob or d in blob or e in blob:
        if seen is None:
            return rule_marks(rule)
        key = _without_comment(blob)
        marks = seen.get(key)
        if marks is None:
            marks = seen[key] = rule_marks(rule)
        return marks
    # A jump: NFTA_VERDICT_CODE (jump or goto), then NFTA_VERDICT_CHAIN (nft_verdict_dump).
    at = blob.rfind(_VERDICT_CODE)
    if at >= 0:
        verdict = _JUMP_CODES.get(blob[at:at + len(_VERDICT_CODE) + 1])
        if verdict is None:
            return _NOTHING   # accept, drop, return ...
        at += len(_VERDICT_CODE) + 1
        if at + 4 <= len(blob):
            length, kind = _HEADER.unpack_from(blob, at)
            if kind & NLA_TYPE_MASK == NFTA_VERDICT_CHAIN and 4 < length <= len(blob) - at:
                raw = blob[at + 4:at + length]
                marks = seen.get((verdict, raw)) if seen is not None else None
                if marks is None:
                    name = raw.split(b"\0", 1)[0].decode(errors="replace")
                    marks = RuleMarks(action=f"{verdict} {name}", jumps=(name,))
                    if seen is not None:
                        seen[(verdict, raw)] = marks
                return marks
        return rule_marks(rule)   # not laid out as expected: decode it
    return _NOTHING


def _without_comment(blob: bytes) -> bytes:
    """The payload less its `-m comment` expression (laid out as the kernel does:
    element header, NFTA_EXPR_NAME "match", NFTA_EXPR_DATA header, then the name)."""
    at = blob.find(_COMMENT_NAME) - 8 - len(_MATCH)
    if at < 0 or blob[at + 4:at + 4 + len(_MATCH)] != _MATCH:
        return blob
    length = _HEADER.unpack_from(blob, at)[0]
    return blob[:at] + blob[at + ((length + 3) & ~3):]
