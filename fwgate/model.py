"""The facts fwgate decides on, immutable: nf_tables snapshots (tables, chains,
rules) and their scoped digest, link states and unit states. Pure."""
from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass, field

from .netlink.consts import CMP_EQ, META_IIFNAME, META_OIFNAME
from .netlink.exprs import (
    decode_fields, element_bounds, encode_expressions, split_expressions, stable_expressions,
)


@dataclass(frozen=True, order=True)
class TableRef:
    family: str
    name: str

    def __str__(self) -> str:
        return f"{self.family} {self.name}"


@dataclass(frozen=True)
class LinkState:
    up: bool          # administratively up and with carrier (IFF_UP and IFF_LOWER_UP)
    operstate: str = ""


@dataclass(frozen=True)
class Facts:
    """Everything the stage conditions read, at one moment."""

    units: dict[str, str] = field(default_factory=dict)        # unit → ActiveState
    links: dict[str, LinkState] = field(default_factory=dict)  # present links only
    snapshot: "Snapshot | None" = None


@dataclass(frozen=True)
class Expr:
    name: str
    raw: bytes  # the NFTA_EXPR_DATA payload as the kernel sent it

    @property
    def fields(self) -> dict[str, object]:
        """The decoded attributes, decoded once (do not modify: Exprs are shared)."""
        cache = self.__dict__
        found = cache.get("_fields")
        if found is None:
            found = cache["_fields"] = decode_fields(self.name, self.raw)
        return found


# Rules repeat their small expressions (counter, cmp, meta, payload, immediate, the
# conntrack match ...): equal ones, as the kernel encodes them, share one immutable
# Expr and its decoded fields. Bounded (a few MB at most: once full, it keeps what it
# has); large ones (comments) are not kept.
_SHARED: dict[bytes, Expr] = {}
_SHARED_MAX_BYTES, _SHARED_ENTRIES = 256, 8192


def _decode_expressions(blob: bytes) -> tuple[Expr, ...]:
    try:
        return _decode_expressions_strictly(blob)
    except ValueError:
        # Malformed (a kernel of another era, a bug): one nameless expression holding
        # it all, which the analyser reports as unreadable and nothing else trusts.
        return (Expr("", bytes(blob)),)


def _decode_expressions_strictly(blob: bytes) -> tuple[Expr, ...]:
    """The Expr objects of an NFTA_RULE_EXPRESSIONS payload; an element seen before
    (byte for byte) is looked up rather than decoded."""
    bounds = element_bounds(blob)
    if bounds is None:
        return tuple(Expr(n, d) for n, d in split_expressions(blob))
    shared, out = _SHARED, []
    for start, end in bounds:
        element = blob[start:end]
        expr = shared.get(element)
        if expr is None:
            decoded = split_expressions(element)
            if len(decoded) != 1:  # not a list element, or malformed: decode it all strictly
                return tuple(Expr(n, d) for n, d in split_expressions(blob))
            expr = Expr(*decoded[0])
            if end - start <= _SHARED_MAX_BYTES and len(shared) < _SHARED_ENTRIES:
                shared[element] = expr
        out.append(expr)
    return tuple(out)


class Rule:
    """One rule, immutable.

    A rule read from a dump keeps the kernel's NFTA_RULE_EXPRESSIONS payload and
    decodes it into Expr objects only when `exprs` is first read: the digest
    hashes that payload directly, and most rules are never looked at one by one.
    A rule built by hand from Expr objects is encoded the kernel's way when its
    payload is asked for, so both kinds digest alike."""

    __slots__ = ("family", "table", "chain", "handle", "position", "userdata", "compat",
                 "_exprs", "_blob")

    family: str
    table: str
    chain: str
    handle: int
    position: int              # index in its chain, 0 = first
    userdata: bytes | None     # raw NFTA_RULE_USERDATA
    compat: bytes | None       # NFTA_RULE_COMPAT, raw

    def __init__(self, family: str, table: str, chain: str, handle: int, position: int,
                 exprs: tuple[Expr, ...] = (), userdata: bytes | None = None,
                 compat: bytes | None = None):
        self._set(family, table, chain, handle, position, tuple(exprs), None, userdata, compat)

    @classmethod
    def from_dump(cls, family: str, table: str, chain: str, handle: int, position: int,
                  expressions: bytes, userdata: bytes | None = None,
                  compat: bytes | None = None) -> "Rule":
        """A rule with its expressions as the raw NFTA_RULE_EXPRESSIONS payload."""
        rule = cls.__new__(cls)
        rule._set(family, table, chain, handle, position, None, bytes(expressions), userdata, compat)
        return rule

    def _set(self, family, table, chain, handle, position, exprs, blob, userdata, compat) -> None:
        init = object.__setattr__
        init(self, "family", family)
        init(self, "table", table)
        init(self, "chain", chain)
        init(self, "handle", handle)
        init(self, "position", position)
        init(self, "_exprs", exprs)
        init(self, "_blob", blob)
        init(self, "userdata", userdata)
        init(self, "compat", compat)

    @property
    def exprs(self) -> tuple[Expr, ...]:
        exprs = self._exprs
        if exprs is None:
            exprs = _decode_expressions(self._blob)
            object.__setattr__(self, "_exprs", exprs)
        return exprs

    @property
    def expressions_payload(self) -> bytes:
        """NFTA_RULE_EXPRESSIONS' payload as the kernel encodes it."""
        if self._blob is None:
            object.__setattr__(self, "_blob", encode_expressions(
                [(e.name, e.raw) for e in self._exprs]))
        return self._blob

    # immutable, compared and hashed by value, like the dataclass it replaces
    def _key(self) -> tuple:
        return (self.family, self.table, self.chain, self.handle, self.position, self.exprs,
                self.userdata, self.compat)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"Rule(family={self.family!r}, table={self.table!r}, chain={self.chain!r}, "
                f"handle={self.handle!r}, position={self.position!r}, exprs={self.exprs!r}, "
                f"userdata={self.userdata!r}, compat={self.compat!r})")

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self):
        return (Rule, (self.family, self.table, self.chain, self.handle, self.position,
                       self.exprs, self.userdata, self.compat))

    @property
    def expr_names(self) -> list[str]:
        return [e.name for e in self.exprs]

    @property
    def ref(self) -> str:
        """How a person finds the rule: `ip filter FORWARD handle 11 (frwacceptoif)`."""
        tag = self.userdata_text()
        return f"{self.family} {self.table} {self.chain} handle {self.handle}" + \
            (f" ({tag})" if tag else "")

    def comment_tlv(self) -> bytes | None:
        """The value of nft's NFTNL_UDATA_RULE_COMMENT TLV, when the userdata is one
        (Netbird's raw tags are not)."""
        data = self.userdata
        if data and len(data) >= 2 and data[0] == 0 and 0 < data[1] <= len(data) - 2:
            return data[2:2 + data[1]]
        return None

    def userdata_text(self) -> str | None:
        """Userdata as text: Netbird's raw tag, or the comment of nft's TLV format."""
        if not self.userdata:
            return None
        comment = self.comment_tlv()
        data = self.userdata if comment is None else comment
        return data.rstrip(b"\0").decode(errors="replace")

    def interface_matches(self) -> dict[str, set[str]]:
        """Interface names the rule compares for equality: {"iifname": {...}, "oifname": {...}}."""
        loaded: dict[int, str] = {}
        found: dict[str, set[str]] = {"iifname": set(), "oifname": set()}
        for expr in self.exprs:
            try:
                f = expr.fields
            except ValueError:
                continue
            if expr.name == "meta" and "dreg" in f:
                key = {META_IIFNAME: "iifname", META_OIFNAME: "oifname"}.get(f.get("key"))
                if key:
                    loaded[f["dreg"]] = key
                else:
                    loaded.pop(f["dreg"], None)
            elif expr.name == "cmp" and f.get("op") == CMP_EQ and f.get("sreg") in loaded:
                data = f.get("data")
                if isinstance(data, bytes):
                    found[loaded[f["sreg"]]].add(data.split(b"\0", 1)[0].decode(errors="replace"))
        return found


@dataclass(frozen=True)
class Chain:
    name: str
    handle: int
    hook: int | None = None
    priority: int | None = None
    policy: int | None = None
    type: str | None = None


@dataclass(frozen=True)
class Table:
    family: str
    name: str
    flags: int = 0
    handle: int = 0
    chains: tuple[Chain, ...] = ()
    rules: tuple[Rule, ...] = ()   # grouped by chain, each chain in rule order
    sets: tuple[tuple[str, bytes], ...] = ()  # (name, stable bytes of definition + elements)
    # Set by a lean snapshot (nft.snapshot(keep_rules=...)): the digest of *every* rule,
    # taken while dumping, when `rules` holds only the chains that were asked for.
    rules_digest: bytes | None = None

    @property
    def ref(self) -> TableRef:
        return TableRef(self.family, self.name)

    @property
    def lean(self) -> bool:
        """True when `rules` holds only some chains' rules (see rules_digest)."""
        return self.rules_digest is not None

    def chain(self, name: str) -> Chain | None:
        return next((c for c in self.chains if c.name == name), None)

    def rules_of(self, chain: str) -> list[Rule]:
        return [r for r in self.rules if r.chain == chain]


@dataclass(frozen=True)
class Snapshot:
    """What the dumped tables looked like at one ruleset generation."""

    genid: int
    tables: dict[TableRef, Table] = field(default_factory=dict)  # absent tables are missing
    scope: tuple[TableRef, ...] = ()

    def table(self, ref: TableRef) -> Table | None:
        return self.tables.get(ref)


def rule_digest_parts(chain: str, handle: int, expressions: bytes, userdata: bytes | None,
                      compat: bytes | None) -> bytes:
    """What the digest hashes of a rule: chain, handle, the expressions as the kernel
    encodes them less their traffic-driven attributes, userdata and compat."""
    return b"".join((b"R", chain.encode(), b"\0", handle.to_bytes(8, "big"), b"E",
                     stable_expressions(expressions), b"U", userdata or b"", b"C", compat or b""))


def rule_digest_bytes(rule: Rule) -> bytes:
    return rule_digest_parts(rule.chain, rule.handle, rule.expressions_payload, rule.userdata,
                             rule.compat)


class RulesDigest:
    """The rules' part of a table's digest, fed one rule at a time, in chain order."""

    __slots__ = ("_hash", "_pending", "_size")
    CHUNK = 1 << 16  # hash in chunks: one update per rule is slow, one per table is big

    def __init__(self) -> None:
        import hashlib  # here, not at start-up: the first nf_tables query need not wait for it
        self._hash, self._pending, self._size = hashlib.sha256(), [], 0

    def add(self, data: bytes) -> None:
        self._pending.append(data)
        self._size += len(data)
        if self._size >= self.CHUNK:
            self._hash.update(b"".join(self._pending))
            self._pending, self._size = [], 0

    def digest(self) -> bytes:
        self._hash.update(b"".join(self._pending))
        self._pending, self._size = [], 0
        return self._hash.digest()


def rules_digest(table: Table) -> bytes:
    if table.rules_digest is not None:
        return table.rules_digest
    h = RulesDigest()
    for rule in table.rules:
        h.add(rule_digest_bytes(rule))
    return h.digest()


def digest(snapshot: Snapshot, scope: tuple[TableRef, ...]) -> str:
    """A hash of the scoped tables that traffic cannot move: counters are left out."""
    import hashlib
    h = hashlib.sha256()
    for ref in sorted(scope, key=lambda r: (r.family, r.name)):
        table = snapshot.tables.get(ref)
        h.update(f"T {ref.family} {ref.name} ".encode())
        if table is None:
            h.update(b"absent\n")
            continue
        # Handles are never reused: a table deleted and re-created digests differently.
        h.update(f"handle={table.handle} flags={table.flags}\n".encode())
        for c in sorted(table.chains, key=lambda c: c.name):
            h.update(f"C {c.name} {c.handle} {c.hook} {c.priority} {c.policy} {c.type}\n".encode())
        h.update(b"R" + rules_digest(table))
        for name, data in table.sets:
            h.update(b"S" + name.encode() + b"\0" + data)
    return h.hexdigest()
