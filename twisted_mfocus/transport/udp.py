"""SIP over UDP: one ``DatagramProtocol`` per listening socket (RFC 3261 §18).

It only turns ``datagramReceived`` into a ``Peer`` and hands the bytes to
the ``TransportLayer``; the layer parses, validates and delivers.  The
same socket sends (requests of its address family, and responses to what
it heard: RFC 3581 §4 wants a response from where the request arrived).
"""

from twisted.internet import protocol

from ..sip.address import Peer

__all__ = ["DatagramListener"]


MAX_PEERS = 4096         # source addresses whose Peer is kept for the next datagram


class DatagramListener(protocol.DatagramProtocol):
    noisy = False

    def __init__(self, layer):
        self.layer = layer
        self.listener = None      # set by the layer once the port is bound
        self._peers = {}          # addr -> its Peer: a phone sends many datagrams

    def datagramReceived(self, data, addr):
        # addr is (host, port) for IPv4, (host, port, flow, scope) for IPv6.
        peer = self._peers.get(addr)
        if peer is None:
            if len(self._peers) >= MAX_PEERS:
                self._peers.clear()
            peer = self._peers[addr] = Peer("UDP", addr[0], addr[1])
        self.layer._datagram(data, peer, self.listener)
