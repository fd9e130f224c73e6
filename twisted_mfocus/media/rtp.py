"""RTP/RTCP sockets of the focus: a pool of UDP port pairs (the Twisted edge).

Each member's audio gets one endpoint: an even RTP port and RTCP on the
next odd port (RFC 3550 §11), both bound on one interface.  Ports come from
a configured range [low, high]; a port someone else holds is skipped, and
``PortsExhausted`` says the range is full.  Released pairs stay bound and
are handed out again oldest first, so a just-released port is reused last
(late packets of an old call rarely land in a new one); new pairs are bound
in a rotating order through the range.

For now an endpoint reads and discards what it receives, counting packets,
octets and the last source; the mixer will replace the protocol.
"""

import collections

from twisted.internet import defer, error, protocol


class PortsExhausted(Exception):
    """No free even/odd port pair is left in the range."""


class _Counter(protocol.DatagramProtocol):
    """Counts and discards datagrams for its endpoint."""

    noisy = False

    def __init__(self, endpoint, rtcp):
        self.endpoint = endpoint
        self.rtcp = rtcp

    def datagramReceived(self, data, addr):
        self.endpoint._received(data, addr, self.rtcp)


class RTPEndpoint:
    """One RTP/RTCP port pair and the counters of what arrived on it.

    ``sink`` (set by the media engine while a call uses the pair) hears
    every datagram: ``rtp_received(data, addr)``, ``rtcp_received(...)``.
    ``send_rtp``/``send_rtcp`` send from the pair's own ports, so a member
    behind NAT gets our packets from where it sends its own (symmetric
    RTP, RFC 4961)."""

    def __init__(self, port, interface):
        self.port = port
        self.rtcp_port = port + 1
        self.interface = interface
        self.packets = 0          # RTP datagrams received
        self.octets = 0           # their total size
        self.rtcp_packets = 0
        self.last_source = None   # (host, port) of the last RTP datagram
        self.sink = None
        self._listeners = ()

    def __repr__(self):
        return f"<RTPEndpoint {self.interface}:{self.port}/{self.rtcp_port}>"

    def _received(self, data, addr, rtcp):
        if rtcp:
            self.rtcp_packets += 1
            if self.sink is not None:
                self.sink.rtcp_received(data, addr)
            return
        self.packets += 1
        self.octets += len(data)
        self.last_source = tuple(addr[:2])
        if self.sink is not None:
            self.sink.rtp_received(data, addr)

    def send_rtp(self, data, addr):
        self._send(0, data, addr)

    def send_rtcp(self, data, addr):
        self._send(1, data, addr)

    def _send(self, which, data, addr):
        """``sendto`` on the port's socket: Twisted's ``Port.write`` checks
        the address's syntax on every call, which was half the cost of a
        mixing tick (bench/mixer_bench.py).  A datagram that cannot go
        (buffer full, ICMP error pending) is dropped, as UDP would."""
        if len(self._listeners) > which:
            try:
                self._listeners[which].socket.sendto(data, addr)
            except OSError:
                pass

    def _reset(self):
        self.packets = self.octets = self.rtcp_packets = 0
        self.last_source = None
        self.sink = None

    def _stop(self):
        listeners, self._listeners = self._listeners, ()
        return defer.gatherResults(
            [defer.maybeDeferred(listener.stopListening) for listener in listeners])


class RTPPortPool:
    """Even RTP ports in [low, high], RTCP on port + 1, bound on ``interface``."""

    def __init__(self, reactor, low, high, interface="127.0.0.1", max_idle=1024,
                 quiet=0.5, clock=None):
        first = low + (low % 2)
        if not 0 < low <= high <= 65535 or first + 1 > high:
            raise ValueError(f"RTP port range {low}-{high} holds no even/odd pair")
        self.reactor = reactor
        self.interface = interface
        self._ports = list(range(first, high, 2))
        self._next = 0
        self._in_use = {}
        # Released pairs stay bound, up to max_idle, and are handed out
        # again first: binding and closing two sockets per call (and
        # Twisted's log line for each) cost a quarter of a join+leave.
        # A pair is reused only after ``quiet`` seconds, unless nothing else
        # is left.
        self.max_idle = max_idle
        self.quiet = quiet
        self.clock = clock or reactor
        self._idle = collections.OrderedDict()   # port -> (released at, RTPEndpoint)

    @property
    def in_use(self):
        return len(self._in_use)

    def allocate(self):
        """A pair released earlier (still bound), else the next free pair
        bound now; raise PortsExhausted if there is none."""
        if self._idle:
            released, endpoint = next(iter(self._idle.values()))
            if self.clock.seconds() - released >= self.quiet:
                return self._reuse(endpoint)
        count = len(self._ports)
        for step in range(count):
            port = self._ports[(self._next + step) % count]
            if port in self._in_use or port in self._idle:
                continue
            endpoint = self._bind(port)
            if endpoint is not None:
                self._next = (self._next + step + 1) % count
                self._in_use[port] = endpoint
                return endpoint
        if self._idle:
            return self._reuse(next(iter(self._idle.values()))[1])
        raise PortsExhausted(f"no free RTP port pair in {self._ports[0]}-"
                             f"{self._ports[-1] + 1} on {self.interface}")

    def _reuse(self, endpoint):
        del self._idle[endpoint.port]
        endpoint._reset()
        self._in_use[endpoint.port] = endpoint
        return endpoint

    def _bind(self, port):
        endpoint = RTPEndpoint(port, self.interface)
        try:
            rtp = self.reactor.listenUDP(port, _Counter(endpoint, False),
                                         interface=self.interface)
        except error.CannotListenError:
            return None
        try:
            rtcp = self.reactor.listenUDP(port + 1, _Counter(endpoint, True),
                                          interface=self.interface)
        except error.CannotListenError:
            rtp.stopListening()
            return None
        endpoint._listeners = (rtp, rtcp)
        return endpoint

    def release(self, endpoint):
        """Give ``endpoint``'s pair back: kept bound for reuse while fewer
        than ``max_idle`` are idle, else closed.  Returns a Deferred that
        fires once it is closed or kept (callers may ignore it)."""
        if self._in_use.get(endpoint.port) is not endpoint:
            return defer.succeed(None)
        del self._in_use[endpoint.port]
        if len(self._idle) < self.max_idle:
            self._idle[endpoint.port] = (self.clock.seconds(), endpoint)
            return defer.succeed(None)
        return endpoint._stop()

    def release_all(self):
        """Close every pair, in use or idle (service stop); a Deferred."""
        endpoints = list(self._in_use.values()) + [e for _, e in self._idle.values()]
        self._in_use.clear()
        self._idle.clear()
        return defer.gatherResults([endpoint._stop() for endpoint in endpoints])
