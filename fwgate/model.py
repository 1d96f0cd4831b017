"""Immutable snapshots of nf_tables state and their scoped digest."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

from .config import TableRef
from .exprs import CMP_EQ, META_IIFNAME, META_OIFNAME, decode_fields, stable_bytes


@dataclass(frozen=True)
class Expr:
    name: str
    raw: bytes  # the NFTA_EXPR_DATA payload as the kernel sent it

    @cached_property
    def fields(self) -> dict[str, object]:
        return decode_fields(self.name, self.raw)


@dataclass(frozen=True)
class Rule:
    family: str
    table: str
    chain: str
    handle: int
    position: int              # index in its chain, 0 = first
    exprs: tuple[Expr, ...]
    userdata: bytes | None = None
    compat: bytes | None = None  # NFTA_RULE_COMPAT, raw

    @property
    def expr_names(self) -> list[str]:
        return [e.name for e in self.exprs]

    def userdata_text(self) -> str | None:
        """Userdata as text: Netbird's raw tag, or the comment of nft's TLV format."""
        data = self.userdata
        if not data:
            return None
        if len(data) >= 2 and data[0] == 0 and 0 < data[1] <= len(data) - 2:
            data = data[2:2 + data[1]]  # NFTNL_UDATA_RULE_COMMENT TLV
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

    @property
    def ref(self) -> TableRef:
        return TableRef(self.family, self.name)

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


def rule_digest_bytes(rule: Rule) -> bytes:
    parts = [b"R", rule.chain.encode(), b"\0", rule.handle.to_bytes(8, "big")]
    for expr in rule.exprs:
        parts += [b"E", expr.name.encode(), b"\0", stable_bytes(expr.name, expr.raw)]
    parts += [b"U", rule.userdata or b"", b"C", rule.compat or b""]
    return b"".join(parts)


def digest(snapshot: Snapshot, scope: tuple[TableRef, ...]) -> str:
    """A hash of the scoped tables that traffic cannot move: counters are left out."""
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
        for rule in table.rules:
            h.update(rule_digest_bytes(rule))
        for name, data in table.sets:
            h.update(b"S" + name.encode() + b"\0" + data)
    return h.hexdigest()
