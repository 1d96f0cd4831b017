"""Numbers of the kernel's netlink, nfnetlink and nf_tables ABI, named once.

Sources: include/uapi/linux/netlink.h, netfilter/nfnetlink.h, netfilter/nf_tables.h,
netfilter.h."""
from __future__ import annotations

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_EXT_ACK = 11
NFNLGRP_NFTABLES = 7

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800

NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFNL_BATCH_GENID = 1

# NFT_MSG_* commands
NEWTABLE, GETTABLE, DELTABLE = 0, 1, 2
NEWCHAIN, GETCHAIN, DELCHAIN = 3, 4, 5
NEWRULE, GETRULE, DELRULE = 6, 7, 8
NEWSET, GETSET, DELSET = 9, 10, 11
NEWSETELEM, GETSETELEM, DELSETELEM = 12, 13, 14
NEWGEN, GETGEN = 15, 16
NEWOBJ, DELOBJ = 18, 20
NEWFLOWTABLE, DELFLOWTABLE = 22, 24

MSG_NAMES = {
    NEWTABLE: "NEWTABLE", DELTABLE: "DELTABLE", NEWCHAIN: "NEWCHAIN",
    DELCHAIN: "DELCHAIN", NEWRULE: "NEWRULE", DELRULE: "DELRULE",
    NEWSET: "NEWSET", DELSET: "DELSET", NEWSETELEM: "NEWSETELEM",
    DELSETELEM: "DELSETELEM", NEWGEN: "NEWGEN", NEWOBJ: "NEWOBJ",
    DELOBJ: "DELOBJ", NEWFLOWTABLE: "NEWFLOWTABLE", DELFLOWTABLE: "DELFLOWTABLE",
}

# Attributes
NFTA_TABLE_NAME, NFTA_TABLE_FLAGS, NFTA_TABLE_HANDLE = 1, 2, 4
NFTA_CHAIN_TABLE, NFTA_CHAIN_HANDLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK = 1, 2, 3, 4
NFTA_CHAIN_POLICY, NFTA_CHAIN_TYPE, NFTA_CHAIN_COUNTERS, NFTA_CHAIN_FLAGS = 5, 7, 8, 10
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY = 1, 2
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_EXPRESSIONS = 1, 2, 3, 4
NFTA_RULE_COMPAT, NFTA_RULE_POSITION, NFTA_RULE_USERDATA = 5, 6, 7
NFTA_RULE_COMPAT_PROTO, NFTA_RULE_COMPAT_FLAGS = 1, 2
NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_FLAGS, NFTA_SET_KEY_TYPE = 1, 2, 3, 4
NFTA_SET_KEY_LEN, NFTA_SET_ID = 5, 10
NFTA_SET_HANDLE = 16
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_EXPIRATION, NFTA_SET_ELEM_USERDATA = 1, 5, 6
NFTA_SET_ELEM_EXPR, NFTA_SET_ELEM_EXPRESSIONS = 7, 11
NFTA_GEN_ID, NFTA_GEN_PROC_PID, NFTA_GEN_PROC_NAME = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_DATA_VALUE, NFTA_DATA_VERDICT = 1, 2
NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2

FAMILIES = {"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}
FAMILY_NAMES = {v: k for k, v in FAMILIES.items()}

# Netfilter hooks (ip, ip6, inet, bridge share these numbers; netdev's ingress is 0).
NF_INET_PRE_ROUTING, NF_INET_LOCAL_IN, NF_INET_FORWARD = 0, 1, 2
NF_INET_LOCAL_OUT, NF_INET_POST_ROUTING = 3, 4
HOOK_NAMES = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}

# Registers: 0 is the verdict, 1-4 are 16-byte, 8-23 are the 32-bit views of them.
REG_VERDICT = 0

# Verdicts (NF_* and NFT_*)
NF_DROP, NF_ACCEPT = 0, 1
NFT_CONTINUE, NFT_BREAK, NFT_JUMP, NFT_GOTO, NFT_RETURN = -1, -2, -3, -4, -5
VERDICTS = {NF_DROP: "drop", NF_ACCEPT: "accept", NFT_CONTINUE: "continue", NFT_BREAK: "break",
            NFT_JUMP: "jump", NFT_GOTO: "goto", NFT_RETURN: "return", 3: "queue"}
VERDICT_CODES = {name: code for code, name in VERDICTS.items()}

# meta keys (enum nft_meta_keys)
META_KEYS = {0: "len", 1: "protocol", 2: "priority", 3: "mark", 4: "iif", 5: "oif",
             6: "iifname", 7: "oifname", 8: "iiftype", 9: "oiftype", 10: "skuid",
             11: "skgid", 12: "nftrace", 13: "rtclassid", 14: "secmark", 15: "nfproto",
             16: "l4proto", 17: "bri_iifname", 18: "bri_oifname", 19: "pkttype",
             20: "cpu", 21: "iifgroup", 22: "oifgroup", 23: "cgroup", 24: "prandom",
             25: "secpath", 26: "iifkind", 27: "oifkind", 28: "bri_iifpvid",
             29: "bri_iifvproto", 30: "time_ns", 31: "time_day", 32: "time_hour",
             33: "sdif", 34: "sdifname", 35: "bri_broute"}
META_LEN, META_PROTOCOL, META_PRIORITY, META_MARK, META_IIF, META_OIF = 0, 1, 2, 3, 4, 5
META_IIFNAME, META_OIFNAME, META_NFTRACE, META_NFPROTO, META_L4PROTO = 6, 7, 12, 15, 16
META_BRI_IIFNAME, META_BRI_OIFNAME, META_PKTTYPE = 17, 18, 19
META_IIFKIND, META_OIFKIND, META_SDIFNAME, META_BRI_BROUTE = 26, 27, 34, 35

# ct keys (enum nft_ct_keys)
CT_KEYS = {0: "state", 1: "direction", 2: "status", 3: "mark", 4: "secmark",
           5: "expiration", 6: "helper", 7: "l3protocol", 8: "src", 9: "dst",
           10: "protocol", 11: "proto_src", 12: "proto_dst", 13: "labels", 14: "pkts",
           15: "bytes", 16: "avgpkt", 17: "zone", 18: "eventmask", 19: "src_ip",
           20: "dst_ip", 21: "src_ip6", 22: "dst_ip6", 23: "ct_id"}
CT_STATE, CT_MARK, CT_HELPER, CT_SRC, CT_DST, CT_LABELS = 0, 3, 6, 8, 9, 13
CT_SRC_IP6, CT_DST_IP6 = 21, 22
# ct state bits as nft keeps them: invalid, established, related, new, untracked
CT_STATE_INVALID, CT_STATE_ESTABLISHED, CT_STATE_RELATED, CT_STATE_NEW = 1, 2, 4, 8
CT_STATE_UNTRACKED = 64

# cmp operators (enum nft_cmp_ops)
CMP_OPS = {0: "eq", 1: "neq", 2: "lt", 3: "lte", 4: "gt", 5: "gte"}
CMP_EQ, CMP_NEQ, CMP_LT, CMP_LTE, CMP_GT, CMP_GTE = 0, 1, 2, 3, 4, 5

# bitwise operations (enum nft_bitwise_ops)
BITWISE_BOOL, BITWISE_LSHIFT, BITWISE_RSHIFT, BITWISE_AND, BITWISE_OR, BITWISE_XOR = 0, 1, 2, 3, 4, 5

# payload bases (enum nft_payload_bases)
PAYLOAD_LL, PAYLOAD_NETWORK, PAYLOAD_TRANSPORT, PAYLOAD_INNER, PAYLOAD_TUN = 0, 1, 2, 3, 4
PAYLOAD_BASES = {0: "link-layer header", 1: "network header", 2: "transport header",
                 3: "inner header", 4: "tunnel header"}

# set key types (nft's datatype numbers, as in NFTA_SET_KEY_TYPE)
NFT_TYPE_IPV4_ADDR = 7

IFNAMSIZ = 16
