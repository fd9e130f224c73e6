"""Where a message comes from or goes to: transport plus host and port.

``Peer`` is the one address type shared by every layer: the transport layer
reports the source of each message as a ``Peer`` and sends to a ``Peer``;
the transaction layer only asks it whether it is reliable (RFC 3261 §17:
retransmissions only over unreliable transports).
"""

from typing import NamedTuple

__all__ = ["Peer", "RELIABLE", "DEFAULT_PORTS"]

RELIABLE = frozenset(("TCP", "TLS", "SCTP", "WS", "WSS"))
DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "TLS": 5061, "SCTP": 5060}


class Peer(NamedTuple):
    """A transport address. ``transport`` is upper-case (``UDP``, ``TCP``,
    ``TLS``); ``host`` an IP literal (IPv6 without brackets)."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self):
        return self.transport in RELIABLE

    def __str__(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport.lower()}:{host}:{self.port}"
