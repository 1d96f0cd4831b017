"""The kernel's nf_tables register file, as expressions load and read it. Pure.

struct nft_regs (include/net/netfilter/nf_tables.h) is twenty 32-bit words: the verdict
register NFT_REG_VERDICT (0) takes words 0-3, the four 128-bit registers NFT_REG_1..4
words 4-19, and NFT_REG32_00..15 (8..23) name those sixteen words one by one
(net/netfilter/nf_tables_api.c nft_parse_register). A load of N bytes fills ceil(N/4)
words from its register's first word on and leaves the others as they were, so
NFT_REG32_01 is the second word of NFT_REG_1, and a 16-byte load into NFT_REG_1
overwrites NFT_REG32_00..03.

compat/reader.py follows what iptables-nft believes a register holds (its own slots),
marks/model.py what a mark becomes on its way through the registers; both ask this
module where a register's words are and how many a load fills.
"""
from __future__ import annotations

import sys

from . import consts as C

# Netlink attribute headers, meta mark, ct mark and interface indexes: host order.
BYTEORDER = sys.byteorder

def word(reg: int) -> int:
    """The index in struct nft_regs' data[] of a register's first word."""
    return 4 * reg if reg <= 4 else reg - 4


def words(nbytes: int) -> int:
    """How many 32-bit words a load of `nbytes` fills (NFT_REG32_SIZE rounding)."""
    return max(1, (nbytes + 3) // 4)


# loads of 16 bytes (IFNAMSIZ, an IPv6 address, ct labels, a helper name)
WIDE_META = frozenset({C.META_IIFNAME, C.META_OIFNAME, C.META_BRI_IIFNAME, C.META_BRI_OIFNAME,
                       C.META_IIFKIND, C.META_OIFKIND, C.META_SDIFNAME})
WIDE_CT = frozenset({C.CT_SRC, C.CT_DST, C.CT_LABELS, C.CT_HELPER, C.CT_SRC_IP6, C.CT_DST_IP6})
_FIB_RESULT_OIFNAME = 2


def load_bytes(name: str, fields: dict) -> int:
    """How many bytes an expression writes into its destination register: `len` for
    payload, exthdr and bitwise; 16 for the wide meta and ct keys and fib's oifname
    (nft_meta_get_init, nft_ct_get_init, nft_fib_init); a u32 for the rest."""
    if name in ("payload", "bitwise", "exthdr"):
        return int(fields.get("len", 4))
    if name == "meta":
        return 16 if fields.get("key") in WIDE_META else 4
    if name == "ct":
        return 16 if fields.get("key") in WIDE_CT else 4
    if name == "fib":
        return 16 if fields.get("result") == _FIB_RESULT_OIFNAME else 4
    return 4


def span(reg: int, nbytes: int) -> range:
    """The words a load of `nbytes` into `reg` fills."""
    first = word(reg)
    return range(first, first + words(nbytes))
