"""The memoised reader gives the reader's answers: rules of one shape share a verdict,
and the shape (read from the kernel's bytes, partly at fixed offsets) keeps everything
the reader reads. Pure."""
from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from fwgate.compat import memo as M
from fwgate.compat import reader as R
from fwgate.compat.parser import read_rule
from fwgate.compat.profiles import PROFILES
from fwgate.netlink import consts as C
from fwgate.netlink import exprs as X
from fwgate.netlink.attrs import attr, attr_str, attr_u32, attr_u64, nested

from fwgate_testing.compat_rules import rule, snap

REG = st.sampled_from([0, 1, 2, 3, 4, 8, 9, 10, 12, 13, 16, 22, 23, 30])
DATA = st.binary(min_size=0, max_size=20)
SMALL = st.integers(0, 40)


def expr(name: str, data: bytes) -> bytes:
    return X.encode_expressions([(name, data)])


EXPRS = st.one_of(
    st.builds(X.meta_load, st.sampled_from([1, 2, 3, 4, 5, 6, 7, 10, 12, 16, 17, 19, 35]), REG),
    st.builds(X.cmp, st.integers(0, 5), DATA, REG),
    st.builds(X.payload_load, st.integers(0, 3), SMALL, st.integers(1, 16), REG),
    st.builds(lambda s, d, m, x: X.bitwise(s, d, m, x), REG, REG, DATA, DATA),
    st.builds(lambda s, d, n: X.build("bitwise", sreg=s, dreg=d, len=4, op=n, data=b"\0\0\0\x08"),
              REG, REG, st.integers(1, 5)),
    st.builds(X.ct_load, st.sampled_from([0, 1, 3, 8, 13]), REG),
    st.builds(X.immediate_data, DATA, REG),
    st.builds(lambda c, n: X.verdict(c, n if c in (C.NFT_JUMP, C.NFT_GOTO) else None),
              st.sampled_from([0, 1, -1, -2, -3, -4, -5, 3]),
              st.text("ABCDEFGH-", min_size=1, max_size=20)),
    st.builds(lambda name, r, d: X.build("lookup", set=name, sreg=r, **({"dreg": d} if d is not None else {})),
              st.text("abc_0", min_size=1, max_size=8), REG, st.one_of(st.none(), REG)),
    st.builds(lambda n, info: X.xt("match", n, 0, info), st.sampled_from(["comment", "conntrack", "mark"]), DATA),
    st.builds(lambda n, info: X.xt("target", n, 0, info), st.sampled_from(["MARK", "log", "REJECT"]), DATA),
    st.builds(X.counter, st.integers(0, 2**40), st.integers(0, 2**40)),
    st.builds(lambda k, r: X.build("meta", key=k, sreg=r), st.sampled_from([3, 12, 2, 35]), REG),
    st.builds(lambda r, f, t: expr("range", attr_u32(1, r) + attr_u32(2, 0) +
                                   nested(3, attr(1, f)) + nested(4, attr(1, t))),
              REG, DATA, DATA),
    st.builds(lambda p, g: expr("log", (attr_str(2, p) if p else b"") + (
        struct.pack("=HH", 6, 1) + g.to_bytes(2, "big") + b"\0\0" if g is not None else b"")),
              st.text("xy ", max_size=5), st.one_of(st.none(), st.integers(0, 5))),
    st.builds(lambda t, f: expr("limit", attr_u64(1, 10) + attr_u64(2, 1) + attr_u32(3, 5) +
                                attr_u32(4, t) + attr_u32(5, f)),
              st.integers(0, 1), st.integers(0, 1)),
)


@settings(max_examples=600, deadline=None)
@given(st.lists(EXPRS, max_size=7), st.sampled_from(["ip", "ip6", "arp", "bridge"]),
       st.sampled_from(["filter", "broute"]))
def test_the_memo_answers_what_the_reader_answers(exprs, family, table):
    r = rule(*exprs, family=family, table=table)
    want = M._unless_clean(tuple(read_rule(r, p) for p in PROFILES))
    assert M.verdicts(r, PROFILES) == want
    assert M.verdicts(r, PROFILES) == want   # and again, from the memo


def _slow(element_bytes: bytes):
    return M._element_shape(element_bytes)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 5), DATA, REG)
def test_cmp_shapes_at_fixed_offsets_match_decoding(op, data, reg):
    e = X.cmp(op, data, reg)
    assert M._fast_shape(e) == _slow(e)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([0, 1, -1, -2, -3, -4, -5, 3]), st.text("ABCDEFGH-", min_size=1, max_size=28))
def test_verdict_shapes_at_fixed_offsets_match_decoding(code, chain):
    e = X.verdict(code, chain if code in (C.NFT_JUMP, C.NFT_GOTO) else None)
    assert M._fast_shape(e) == _slow(e)


def test_other_layouts_are_decoded():
    assert M._fast_shape(X.immediate_data(b"\x01\0\0\0", 1)) is None   # data, not a verdict
    assert M._fast_shape(X.meta_load(7, 1)) is None
    # a cmp whose attributes come in another order is not read at fixed offsets
    odd = X.encode_expressions([("cmp", attr_u32(2, 0) + attr_u32(1, 1) +
                                 nested(3, attr(1, b"\x06")))])
    assert M._fast_shape(odd) is None


def test_one_read_per_shape(monkeypatch):
    calls = []
    real = read_rule
    monkeypatch.setattr(R, "read_rule", lambda *a, **k: calls.append(a) or real(*a, **k))
    M._MEMO.clear()
    # 300 rules of kube-proxy's shape: different addresses, ports, comments, jump targets
    rules = [rule(X.payload_load(1, 16, 4), X.cmp(0, bytes([10, 43, i >> 8, i & 255])),
                  X.meta_load(C.META_L4PROTO), X.cmp(0, b"\x06"),
                  X.xt("match", "comment", 0, f"ns-{i}/svc-{i}".encode().ljust(256, b"\0")),
                  X.payload_load(2, 2, 2), X.cmp(0, (30000 + i).to_bytes(2, "big")),
                  X.counter(i, i), X.verdict(C.NFT_JUMP, f"KUBE-SVC-{i:08X}"),
                  handle=i, position=i) for i in range(300)]
    report = R.analyse(snap(*rules), PROFILES)
    assert report.findings == () and report.misread == ()
    assert len(calls) <= 5 * len({M.shape_key(r) for r in rules}) <= 5 * 3
