"""fwgate: hold k3s back until Netbird's nftables rules have settled."""
__version__ = "0.1.0"
