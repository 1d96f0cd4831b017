"""The netlink codec without a kernel: one attribute walker, and the fast paths
fenced by it; snapshots taken from captured dumps (tests/fwgate_testing/dumps.py)."""
from __future__ import annotations

import re
import struct

import pytest
from hypothesis import given, settings, strategies as st

from fwgate_testing.dumps import ReplaySocket, load
from fwgate import model
from fwgate.adapters.nft import snapshot
from fwgate.compat.reader import analyse
from fwgate.model import TableRef
from fwgate.netlink import exprs as X
from fwgate.netlink.attrs import attr, attr_str, iter_attrs, nested
from fwgate.netlink.consts import NFTA_EXPR_DATA, NFTA_EXPR_NAME, NFTA_LIST_ELEM, NLA_TYPE_MASK
from fwgate.netlink.messages import Message, NFGENMSG, NLMSGHDR
from fwgate.netlink.nftables import parse_rule, rule_msg, rule_parts

FAMILIES = ("ip", "ip6", "inet", "arp", "bridge")


# --- the reference: everything decoded through iter_attrs, slowly -----------------

def ref_split(blob: bytes) -> list[tuple[str, bytes]]:
    out = []
    for kind, s, e in iter_attrs(blob):
        if kind != NFTA_LIST_ELEM:
            continue
        name, data = "", b""
        for k, ps, pe in iter_attrs(blob, s, e):
            if k == NFTA_EXPR_NAME:
                name = blob[ps:pe].split(b"\0", 1)[0].decode(errors="replace")
            elif k == NFTA_EXPR_DATA:
                data = blob[ps:pe]
        out.append((name, data))
    return out


def ref_fields(name: str, raw: bytes) -> dict:
    schema = X.SCHEMA.get(name, {})
    out = {}
    for kind, s, e in iter_attrs(raw):
        field, fmt = schema.get(kind, (f"attr{kind}", "raw"))
        payload = raw[s:e]
        if fmt in ("u8", "u16", "u32", "i32", "u64"):
            code = {"u8": ">B", "u16": ">H", "u32": ">I", "i32": ">i", "u64": ">Q"}[fmt]
            out[field] = struct.unpack_from(code, payload)[0]
        elif fmt == "str":
            out[field] = payload.split(b"\0", 1)[0].decode(errors="replace")
        elif fmt == "data":
            out[field] = X._decode_data(payload)
        else:
            out[field] = payload
    return out


def ref_stable(blob: bytes) -> list[tuple[str, bytes]]:
    out = []
    for name, data in ref_split(blob):
        volatile = X.VOLATILE.get(name, set())
        out.append((name, b"".join(data[s - 4:e] for k, s, e in iter_attrs(data)
                                   if k not in volatile)))
    return out


# --- expressions as the kernel sends them, and random ones ---------------------------

KNOWN = st.sampled_from([
    X.meta_load(7, 1), X.cmp(0, b"wt0\0" + b"\0" * 12, 1), X.ct_load(0, 2),
    X.bitwise(2, 2, b"\x06\0\0\0", b"\0\0\0\0"), X.counter(17, 4242), X.verdict(1),
    X.verdict(-3, "KUBE-ROUTER-FORWARD"), X.payload_load(1, 12, 4), X.lookup("nb0000001"),
    X.xt("match", "conntrack", 3, bytes(168)), X.immediate_data(b"\x20\xbd\x01\0"),
    X.build("quota", bytes=100, flags=0, consumed=7), X.build("last", set=1, msecs=99),
    X.build("fib", dreg=1, result=1, flags=4),
])
RANDOM = st.builds(lambda name, payload: nested(NFTA_LIST_ELEM, attr_str(NFTA_EXPR_NAME, name),
                                               nested(NFTA_EXPR_DATA, payload)),
                   st.sampled_from(sorted(X.SCHEMA) + ["zzz"]),
                   st.lists(st.builds(lambda k, v: attr(k, v), st.integers(1, 9),
                                      st.binary(max_size=24)), max_size=5).map(b"".join))
EXPRESSIONS = st.lists(st.one_of(KNOWN, RANDOM), max_size=8).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(EXPRESSIONS)
def test_expression_walks_agree_with_the_reference(blob):
    assert X.split_expressions(blob) == ref_split(blob)
    for name, data in ref_split(blob):
        try:
            expected = ref_fields(name, data)
        except (ValueError, struct.error):
            with pytest.raises(ValueError):
                X.decode_fields(name, data)
            continue
        assert X.decode_fields(name, data) == expected


def with_new_counts(blob: bytes, packets: int, nbytes: int) -> bytes:
    """The same bytes, but every plain counter at other values (traffic went by)."""
    out = []
    for kind, s, e in iter_attrs(blob):
        element = blob[s - 4:(e + 3) & ~3]
        (name, data), = ref_split(element) if kind == NFTA_LIST_ELEM else [("", b"")]
        plain = name == "counter" and set(X.decode_fields(name, data)) == {"bytes", "packets"}
        out.append(X.counter(packets, nbytes) if plain else element)
    return b"".join(out)


@settings(max_examples=400, deadline=None)
@given(EXPRESSIONS, EXPRESSIONS, st.integers(0, 2**32), st.integers(0, 2**32))
def test_the_digest_fast_path_tells_apart_what_the_reference_tells_apart(a, b, packets, nbytes):
    """stable_expressions() skips decoding most of a rule: it must still equal two
    rules exactly when their expressions less the traffic-driven attributes do."""
    try:
        moved = with_new_counts(a, packets, nbytes)
    except ValueError:
        moved = a
    for x, y in ((a, b), (a, moved)):
        try:
            same = ref_stable(x) == ref_stable(y)
        except ValueError:
            continue  # malformed: hashed whole, no promise beyond that
        assert (X.stable_expressions(x) == X.stable_expressions(y)) == same


@settings(max_examples=300, deadline=None)
@given(EXPRESSIONS, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_counters_never_move_the_digest(blob, packets, nbytes):
    with_counter = blob + X.counter(packets, nbytes)
    assert X.stable_expressions(with_counter) == X.stable_expressions(blob + X.counter())


@settings(max_examples=300, deadline=None)
@given(st.lists(EXPRESSIONS, min_size=1, max_size=6))
def test_shared_decoding_is_plain_decoding(blobs):
    """Equal expressions share one Expr (the model's cache): the same as decoding anew."""
    for blob in blobs + blobs:
        shared = model._decode_expressions(blob)
        plain = tuple(model.Expr(n, d) for n, d in ref_split(blob))
        assert shared == plain


@settings(max_examples=200, deadline=None)
@given(EXPRESSIONS, st.binary(max_size=20) | st.none(), st.integers(0, 2**63))
def test_the_inlined_rule_walk_is_the_attribute_walk(blob, userdata, handle):
    from fwgate.netlink.attrs import attr_u64
    from fwgate.netlink.consts import NFTA_RULE_HANDLE
    _, family, _, payload = rule_msg(2, "filter", "FORWARD", [blob] if blob else [], userdata)
    payload += attr_u64(NFTA_RULE_HANDLE, handle)
    body = NFGENMSG.pack(family, 0, 0) + payload
    raw = NLMSGHDR.pack(NLMSGHDR.size + len(body), (10 << 8) | 6, 0, 0, 0) + body
    msg = Message(raw, 0, len(raw))
    table, chain, got_handle, exprs, got_userdata, _ = rule_parts(msg)
    found = {k & NLA_TYPE_MASK: raw[s:e] for k, s, e in msg.iter_attrs()}
    assert (table, chain, got_handle) == ("filter", "FORWARD", handle)
    assert bytes(exprs) == found[4] and got_userdata == (userdata if userdata is not None
                                                        else None) or userdata == b""
    assert parse_rule(msg, 0).exprs == tuple(model.Expr(n, d) for n, d in ref_split(found[4]))


# --- snapshots from captured dumps -------------------------------------------------

def nft_chains(listing: str) -> dict[tuple[str, str, str], int]:
    """Rules per chain as `nft list ruleset` printed them: an oracle that is not ours."""
    counts, table, chain = {}, None, None
    for line in listing.splitlines():
        stripped = line.strip()
        if m := re.match(r"table (\S+) (\S+) \{", stripped):
            table, chain = (m[1], m[2]), None
        elif m := re.match(r"chain (\S+) \{", stripped):
            chain = m[1]
            counts[(*table, chain)] = 0
        elif stripped == "}" or not stripped or chain is None:
            if stripped == "}":
                chain = None
        elif not stripped.startswith(("type ", "policy ")) and not stripped.startswith("set "):
            counts[(*table, chain)] += 1
    return counts


@pytest.mark.parametrize("name", ["netbird", "k3s-node"])
def test_a_captured_snapshot_reads_as_nft_printed_it(name):
    capture = load(name)
    snap = snapshot(ReplaySocket(capture), families=FAMILIES)
    assert snap.genid == capture["genid"]
    ours = {(t.family, t.name, c.name): len(t.rules_of(c.name))
            for t in snap.tables.values() for c in t.chains}
    assert ours == nft_chains(capture["nft"])
    for table in snap.tables.values():
        for rule in table.rules:
            assert [(e.name, e.raw) for e in rule.exprs] == ref_split(rule.expressions_payload)


@pytest.mark.parametrize("name", ["netbird", "k3s-node"])
def test_lean_snapshots_digest_as_full_ones(name):
    capture = load(name)
    full = snapshot(ReplaySocket(capture), families=FAMILIES)
    scope = tuple(full.tables)
    chains = [(ref, c.name) for ref, t in full.tables.items() for c in t.chains]
    for keep in ([], chains[:1], chains[::3], chains):
        lean = snapshot(ReplaySocket(capture), scope, keep_rules=keep)
        assert model.digest(lean, scope) == model.digest(full, scope)
        kept = {(TableRef(r.family, r.table), r.chain) for t in lean.tables.values()
                for r in t.rules}
        assert kept <= set(keep)


def test_netbirds_native_rules_in_a_capture_are_found_in_both_families():
    snap = snapshot(ReplaySocket(load("netbird")), families=FAMILIES)
    bad = analyse(snap).findings
    assert sorted((f.rule.family, bytes(f.rule.userdata)) for f in bad) == \
        [("ip", b"frwacceptoif"), ("ip6", b"frwacceptoif")]
    assert all(f.repairable for f in bad)
