"""Pure pieces under the probe: attribute codec, expressions, digest."""
import pytest

from fwgate.model import Chain, Expr, Rule, Snapshot, Table, TableRef, digest
from fwgate.netlink import attrs as A
from fwgate.netlink import consts as C
from fwgate.netlink import exprs as X
from fwgate.programmer import forward_oif_rule, iif_accept_rule

FILTER = TableRef("ip", "filter")


def parse_rule_exprs(encoded: list[bytes]) -> tuple[Expr, ...]:
    blob = A.nested(C.NFTA_RULE_EXPRESSIONS, *encoded)
    (_, start, end), = A.iter_attrs(blob)
    return tuple(Expr(n, d) for n, d in X.split_expressions(blob, start, end))


def rule(exprs, handle=4, userdata=b"frwacceptoif", position=0):
    return Rule("ip", "filter", "FORWARD", handle, position, parse_rule_exprs(exprs), userdata)


def test_attributes_round_trip_with_padding():
    blob = A.attr_str(1, "wt0") + A.attr_u32(2, 7) + A.nested(3, A.attr(1, b"\x01"))
    assert A.attrs(blob)[1] == b"wt0\0"
    assert A.as_u32(A.attrs(blob)[2]) == 7
    assert A.attrs(A.attrs(blob)[3]) == {1: b"\x01"}


@pytest.mark.parametrize("blob", [b"\x03\x00\x01\x00", b"\x10\x00\x01\x00abc", b"\x08\x00"])
def test_malformed_attributes_raise_instead_of_reading_garbage(blob):
    with pytest.raises(ValueError):
        list(A.iter_attrs(blob))


def test_netbird_rule_decodes_as_the_kernel_shows_it():
    r = rule(forward_oif_rule("wt0"))
    assert r.expr_names == ["meta", "cmp", "ct", "bitwise", "cmp", "counter", "immediate"]
    meta, cmp, ct, bitwise, neq, _, verdict = (e.fields for e in r.exprs)
    assert meta == {"key": C.META_OIFNAME, "dreg": 1}
    assert cmp["data"] == b"wt0".ljust(16, b"\0") and cmp["op"] == C.CMP_EQ
    assert ct == {"dreg": 2, "key": C.CT_STATE}
    assert bitwise["mask"] == (6).to_bytes(4, "little") and bitwise["sreg"] == 2
    assert neq["op"] == C.CMP_NEQ
    assert verdict["data"] == ("accept", None)
    assert r.userdata_text() == "frwacceptoif"
    assert r.interface_matches() == {"iifname": set(), "oifname": {"wt0"}}


def test_userdata_text_reads_nft_comment_tlv_too():
    tlv = bytes([0, 5]) + b"hello"
    assert rule([], userdata=tlv).userdata_text() == "hello"
    assert rule([], userdata=None).userdata_text() is None


def test_truncated_expression_attribute_is_an_error_not_a_crash():
    expr = Expr("meta", A.attr(1, b"\x00\x01"))  # dreg needs 4 bytes
    with pytest.raises(ValueError, match="truncated"):
        expr.fields


def test_unknown_expressions_keep_raw_attributes():
    assert Expr("frobnicate", A.attr_u32(3, 9)).fields == {"attr3": b"\0\0\0\x09"}


def test_digest_ignores_counters_but_not_meaning():
    def snap(exprs, handle=4):
        table = Table("ip", "filter", 0, 1, (Chain("FORWARD", 1, 2, 0, 1, "filter"),),
                      (rule(exprs, handle),))
        return Snapshot(1, {FILTER: table}, (FILTER,))

    base = digest(snap(iif_accept_rule("wt0")), (FILTER,))
    counted = iif_accept_rule("wt0")
    counted[2] = X.counter(packets=99, nbytes=12345)  # meta, cmp, counter, immediate
    assert digest(snap(counted), (FILTER,)) == base
    assert digest(snap(iif_accept_rule("wt1")), (FILTER,)) != base
    assert digest(snap(iif_accept_rule("wt0"), handle=5), (FILTER,)) != base
    assert digest(Snapshot(1, {}, (FILTER,)), (FILTER,)) != base


def test_digest_covers_only_the_scope():
    other = TableRef("ip", "k3s")
    a = Snapshot(1, {other: Table("ip", "k3s", 0, 3)}, (other,))
    b = Snapshot(2, {other: Table("ip", "k3s", 0, 4)}, (other,))
    assert digest(a, (FILTER,)) == digest(b, (FILTER,))
    assert digest(a, (other,)) != digest(b, (other,))


def test_malformed_rule_from_a_dump_is_reported_not_a_crash():
    from fwgate.compat.reader import analyse
    bad = Rule.from_dump("ip", "filter", "FORWARD", 7, 0, b"\x10\x00\x01\x00abc")
    assert [e.name for e in bad.exprs] == [""]
    assert bad.interface_matches() == {"iifname": set(), "oifname": set()}
    table = Table("ip", "filter", 0, 1, (Chain("FORWARD", 1, 2, 0, 1, "filter"),), (bad,))
    snap = Snapshot(1, {FILTER: table}, (FILTER,))
    assert len(digest(snap, (FILTER,))) == 64
    (finding,) = analyse(snap).findings
    assert "unreadable" in finding.reason and finding.rule.handle == 7
