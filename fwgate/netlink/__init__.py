"""A pure netlink codec for nf_tables: constants, one attribute walker, message
framing, expression decoding and message builders. Bytes in, values out; the
socket lives in fwgate.adapters.nfsock."""
