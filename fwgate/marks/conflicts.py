"""Mark-bit conflicts: one component changes bits of a mark that another component's
rule tests later on the packet's path, so that test can come out otherwise. Pure.

Order. A packet meets the hooks in one of three orders: prerouting → forward →
postrouting, prerouting → input, output → postrouting; within a hook, base chains
run by priority. Base chains on the same hook and priority run newest-registered
first, and a full `iptables-restore` re-registers its table, so between two such
chains both orders count ("tie"). A connection's mark outlives the packet: a write
to `ct mark` reaches tests on the connection's later packets, in any hook.

Can the write change the test? The mark a writer can see is modelled as a few
cubes (fixed bits + free bits), from 0 and the writes of the base chains that run
before the writer's (any component, each taken or not). For each cube we ask whether
some value in it tests otherwise once written: so disjoint bits never conflict, and
neither does a write that leaves the tested bits as they already are (Netbird's
0x1bd20 written on a fresh packet clears 0x4000, which was 0). Writes inside the
writer's own base chain are not in its cubes: iptables chains for different pods or
services exclude each other, and counting them together would invent values no
packet has.

Outside nf_tables (marks/routing.py). A socket mark is a writer at the very start of
the output hook; a routing policy rule is a reader at the routing decision after
prerouting, and at the re-route after output, which only `type route` chains (and the
socket's own mark) can change.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..model import Rule, Snapshot, TableRef
from ..netlink.exprs import decode_fields, split_expressions
from ..netlink.consts import (
    HOOK_NAMES, META_MARK, NF_DROP, NF_INET_FORWARD, NF_INET_LOCAL_IN, NF_INET_LOCAL_OUT,
    NF_INET_POST_ROUTING, NF_INET_PRE_ROUTING,
)
import struct

from ..netlink.consts import META_IIFNAME, META_OIFNAME
from .model import (
    _COMMENT_NAME, _DECODED, _VERDICT_CODE, _field_attr, ALL, CT, META, BaseChain, MarkModel,
    Placed, Read, Write, build, rule_marks, scan,
)
from .owners import UNKNOWN, owner_of
from .routing import Outside, RouteRule, SocketMark, rule_owner, socket_owner
from .states import ESTABLISHED_OR_RELATED, conditions

PATHS = ((NF_INET_PRE_ROUTING, NF_INET_FORWARD, NF_INET_POST_ROUTING),
         (NF_INET_PRE_ROUTING, NF_INET_LOCAL_IN),
         (NF_INET_LOCAL_OUT, NF_INET_POST_ROUTING))
_L3 = {"ip": (4,), "ip6": (6,), "inet": (4, 6)}
MAX_CUBES = 64   # beyond this, the cubes merge into one (coarser, still sound)

BEFORE, TIE, LATER_PACKETS = "before", "tie", "later packets"
# Severity: a harm is an alarm (exit 1, the metric, a journal warning); a shared bit is
# information (`fwgate conflicts --all`), never counted.
HARM, SHARED = "harm", "shared"
# Bits two components share on purpose: (writer, reader, mark, bits) -> why, with its
# upstream source. Not an alarm, whatever the order.
COOPERATIONS = {
    ("kube-proxy", "flannel", META, 0x4000):
        "flannel skips masquerading what kube-proxy marked 0x4000, so kube-proxy's own "
        "KUBE-POSTROUTING masquerades it once (flannel pkg/trafficmngr/iptables/iptables.go "
        "MasqRules: \"will not masquerade traffic marked by the kube-proxy\")",
}
# Bits a reader leaves to another component on purpose, whoever set them: (reader, mark,
# bits) -> (the component it defers to, why). Shared only while that one tests them too:
# then what the bits do to the packet is judged there.
DEFERS = {
    ("flannel", META, 0x4000): (
        "kube-proxy", "flannel returns what carries kube-proxy's masquerade bit 0x4000 so that "
        "kube-proxy's KUBE-POSTROUTING decides its masquerade (flannel "
        "pkg/trafficmngr/iptables/iptables.go MasqRules); that test is judged on its own"),
}
# A test whose rule only counts or logs changes nothing of the packet's fate.
_NO_DECISION = ("", "log", "nop", "goto")
# Where the marks outside nf_tables sit among the base chains: a socket's mark before
# every output chain; the routing decisions after every chain of their hook.
_FIRST, _LAST = -(1 << 40), 1 << 40
SOCKET, ROUTING = "socket mark", "ip rule"


@dataclass(frozen=True)
class Side:
    """One end of a conflict: a rule (the first of `similar` more with the same effect),
    or, outside nf_tables, a marked socket or a routing policy rule (`source`)."""

    rule: Rule | None
    owner: str
    base: BaseChain
    what: str        # the write, or the test and what the rule then does
    similar: int = 0
    source: str | None = None   # what it is when it is no nf_tables rule
    kind: str = "nftables"      # "nftables", "socket mark" or "ip rule"


@dataclass(frozen=True)
class Conflict:
    """A writer of one component changes `bits` of a mark that a reader of another tests
    later on the packet's path, and the test can come out otherwise."""

    key: str              # META or CT
    bits: int             # bits the writer changes that the reader tests
    writer: Side
    reader: Side
    path: tuple[str, ...]  # hooks, from the writer's to the reader's
    order: str            # BEFORE, TIE (registration order decides) or LATER_PACKETS
    effect: str           # what the reader then does: "accept missed", "masquerade skipped", ...
    then: str | None = None   # what follows in its chain: "drop by ip netbird ... handle 15"
    severity: str = HARM  # HARM or SHARED
    why_shared: str | None = None

    @property
    def harm(self) -> bool:
        return self.severity == HARM

    @property
    def ident(self) -> tuple:
        """Stable across rule handles and kube-router's per-sync chain names: for telling
        a new conflict from one already reported."""
        return (self.key, self.bits, self.writer.owner, self.writer.base.name,
                self.reader.owner, self.reader.base.name, self.effect)


# --- cubes: sets of marks with some bits fixed and others free --------------------

Cube = tuple[int, int]   # (value of the fixed bits, free bits)


def apply(write: Write, cube: Cube) -> Cube:
    value, free = cube
    keep = ALL & ~write.bits
    value = (value & keep) | write.force1 | (~value & write.toggle)
    free = (free & (keep | write.toggle)) | write.unknown | write.copied
    return value & ~free & ALL, free


def _close(cubes: set[Cube], writes: list[Write]) -> set[Cube]:
    """The cubes with each write taken or not, in order."""
    for write in writes:
        cubes = cubes | {apply(write, c) for c in cubes}
        if len(cubes) > MAX_CUBES:
            cubes = {_hull(cubes)}
    return cubes


def _hull(cubes: set[Cube]) -> Cube:
    values = [v for v, _ in cubes]
    free = 0
    for v, f in cubes:
        free |= f | (v ^ values[0])
    return values[0] & ~free, free


def _can(cube: Cube, bits: int, want: int) -> bool:
    """Can the bits hold want's values in this cube?"""
    value, free = cube
    return not (bits & ~free & (value ^ want))


def flips(write: Write, read: Read, cube: Cube) -> tuple[bool, bool]:
    """(can a value in the cube test equal before the write and unequal after,
        can it test unequal before and equal after). An unevaluated test counts as
        both whenever the write can change a tested bit."""
    value, free = cube
    mask = read.mask
    f0, f1, tg, unk = write.force0 & mask, write.force1 & mask, write.toggle & mask, \
        (write.unknown | write.copied) & mask
    if read.value is None:
        changes = bool(tg | unk | (f1 & (free | ~value)) | (f0 & (free | value)))
        return changes, changes
    c = read.value
    # equal → unequal: the cube holds c, and the write moves a tested bit away from c
    away = (f1 & ~c) | (f0 & c) | tg | unk
    lost = bool(away) and _can(cube, mask, c)
    # unequal → equal: forced bits agree with c, toggled ones can start at ~c, the
    # untouched ones at c, and the value differed from c somewhere before
    kept = mask & ~(f0 | f1 | tg | unk)
    gained = not (f1 & ~c) and not (f0 & c) and _can(cube, tg, ~c) and _can(cube, kept, c) \
        and bool(tg or ((f0 | f1 | unk) & (free | (value ^ c))))
    return lost, gained


# --- what the reader then does ----------------------------------------------------------

_PHRASES = {"accept": ("accept missed", "accepted unexpectedly"),
            "drop": ("drop skipped", "dropped"),
            "reject": ("reject skipped", "rejected"),
            "masquerade": ("masquerade skipped", "masqueraded unexpectedly"),
            "lookup": ("rerouted: its table skipped", "rerouted: into its table"),
            "blackhole": ("rerouted: blackhole skipped", "rerouted: blackholed"),
            "unreachable": ("rerouted: unreachable skipped", "rerouted: unreachable"),
            "prohibit": ("rerouted: prohibit skipped", "rerouted: prohibited"),
            "snat": ("snat skipped", "source-NATed unexpectedly"),
            "dnat": ("dnat skipped", "destination-NATed unexpectedly"),
            "redirect": ("redirect skipped", "redirected unexpectedly"),
            "return": ("return missed", "returns early"),
            "mark": ("mark change skipped", "marked unexpectedly"),
            "verdict map": ("verdict map takes another branch",) * 2}


def _phrase(action: str, fires: bool) -> str:
    verb, _, chain = action.partition(" ")
    if verb in ("jump", "goto") and chain:
        return f"{verb} to {chain} missed" if not fires else f"{verb}s to {chain} unexpectedly"
    if verb == "lookup" and chain:
        return f"rerouted: table {chain} skipped" if not fires else f"rerouted: into table {chain}"
    missed, fired = _PHRASES.get(verb, (f"{action} skipped", f"{action} unexpectedly"))
    return fired if fires else missed


def _effect(read: Read, action: str, lost: bool, gained: bool) -> str:
    # The rule goes on when (mark & mask) == value, or != with negate.
    outcomes = []
    if lost:
        outcomes.append(_phrase(action, fires=read.negate))
    if gained:
        outcomes.append(_phrase(action, fires=not read.negate))
    return " or ".join(dict.fromkeys(outcomes))


def _then(model: MarkModel, rule: Rule, effect: str) -> str | None:
    """What the rest of the reader's chain then does: the drop waiting after a missed
    accept, the masquerade an early return skips."""
    if "accept missed" in effect:
        wanted, verb = ("drop", "reject"), "then"
    elif "return missed" in effect:   # the rest of the chain runs
        wanted, verb = ("masquerade", "snat", "dnat", "accept", "drop", "reject"), "then"
    elif "returns early" in effect:
        wanted, verb = ("masquerade", "snat", "dnat", "accept", "drop", "reject"), "skipping"
    else:
        return None
    rules = model.chain_rules(rule.family, rule.table, rule.chain)
    at = next((i for i, r in enumerate(rules) if r.handle == rule.handle), len(rules))
    for later in rules[at + 1:]:
        action = rule_marks(later).action
        if action in wanted:
            return f"{verb} {action} by {later.ref}"
    info = model.chain(rule.family, rule.table, rule.chain)
    if verb == "then" and info is not None and info.hook is not None and info.policy == NF_DROP:
        return "then the chain's policy drops it"
    return None


# --- grouping: rules with the same effect in the same base chain count once --------------

@dataclass
class _Group:
    owner: str
    base: BaseChain
    op: Write | Read
    action: str
    places: list[Placed]
    first: int = 0    # the earliest any of them runs in the base chain's walk
    last: int = 0     # the latest
    iif: str | None = None   # the packets its rules apply to (None: any interface)
    oif: str | None = None
    source: str | None = None   # outside nf_tables: the socket or routing rule
    kind: str = "nftables"
    similar: int = 0
    # a copy that runs only when the source mark passes this test (wg-quick's
    # `meta mark 0xca6c ct mark set meta mark`): it writes nothing where it cannot
    guard: Read | None = None
    paths: tuple | None = None   # the only paths it is on (None: every path through its hook)
    # a test whose rule only copies the packet's mark into the other (a guarded save):
    # whether it copies is followed into the connection's marks, and judged where those
    # are tested, so the test is no decision of its own
    copy_only: bool = False


def _meet(a: _Group, b: _Group) -> bool:
    """Can one packet pass both? Not when they require different interfaces."""
    return (a.iif is None or b.iif is None or a.iif == b.iif) and \
        (a.oif is None or b.oif is None or a.oif == b.oif)


# --- interfaces a chain inherits from the jumps that reach it --------------------------

_IFACE_KEYS = tuple(_field_attr(META, "key", struct.pack(">I", k))
                    for k in (META_IIFNAME, META_OIFNAME))
_ANY = (None, None)


class _Inherited:
    """The interfaces every jump into a chain requires (its own, or inherited in turn):
    Netbird's `-A FORWARD -i wt0 -j NETBIRD-RT-FWD-IN` makes every rule of that chain a
    rule for wt0's packets. Computed per table, on demand."""

    def __init__(self, model: MarkModel):
        self.model = model
        # (family, table) → ({chain: [(caller, iif, oif)]}, base chain names), or None
        # when no jump in the table requires an interface (then nothing inherits one)
        self.callers: dict[tuple, tuple | None] = {}
        self.memo: dict[tuple, tuple] = {}

    def _index(self, family: str, table: str) -> tuple | None:
        key = (family, table)
        if key in self.callers:
            return self.callers[key]
        found = self.model.snapshot.tables.get(TableRef(family, table))
        rules = found.rules if found else ()
        iif_key, oif_key = _IFACE_KEYS
        # a byte search first: most tables (kube-router's, kube-proxy's) have no such jump
        if not any((iif_key in p or oif_key in p) and _VERDICT_CODE in p
                   for p in (r.expressions_payload for r in rules)):
            self.callers[key] = None
            return None
        index: dict[str, list[tuple]] = {}
        bases = {c.name for c in found.chains if c.hook is not None}
        self.callers[key] = (index, bases)
        vmaps: set[str] = set()
        for rule in rules:
            marks = scan(rule, _DECODED)
            if marks.vmap:
                vmaps.add(rule.chain)
            if not marks.jumps:
                continue
            iif, oif = marks.iif, marks.oif
            if iif is None and oif is None and any(k in rule.expressions_payload
                                                   for k in _IFACE_KEYS):
                full = rule_marks(rule)   # the fast scan of a jump reads no interface
                iif, oif = full.iif, full.oif
            for target in marks.jumps:
                index.setdefault(target, []).append((rule.chain, iif, oif))
        for chain in found.chains:
            if chain.hook is None and vmaps:   # a verdict map may lead anywhere
                index.setdefault(chain.name, []).append((next(iter(vmaps)), None, None))
        return self.callers[key]

    def of(self, family: str, table: str, chain: str, seen: frozenset = frozenset()) -> tuple:
        key = (family, table, chain)
        got = self.memo.get(key)
        if got is not None:
            return got
        indexed = self._index(family, table)
        callers = indexed[0].get(chain, []) if indexed else []
        if not callers or chain in indexed[1] or key in seen:
            got = _ANY
        else:
            wants = set()
            for caller, iif, oif in callers:
                up_iif, up_oif = self.of(family, table, caller, seen | {key})
                wants.add((iif or up_iif, oif or up_oif))
            iifs, oifs = {w[0] for w in wants}, {w[1] for w in wants}
            got = (iifs.pop() if len(iifs) == 1 else None, oifs.pop() if len(oifs) == 1 else None)
        self.memo[key] = got
        return got


def _groups(model: MarkModel) -> tuple[list[_Group], list[_Group]]:
    writers: dict[tuple, _Group] = {}
    readers: dict[tuple, _Group] = {}
    owners: dict[int, str] = {}
    inherited = _Inherited(model)
    for p in model.placed:
        rule, marks, base = p.rule, p.marks, p.base
        owner = owners.get(id(rule))
        if owner is None:
            owner = owners[id(rule)] = owner_of(rule, marks)
        if rule.chain != base.chain and (marks.iif is None or marks.oif is None):
            up_iif, up_oif = inherited.of(rule.family, rule.table, rule.chain)
            if (up_iif and not marks.iif) or (up_oif and not marks.oif):
                marks = marks._replace(iif=marks.iif or up_iif, oif=marks.oif or up_oif)
        writes, guards = marks.writes, (None,) * len(marks.writes)
        if any(w.copied for w in writes):
            writes, guards = zip(*(_guarded_copy(w, marks.reads) for w in writes))
        for ops, conds, found in ((writes, guards, writers),
                                  (marks.reads, (None,) * len(marks.reads), readers)):
            for op, guard in zip(ops, conds):
                key = (owner, base, op, marks.action, marks.iif, marks.oif, guard)
                group = found.get(key)
                if group is None:
                    group = found[key] = _Group(owner, base, op, marks.action, [],
                                                iif=marks.iif, oif=marks.oif, guard=guard,
                                                copy_only=found is readers and _copy_only(marks))
                group.places.append(p)
    for group in (*writers.values(), *readers.values()):
        group.first = min(p.first for p in group.places)
        group.last = max(p.last for p in group.places)
    return list(writers.values()), list(readers.values())


def _copy_only(marks) -> bool:
    """Does the rule only copy one mark into the other, after testing it?"""
    return marks.action == "mark" and bool(marks.writes) and all(
        w.copied and w.bits == w.copied and all(r.key != w.key for r in marks.reads)
        for w in marks.writes)


def _guarded_copy(write: Write, reads: tuple[Read, ...]) -> tuple[Write, Read | None]:
    """A copy from the other mark in a rule that first tests that mark for a value copies
    that value: wg-quick's `meta mark 0xca6c ct mark set meta mark` sets ct mark 0xca6c.
    The write, and the test it runs under (None: no such test)."""
    other = CT if write.key == META else META
    for read in reads:
        if read.key == other and read.value is not None and not read.negate:
            return write.given((read.value, ~read.mask & ALL)), read
    return write, None


def _same_owner(w: _Group, r: _Group) -> bool:
    if w.owner != r.owner:
        return False
    # two rules nobody claims are one component's only when they share a table
    return w.owner != UNKNOWN or (w.base.family, w.base.table) == (r.base.family, r.base.table)


# --- the search ---------------------------------------------------------------------------

def _order(path: tuple[int, ...], w: _Group, r: _Group) -> str | None:
    """Does the writer run before the reader on this path?"""
    if w.base.hook not in path or r.base.hook not in path:
        return None
    wk = (path.index(w.base.hook), w.base.priority)
    rk = (path.index(r.base.hook), r.base.priority)
    if wk < rk:
        return BEFORE
    if wk > rk:
        return None
    if w.base != r.base:
        return TIE
    return BEFORE if w.first < r.last else None


# Connections by the paths their packets take: one with an end on this node sends its
# packets prerouting → input one way and output → postrouting the other; a forwarded one
# both ways prerouting → forward → postrouting. A connection mark written on one kind
# never reaches the other's packets: wg-quick saves 0xca6c on what its socket sends, and
# restores it on the replies, which are for this node, never forwarded.
LOCAL, FORWARDED = "local", "forwarded"
_CLASS = {PATHS[0]: FORWARDED, PATHS[1]: LOCAL, PATHS[2]: LOCAL}


class _Cubes:
    """The cubes a writer can see, per (path, l3, key), from the writes of the base
    chains before its own (and of the others tied with it)."""

    def __init__(self, writers: list[_Group]):
        self.writers = writers
        self.cache: dict[tuple, set[Cube]] = {}
        ct_writers = [g for g in writers if g.op.key == CT]
        # First the connection marks without the copies: the restores the copies' sources
        # see take those (a copy's source restored from its own copy is not followed).
        constants = {c: [g.op for g in ct_writers if g.op.copied == 0 and g.guard is None
                         and any(_CLASS[p] == c for p in _paths(g))] for c in (LOCAL, FORWARDED)}
        self.ct = {c: _close(_close({(0, 0)}, ops), ops) for c, ops in constants.items()}
        ct_writes = {c: list(ops) for c, ops in constants.items()}
        for g in ct_writers:
            if not g.op.copied and g.guard is None:
                continue
            # A copy takes what the packet's mark can hold where it runs: Tailscale's
            # save in mangle OUTPUT sees socket marks, not kube-router's later filter marks;
            # a guarded one runs only on the paths where its test can hold.
            for path in _paths(g):
                sources: set[Cube] = set()
                for l3 in _L3[g.base.family]:
                    sources |= self.meta_before(path, l3, g)
                guard = g.guard
                if guard is not None:
                    if any(_can(c, guard.mask, guard.value) for c in sources):
                        ct_writes[_CLASS[path]].append(g.op)
                    continue
                if len(sources) > MAX_CUBES:
                    sources = {_hull(sources)}
                ct_writes[_CLASS[path]] += [g.op.given(c) for c in sources]
        # any packet of the connection
        self.ct = {c: _close(_close({(0, 0)}, ops), ops) for c, ops in ct_writes.items()}
        self.cache.clear()

    def ct_on(self, path: tuple[int, ...]) -> set[Cube]:
        """The connection marks a packet on this path can carry."""
        return self.ct[_CLASS[path]]

    def seen_by(self, path: tuple[int, ...], l3: int, g: _Group) -> set[Cube]:
        if g.op.key == CT:
            return self.ct_on(path)
        return self.meta_before(path, l3, g)

    def meta_before(self, path: tuple[int, ...], l3: int, g: _Group) -> set[Cube]:
        """The packet marks g can see: from the META writes of the base chains before
        g's own (and those tied with it)."""
        cache_key = (path, l3, g.base, g.iif, g.oif)
        cubes = self.cache.get(cache_key)
        if cubes is None:
            # Only writes a packet of the writer's own class can have met.
            before = [w for w in self.writers
                      if w.op.key == META and l3 in _L3[w.base.family] and w.base != g.base
                      and _meet(w, g) and _order(path, w, g) in (BEFORE, TIE)]
            before.sort(key=lambda w: (path.index(w.base.hook), w.base.priority))
            ops: list[Write] = []
            for w in before:   # a restore writes what the connection's mark can hold
                ops += [w.op.given(c) for c in self.ct_on(path)] if w.op.copied else [w.op]
            cubes = self.cache[cache_key] = _close({(0, 0)}, ops)
        return cubes


def _paths(g: _Group) -> tuple[tuple[int, ...], ...]:
    """The paths a group's rules are on."""
    return tuple(p for p in PATHS if g.base.hook in p and (g.paths is None or p in g.paths))


def _outside_groups(outside: Outside) -> tuple[list[_Group], list[_Group]]:
    """Socket marks as writers, routing policy rules as readers."""
    writers = [_socket_group(s, socket_owner(s, outside.rules)) for s in outside.sockets]
    readers = []
    for rule in outside.rules:
        owner = rule_owner(rule)
        readers.append(_rule_group(rule, owner, NF_INET_PRE_ROUTING, "routing decision"))
        if rule.iif in (None, "lo"):   # locally sent packets come from lo
            readers.append(_rule_group(rule, owner, NF_INET_LOCAL_OUT, "output re-route"))
    return writers, readers


def _socket_group(sock: SocketMark, owner: str) -> _Group:
    base = BaseChain(sock.family, "", SOCKET, NF_INET_LOCAL_OUT, _FIRST)
    return _Group(owner, base, sock.write, "mark", [], source=sock.source, kind=SOCKET,
                  similar=sock.similar)


def _rule_group(rule: RouteRule, owner: str, hook: int, where: str) -> _Group:
    base = BaseChain(rule.family, "", where, hook, _LAST)
    # after `lookup local`, a received packet reaching the rule is one to forward
    paths = (PATHS[0],) if hook == NF_INET_PRE_ROUTING and rule.after_local else None
    return _Group(owner, base, rule.read, rule.verdict, [], iif=None if rule.invert else rule.iif,
                  oif=None if rule.invert else rule.oif, source=rule.describe(), kind=ROUTING,
                  paths=paths)


def _reroutes(model: MarkModel, w: _Group, r: _Group) -> bool:
    """Can the writer change the routing rule's answer? Locally sent packets are routed
    again after output only by `type route` chains (and sent with their socket's mark)."""
    if r.kind != ROUTING or r.base.hook != NF_INET_LOCAL_OUT or w.kind == SOCKET:
        return True
    if w.base.hook != NF_INET_LOCAL_OUT:
        return False
    chain = model.chain(w.base.family, w.base.table, w.base.chain)
    return chain is not None and chain.type == "route"


def find_conflicts(snapshot: Snapshot, outside: Outside | None = None) -> tuple[Conflict, ...]:
    """Every mark conflict in the snapshot's ip, ip6 and inet tables (and, given what the
    node holds outside nf_tables, its marked sockets and routing rules), in a stable order."""
    model = build(snapshot)
    writers, readers = _groups(model)
    if outside is not None:
        more_writers, more_readers = _outside_groups(outside)
        writers += more_writers
        readers += more_readers
    cubes = _Cubes(writers)
    by_base: dict[BaseChain, tuple[list[_Group], list[_Group]]] = {}
    for groups, side in ((writers, 0), (readers, 1)):
        for g in groups:
            by_base.setdefault(g.base, ([], []))[side].append(g)
    found: dict[tuple, Conflict] = {}
    testers = frozenset((r.owner, r.op.key, r.op.mask) for r in readers)
    decided = _Decided(model)
    for r in readers:
        if r.action in _NO_DECISION or r.copy_only:
            continue
        for w in writers:
            bits = w.op.bits & r.op.mask
            if not bits or w.op.key != r.op.key or _same_owner(w, r):
                continue
            if w.op.key == META and not _meet(w, r):
                continue  # a packet mark lives one packet; a ct mark, the connection's
            if not _reroutes(model, w, r):
                continue
            l3s = [v for v in _L3[w.base.family] if v in _L3[r.base.family]]
            for l3 in l3s:
                hit = _check(model, cubes, w, r, l3, bits)
                if hit is not None:
                    again = decided.refixed(w, bits)
                    if again is not None and _check(model, cubes, replace(w, op=again), r, l3,
                                                    bits) is None:
                        continue   # its own component sets the bits back before they leave
                if hit is not None:
                    hit = _classify(hit, testers)
                    if hit.harm:
                        shadow = _shadowed(by_base, w, r) or decided.of(r) \
                            or _accepted_by_state(model, w, hit) or decided.skips_nothing(r, hit)
                        if shadow:
                            hit = replace(hit, severity=SHARED, why_shared=shadow)
                    k = (id(hit.writer.rule or w), id(hit.reader.rule or r), hit.key, hit.bits)
                    found.setdefault(k, hit)
                    break
    return tuple(sorted(found.values(), key=_sort_key))


def _check(model: MarkModel, cubes: _Cubes, w: _Group, r: _Group, l3: int, bits: int
           ) -> Conflict | None:
    write, read = w.op, r.op
    for path in PATHS:
        if (w.paths and path not in w.paths) or (r.paths and path not in r.paths):
            continue
        # A restore from ct mark writes what the connection's mark can hold.
        writes = [write.given(c) for c in cubes.ct_on(path)] \
            if write.key == META and write.copied else [write]
        order = _order(path, w, r)
        if order is None and write.key == CT and w.base.hook in path and r.base.hook in path:
            order = LATER_PACKETS
        if order is None:
            continue
        lost = gained = False
        for cube in cubes.seen_by(path, l3, w):
            for one in writes:
                a, b = flips(one, read, cube)
                lost, gained = lost or a, gained or b
        if not (lost or gained):
            continue
        effect = _effect(read, r.action, lost, gained)
        if order == LATER_PACKETS:
            hooks = (HOOK_NAMES[w.base.hook], HOOK_NAMES[r.base.hook])
        else:
            hooks = tuple(HOOK_NAMES[h] for h in
                          path[path.index(w.base.hook):path.index(r.base.hook) + 1])
        reader = _side(r, f"{read.describe()}" + (f" → {r.action}" if r.action else ""))
        then = _then(model, reader.rule, effect) if reader.rule is not None else None
        return Conflict(write.key, bits, _side(w, write.describe()), reader, hooks, order,
                        effect, then)
    return None


# --- shadows: the writer's own component ends the packet's way first --------------------

_TERMINAL = ("accept", "drop", "reject")


def _shadowed(by_base: dict, w: _Group, r: _Group) -> str | None:
    """In one base chain, the writer's component may mark the packet and then accept (or
    drop) it on that mark before the reader's rule: kube-router's pod chain sets 0x20000
    and its KUBE-ROUTER-FORWARD accepts 0x20000 before Netbird's rule further down FORWARD
    (iptables mode). Then no packet the write reaches meets the reader — while that rule
    order holds: the next restart or sync of either can change it. Why, or None."""
    if w.base != r.base or not w.places:
        return None
    writers, readers = by_base.get(w.base, ((), ()))
    chain = min(w.places, key=lambda p: p.first).rule.chain
    for guard in readers:
        if guard.owner != w.owner or guard.action not in _TERMINAL                 or not w.first < guard.first < r.first or guard.iif or guard.oif:
            continue
        guard_rule = min(guard.places, key=lambda p: p.first).rule
        if not _only_marks(guard_rule):
            continue
        for marker in writers:
            if marker.owner != w.owner or not _makes_true(marker.op, guard.op):
                continue
            after = [p for p in marker.places if p.rule.chain == chain
                     and w.first <= p.first < guard.first and _only_marks(p.rule)]
            if after:
                return (f"shadowed: {w.owner} {after[0].rule.ref} marks these packets and "
                        f"{guard_rule.ref} {guard.action}s them before the reader's rule; "
                        f"harm only if that rule order changes (a restart, the next sync)")
    return None


# --- latent: the reader's own component decides its test first -------------------------

_NOT_CONDITIONS = {"counter", "immediate", "target", "log", "limit"}


def _conditions(rule: Rule) -> list[bytes] | None:
    """What a rule requires of a packet, as its expressions' bytes (comments, counters,
    its verdict and target left out); None when it does not decode."""
    try:
        parts = split_expressions(rule.expressions_payload)
    except ValueError:
        return None
    return [name.encode() + raw for name, raw in parts
            if name not in _NOT_CONDITIONS and not (name == "match" and raw.startswith(_COMMENT_NAME))]


def _within(needs: list[bytes], given: list[bytes]) -> bool:
    """Does every packet that passes `given` pass `needs` (each of its conditions one of
    given's)? Rules of one writer encode one condition in the same bytes."""
    left = list(given)
    for one in needs:
        if one not in left:
            return False
        left.remove(one)
    return True


_LEAVES = ("return", "goto")


class _Decided:
    """A test whose answer its own component fixes first on every packet that reaches it:
    kube-router's pod firewall jumps to KUBE-NWPLCY-DEFAULT, which sets 0x10000, for
    every packet it takes (`-d POD`, `-s POD`), before `! --mark 0x10000/0x10000 -j
    REJECT` — while no NetworkPolicy selects the pod. Another component's write to those
    bits changes nothing then: latent, not a harm."""

    def __init__(self, model: MarkModel):
        self.model = model
        self.callers: dict[tuple, dict[str, list[Rule]]] = {}

    def _callers(self, family: str, table: str) -> dict[str, list[Rule]]:
        key = (family, table)
        if key not in self.callers:
            index: dict[str, list[Rule]] = {}
            found = self.model.snapshot.tables.get(TableRef(family, table))
            for rule in found.rules if found else ():
                for target in scan(rule, _DECODED).jumps:
                    index.setdefault(target, []).append(rule)
            self.callers[key] = index
        return self.callers[key]

    def of(self, r: _Group) -> str | None:
        if r.kind != "nftables" or not r.places or r.op.value is None:
            return None
        fixer = None
        for place in r.places:
            fixer = self._fixed_before(place.rule, r.owner, r.op)
            if fixer is None:
                return None
        return (f"latent: {r.owner} {fixer.ref} sets the tested bits itself before this test on "
                f"every packet that reaches it; harm only where it does not (kube-router: once "
                f"a NetworkPolicy selects the pod)")

    def _fixed_before(self, reader: Rule, owner: str, read: Read) -> Rule | None:
        """The rule of `owner` that fixes the tested bits before `reader` for every
        packet entering its chain, or None."""
        model = self.model
        chain = model.chain(reader.family, reader.table, reader.chain)
        rules = model.chain_rules(reader.family, reader.table, reader.chain)
        at = next((i for i, x in enumerate(rules) if x.handle == reader.handle), None)
        if chain is None or at is None:
            return None
        if chain.hook is not None:
            entries = [[]]   # a base chain: every packet, no condition
        else:
            entries = [_conditions(j) for j in self._callers(reader.family, reader.table)
                       .get(reader.chain, [])]
        if not entries or any(e is None for e in entries):
            return None
        fixer = None
        for entry in entries:
            fixer = self._first_fix(rules[:at], entry, owner, read)
            if fixer is None:
                return None
        return fixer

    def _first_fix(self, before: list[Rule], entry: list[bytes], owner: str, read: Read
                   ) -> Rule | None:
        """The last rule before the test that surely fixes its bits for packets entering
        under `entry`, with nothing changing them to other values after it; or None."""
        fixer, value = None, None
        for rule in before:
            marks = rule_marks(rule)
            if marks.action.split(" ")[0] in _LEAVES:
                return None   # some packets may leave before the test
            sets = self._sets(rule, marks, read)
            conds = _conditions(rule)
            if sets is not None and conds is not None and owner_of(rule, marks) == owner \
                    and _within(conds, entry):
                fixer, value = rule, sets
            elif sets is not None and sets == value:
                continue      # sets them again, to the same values
            elif fixer is not None and self._only_by(owner, rule, marks, read, set()):
                continue      # only its own component changes them again (Calico's profile)
            elif _touches(marks, read) or any(
                    self._touches_in(rule.family, rule.table, target, read, set())
                    for target in marks.jumps):
                fixer = value = None   # the bits may change again after
        return fixer

    def _sets(self, rule: Rule, marks, read: Read) -> int | None:
        """The values the rule (or the chain it jumps to) surely gives the tested bits."""
        fixed = _fixed(marks, read)
        if fixed is not None:
            return fixed
        for target in marks.jumps:
            fixed = self._fixes_in(rule.family, rule.table, target, read, set())
            if fixed is not None:
                return fixed
        return None

    def _fixes_in(self, family: str, table: str, chain: str, read: Read, seen: set
                  ) -> int | None:
        """The values every packet entering the chain leaves it with in the tested bits,
        or None."""
        if chain in seen:
            return None
        seen.add(chain)
        fixed, left = None, set()
        for rule in self.model.chain_rules(family, table, chain):
            marks = rule_marks(rule)
            if marks.action.split(" ")[0] in _LEAVES:
                if fixed is None or marks.action.startswith("goto") or marks.writes:
                    return None
                left.add(fixed)   # a return once they are fixed: leaves with that value
                continue
            value = _fixed(marks, read)
            if value is not None and _conditions(rule) == []:
                fixed = value
            elif value is not None and value == fixed:
                continue
            elif _touches(marks, read) or any(self._touches_in(family, table, t, read, seen)
                                              for t in marks.jumps):
                fixed = None
        return fixed if fixed is not None and left <= {fixed} else None

    def refixed(self, w: _Group, bits: int) -> Write | None:
        """The writer's write once its own component, later in the same chain, surely sets
        some of `bits` again on every packet that goes on (Calico clears its accept bit,
        then its profile sets it): those bits take that value. None when none is."""
        if w.kind != "nftables" or not w.places or w.op.copied:
            return None
        op = w.op
        for bit in (1 << i for i in range(32) if bits >> i & 1):
            read = Read(op.key, bit, None)
            values = {self._set_again(p.rule, w.owner, read) for p in w.places}
            if len(values) != 1 or None in values:
                continue
            (value,) = values
            op = op._replace(force0=(op.force0 & ~bit) | (bit & ~value),
                             force1=(op.force1 & ~bit) | (bit & value),
                             toggle=op.toggle & ~bit, unknown=op.unknown & ~bit)
        return op if op != w.op else None

    def _set_again(self, writer: Rule, owner: str, read: Read) -> int | None:
        """The value the owner's first later rule in the writer's chain gives the bit on
        every packet that has not been dropped by then, or None."""
        rules = self.model.chain_rules(writer.family, writer.table, writer.chain)
        at = next((i for i, x in enumerate(rules) if x.handle == writer.handle), None)
        if at is None:
            return None
        for rule in rules[at + 1:]:
            marks = rule_marks(rule)
            verb = marks.action.split(" ")[0]
            if verb in ("drop", "reject") and not marks.writes:
                continue   # the packets it takes go no further
            sets = self._sets(rule, marks, read)
            if sets is not None and _conditions(rule) == [] and owner_of(rule, marks) == owner:
                return sets
            if verb in (*_LEAVES, "accept") or _touches(marks, read) or marks.jumps:
                return None
        return None

    def _only_by(self, owner: str, rule: Rule, marks, read: Read, seen: set) -> bool:
        """Does every rule that may change the tested bits, this one or one in a chain it
        jumps to, belong to `owner`?"""
        if _touches(marks, read) and owner_of(rule, marks) != owner:
            return False
        for target in marks.jumps:
            if target in seen:
                continue
            seen.add(target)
            for inner in self.model.chain_rules(rule.family, rule.table, target):
                if not self._only_by(owner, inner, rule_marks(inner), read, seen):
                    return False
        return True

    def _touches_in(self, family: str, table: str, chain: str, read: Read, seen: set) -> bool:
        """May a rule in the chain, or in one it jumps to, change the tested bits?"""
        if chain in seen:
            return False
        seen.add(chain)
        for rule in self.model.chain_rules(family, table, chain):
            marks = rule_marks(rule)
            if _touches(marks, read) or any(self._touches_in(family, table, t, read, seen)
                                            for t in marks.jumps):
                return True
        return False

    # --- what an early verdict skips: nothing that decides, on this node ---------------

    def skips_nothing(self, r: _Group, c: Conflict) -> str | None:
        """The reader's test, flipped, only makes the packet skip rules that decide nothing
        for it: Felix's `-m mark --mark 0x10000/0x10000 -j ACCEPT` in mangle cali-PREROUTING
        skips its host endpoint chain, empty on a node without host endpoints, and the
        policy accepts the packet anyway. Its fate is the same either way: latent. Skipped
        rules that decide nothing: no verdict but return (and accept, for an early accept),
        no NAT, no queue; mark writes only by the reader's own component (skipping them
        leaves the writer's bits as they would be without that component, and the writer
        meets later readers as pairs of its own). Why, or None."""
        if r.kind != "nftables" or not r.places:
            return None
        verb, _, target = r.action.partition(" ")
        if c.effect == "accepted unexpectedly" and verb == "accept":
            skipped = self._after_accept
        elif c.effect == "returns early" and verb == "return":
            skipped = self._rest_of_chain
        elif c.effect in (f"jump to {target} missed", f"jumps to {target} unexpectedly") \
                and verb == "jump":
            skipped = self._jumped_to
        else:
            return None
        chains: set[str] = set()
        for place in r.places:
            if not skipped(place.rule, r.owner, chains):
                return None
        empty = sorted(n for n in chains if not self.model.chain_rules(
            r.places[0].rule.family, r.places[0].rule.table, n))
        named = f" (empty here: {', '.join(empty)})" if empty else ""
        return (f"latent: the rules {r.owner} skips when the bits change decide nothing for "
                f"these packets{named}; harm once they hold a drop, NAT or another "
                f"component's mark (Calico: a host endpoint policy)")

    def _decides_nothing(self, rule: Rule, owner: str, accepting: bool, chains: set) -> bool:
        marks = rule_marks(rule)
        if marks.writes and owner_of(rule, marks) != owner:
            return False
        verb, _, target = marks.action.partition(" ")
        if verb in ("jump", "goto") and target:
            return self._chain_decides_nothing(rule.family, rule.table, target, owner,
                                               accepting, chains)
        return verb in ("", "mark", "log", "return") or (accepting and verb == "accept")

    def _chain_decides_nothing(self, family: str, table: str, chain: str, owner: str,
                               accepting: bool, chains: set) -> bool:
        if chain in chains:
            return True
        chains.add(chain)
        if len(chains) > _MAX_STEPS:
            return False
        return all(self._decides_nothing(x, owner, accepting, chains)
                   for x in self.model.chain_rules(family, table, chain))

    def _rest(self, rule: Rule, owner: str, accepting: bool, chains: set) -> bool:
        rules = self.model.chain_rules(rule.family, rule.table, rule.chain)
        at = next((i for i, x in enumerate(rules) if x.handle == rule.handle), None)
        return at is not None and all(self._decides_nothing(x, owner, accepting, chains)
                                      for x in rules[at + 1:])

    def _rest_of_chain(self, rule: Rule, owner: str, chains: set) -> bool:
        # Returning early or at the chain's end lands in the same place.
        return self._rest(rule, owner, False, chains)

    def _jumped_to(self, rule: Rule, owner: str, chains: set) -> bool:
        target = rule_marks(rule).action.partition(" ")[2]
        return self._chain_decides_nothing(rule.family, rule.table, target, owner, False,
                                           chains)

    def _after_accept(self, rule: Rule, owner: str, chains: set) -> bool:
        """An accept ends the base chain: the rest of the rule's chain, then of every chain
        that jumps to it, up to a base chain whose policy accepts."""
        return self._rest(rule, owner, True, chains) and self._up_to_policy(
            rule.family, rule.table, rule.chain, owner, chains, set())

    def _up_to_policy(self, family: str, table: str, chain: str, owner: str, chains: set,
                      climbed: set) -> bool:
        info = self.model.chain(family, table, chain)
        if info is None:
            return False
        if info.hook is not None:
            return info.policy != NF_DROP
        callers = self._callers(family, table).get(chain)
        if not callers or chain in climbed:
            return False   # reached otherwise (a verdict map) or in a loop: cannot tell
        climbed.add(chain)
        for caller in callers:
            jumped = rule_marks(caller).action.startswith("jump ")
            if jumped and not self._rest(caller, owner, True, chains):
                return False
            # after a goto the packet goes on where its caller's chain was jumped to
            if not self._up_to_policy(family, table, caller.chain, owner, chains, climbed):
                return False
        return True


# --- a write on later packets only, whose reader's chain accepts those by state ----------

_MAX_STEPS = 512


def _accepted_by_state(model: MarkModel, w: _Group, c: Conflict) -> str | None:
    """Tailscale restores its connection marks only on established and related packets
    (`--ctstate RELATED,ESTABLISHED -j CONNMARK --restore-mark`); when the reader's chain,
    after the accept the write makes it miss, accepts every such packet anyway (Netbird's
    `iifname "wt0" jump netbird-rt-fwd`, whose first rule accepts them by state), no
    packet's fate changes. Why, or None."""
    if "accept missed" not in c.effect or not w.places or c.reader.rule is None:
        return None
    states = 0
    for place in w.places:
        found = conditions(place.rule)
        if found is None or found.states & ~ESTABLISHED_OR_RELATED:
            return None
        states |= found.states
    if _fates(model, c.reader.rule, states) != {"accept"}:
        return None
    return (f"{w.owner} {w.places[0].rule.ref} changes the mark of established and related "
            f"packets only, and the rest of {c.reader.rule.family} {c.reader.rule.table} "
            f"{c.reader.rule.chain} accepts all of those by their state")


def _fates(model: MarkModel, rule: Rule, states: int) -> set[str] | None:
    """The verdicts the rest of the rule's chain (and the chains it jumps to) can give a
    packet whose connection state lies in `states`: "accept", "drop". A condition met
    once is met again (rules with the same condition bytes take the same packets). None
    when it cannot tell: the chain is no base chain, a verdict map, too many branches."""
    chain = model.chain(rule.family, rule.table, rule.chain)
    rules = model.chain_rules(rule.family, rule.table, rule.chain)
    at = next((i for i, x in enumerate(rules) if x.handle == rule.handle), None)
    if chain is None or chain.hook is None or at is None:
        return None
    policy = "drop" if chain.policy == NF_DROP else "accept"
    fates: set[str] = set()
    steps = 0
    # (frames: [(chain name, next index)], what each condition was found to be)
    work: list[tuple[tuple, dict]] = [(((rule.chain, at + 1),), {})]
    while work:
        frames, known = work.pop()
        while True:
            steps += 1
            if steps > _MAX_STEPS:
                return None
            if not frames:
                fates.add(policy)
                break
            name, index = frames[-1]
            here = model.chain_rules(rule.family, rule.table, name)
            if index >= len(here):      # the end of a chain, or return: back to its caller
                frames = frames[:-1]
                continue
            current = here[index]
            frames = frames[:-1] + ((name, index + 1),)
            found = conditions(current)
            if found is None:
                return None
            if not found.states & states:
                continue                 # it takes none of these packets
            key = (found.others, found.states & states != states)
            taken = known.get(key, None if any(key[1:]) or key[0] else True)
            if taken is None:            # it may or may not: follow both
                work.append((frames, {**known, key: False}))
                known = {**known, key: True}
            elif not taken:
                continue
            verb, _, target = rule_marks(current).action.partition(" ")
            if verb in ("accept", "drop", "reject"):
                fates.add("accept" if verb == "accept" else "drop")
                break
            if verb == "verdict":
                return None
            if verb == "return":
                frames = frames[:-1]
            elif verb == "jump" and target:
                frames = frames + ((target, 0),)
            elif verb == "goto" and target:
                frames = frames[:-1] + ((target, 0),)
    return fates


def _touches(marks, read: Read) -> bool:
    return any(w.key == read.key and w.bits & read.mask for w in marks.writes)


def _fixed(marks, read: Read) -> int | None:
    """The values the rule sets every tested bit to, or None."""
    for w in marks.writes:
        if w.key == read.key and (w.force0 | w.force1) & read.mask == read.mask:
            return w.force1 & read.mask
    return None


def _makes_true(write: Write, read: Read) -> bool:
    """After the write, does the test surely hold?"""
    mask = read.mask
    if read.value is None or (write.force0 | write.force1) & mask != mask:
        return False
    return ((write.force1 & mask) == read.value) != read.negate


_PLAIN = {"counter", "immediate", "bitwise", "cmp"}


def _only_marks(rule: Rule) -> bool:
    """Does the rule test or set nothing but the packet mark (a comment aside)? Then it
    applies to every packet that reaches it."""
    try:
        parts = split_expressions(rule.expressions_payload)
    except ValueError:
        return False
    for name, raw in parts:
        if name in _PLAIN:
            continue
        try:
            f = decode_fields(name, raw)
        except ValueError:
            return False
        if name == "meta" and f.get("key") == META_MARK:
            continue
        if name == "match" and f.get("name") in ("mark", "comment"):
            continue
        if name == "target" and f.get("name") == "MARK":
            continue
        return False
    return True


def _side(g: _Group, what: str) -> Side:
    if not g.places:   # a socket or a routing rule
        return Side(None, g.owner, g.base, what, g.similar, g.source, g.kind)
    first = min(g.places, key=lambda p: p.first)
    return Side(first.rule, g.owner, g.base, what, len(g.places) - 1)


def _classify(c: Conflict, testers: frozenset = frozenset()) -> Conflict:
    """Harm, or bits shared without an alarm: a side fwgate cannot name is never an
    alarm on its own, nor is a cooperation the components intend. `testers`: the
    (owner, mark, bits) every reader tests."""
    unknown = [s.owner for s in (c.writer, c.reader) if s.owner == UNKNOWN]
    if unknown:
        return replace(c, severity=SHARED, why_shared="one side's owner is unknown: no alarm "
                                                      "on its own")
    why = COOPERATIONS.get((c.writer.owner, c.reader.owner, c.key, c.bits))
    deferral = DEFERS.get((c.reader.owner, c.key, c.bits))
    if why is None and deferral is not None and (deferral[0], c.key, c.bits) in testers:
        why = deferral[1]
    if why:
        return replace(c, severity=SHARED, why_shared=f"intended: {why}")
    return c


def harms(conflicts: tuple[Conflict, ...]) -> tuple[Conflict, ...]:
    return tuple(c for c in conflicts if c.harm)


def _sort_key(c: Conflict) -> tuple:
    return (*_where(c.reader), *_where(c.writer), c.key, c.bits)


def _where(side: Side) -> tuple:
    rule = side.rule
    if rule is None:
        return (side.base.family, "", side.base.chain, 0, side.source or "")
    return (rule.family, rule.table, rule.chain, rule.handle, "")


# --- how a conflict reads ----------------------------------------------------------------------

def _side_json(side: Side) -> dict:
    rule = side.rule
    where = {"kind": side.kind, "source": side.source,
             "hook": HOOK_NAMES.get(side.base.hook, str(side.base.hook)),
             "owner": side.owner, "does": side.what, "similar": side.similar}
    if rule is None:   # outside nf_tables: no table, chain or handle; no priority either
        return {"family": side.base.family, "table": None, "chain": None, "handle": None,
                "userdata": None, "priority": None, "base_chain": None, **where}
    return {"family": rule.family, "table": rule.table, "chain": rule.chain,
            "handle": rule.handle, "userdata": rule.userdata_text(),
            "priority": side.base.priority, "base_chain": side.base.chain, **where}


def conflict_json(c: Conflict) -> dict:
    return {"bits": f"{c.bits:#x}", "mark": f"{c.key} mark",
            "writer": _side_json(c.writer), "reader": _side_json(c.reader),
            "path": list(c.path), "order": c.order, "effect": c.effect, "then": c.then,
            "severity": c.severity, "why_shared": c.why_shared}


def conflicts_json(conflicts: tuple[Conflict, ...], shared: bool = False) -> dict:
    """The document `fwgate conflicts --json` prints: the harms, and with `shared` the
    bits shared without harm too; `shared_count` says how many of those there are."""
    return {"conflicts": [conflict_json(c) for c in conflicts if shared or c.harm],
            "shared_count": sum(1 for c in conflicts if not c.harm)}


def conflict_text(c: Conflict) -> str:
    """One line: `meta mark 0x10000: kube-router ip filter KUBE-POD-FW-X handle 12 (...) →
    netbird ip netbird netbird-acl-forward-filter handle 5 (...): accept missed [...]`."""
    def side(s: Side) -> str:
        more = f", and {s.similar} more like it" if s.similar else ""
        where = s.rule.ref if s.rule is not None else s.source
        return f"{s.owner} {where} ({s.what}{more})"
    order = {TIE: "; same hook and priority: whichever registered last runs first",
             LATER_PACKETS: "; on the connection's later packets"}.get(c.order, "")
    then = f", {c.then}" if c.then else ""
    shared = f" (shared, no alarm: {c.why_shared})" if not c.harm else ""
    return (f"{c.key} mark {c.bits:#x}: {side(c.writer)} → {side(c.reader)}: {c.effect}{then} "
            f"[{' → '.join(c.path)}{order}]{shared}")
