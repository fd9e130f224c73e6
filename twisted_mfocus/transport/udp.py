"""SIP over UDP: one ``DatagramProtocol`` per listening socket (RFC 3261 §18).

It only turns ``datagramReceived`` into a ``Peer`` and hands the bytes to
the ``TransportLayer``; the layer parses, validates and delivers.  The
same socket sends (requests of its address family, and responses to what
it heard: RFC 3581 §4 wants a response from where the request arrived).
"""

from twisted.internet import protocol

from ..sip.address import Peer

__all__ = ["DatagramListener"]


class DatagramListener(protocol.DatagramProtocol):
    noisy = False

    def __init__(self, layer):
        self.layer = layer
        self.listener = None      # set by the layer once the port is bound

    def datagramReceived(self, data, addr):
        # addr is (host, port) for IPv4, (host, port, flow, scope) for IPv6.
        self.layer._datagram(data, Peer("UDP", addr[0], addr[1]), self.listener)
