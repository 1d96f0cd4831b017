"""Can the iptables k3s runs read the kernel's rules well enough for k3s to live? And
if not, fix what we can.

profiles + reader: pure model of iptables-nft's reader, 1.8.9 … 1.8.13; impact: which
k3s component runs which call; binaries: which iptables k3s runs; policy: the one
verdict; equivalents + repair: exact iptables encodings and the one-transaction
rewrite; crosscheck: real binaries as second opinion; probe: the decisions of one
probe attempt on a snapshot (its I/O is fwgate.adapters.probe). Pure, all of it: this
package imports no adapter. See docs/compat.md."""
