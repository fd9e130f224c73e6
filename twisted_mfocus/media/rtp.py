"""RTP/RTCP sockets of the focus: a pool of UDP port pairs (the Twisted edge).

Each member's audio gets one endpoint: an even RTP port and RTCP on the
next odd port (RFC 3550 §11), both bound on one interface.  Ports come from
a configured range [low, high]; a port someone else holds is skipped, and
``PortsExhausted`` says the range is full.  Released pairs stay bound and
are handed out again oldest first, so a just-released port is reused last
(late packets of an old call rarely land in a new one); new pairs are bound
in a rotating order through the range.

An endpoint counts what it receives (packets, octets, the last source) and
hands each datagram to its ``sink`` (the media engine's Stream).

Every socket of the pool is read through one ``select.epoll`` of the pool's
own, and only that epoll's descriptor is registered with the reactor: one
wake-up reads whatever arrived on all the sockets (one datagram from each
ready socket per round, so a flooded port cannot starve the others), where
a reactor wake-up per socket and packet, through Twisted's ``Port.doRead``,
was most of the engine's cost with hundreds of members
(bench/mixer_bench.py).
"""

import collections
import select
import socket

from twisted.internet import defer
from twisted.logger import Logger

MAX_DATAGRAM = 2048             # RTP we take is far smaller (20 ms of any codec)
MAX_EVENTS = 1024               # sockets read in one round


class PortsExhausted(Exception):
    """No free even/odd port pair is left in the range."""


class _Sockets:
    """The pool's sockets behind one epoll: an IReadDescriptor for the
    reactor (``fileno`` is the epoll's), each ready socket read once a round."""

    log = Logger()

    def __init__(self, reactor):
        self.reactor = reactor
        self._epoll = select.epoll()
        self._owners = {}           # fd -> (socket, endpoint, is RTCP)
        self._reading = False

    def open(self, family, interface, port, endpoint, rtcp):
        """A bound non-blocking socket read for ``endpoint``; None if the
        port is taken."""
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((interface, port))
        except OSError:
            sock.close()
            return None
        self._owners[sock.fileno()] = (sock, endpoint, rtcp)
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        if not self._reading:
            self.reactor.addReader(self)
            self._reading = True
        return sock

    def close(self, sock):
        fd = sock.fileno()
        if self._owners.pop(fd, None) is not None:
            self._epoll.unregister(fd)
        sock.close()
        if not self._owners and self._reading:     # nothing left to read
            self.reactor.removeReader(self)
            self._reading = False

    # -- IReadDescriptor ----------------------------------------------------

    def fileno(self):
        return self._epoll.fileno()

    def logPrefix(self):
        return "RTP"

    def doRead(self):
        owners = self._owners
        for fd, _ in self._epoll.poll(0, MAX_EVENTS):
            owner = owners.get(fd)
            if owner is None:
                continue
            sock, endpoint, rtcp = owner
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except OSError:         # nothing after all, or an ICMP error: UDP loses it
                continue
            try:
                endpoint._received(data, addr[:2], rtcp)
            except Exception:
                self.log.failure("RTP from {addr} on {endpoint}", addr=addr, endpoint=endpoint)

    def connectionLost(self, reason):
        self._reading = False


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
        self._sockets = ()          # (RTP socket, RTCP socket) while bound
        self._owner = None          # the pool's _Sockets

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
        """``sendto`` on the port's socket.  A datagram that cannot go
        (buffer full, ICMP error pending) is dropped, as UDP would."""
        if len(self._sockets) > which:
            try:
                self._sockets[which].sendto(data, addr)
            except OSError:
                pass

    def _reset(self):
        self.packets = self.octets = self.rtcp_packets = 0
        self.last_source = None
        self.sink = None

    def _stop(self):
        sockets, self._sockets = self._sockets, ()
        for sock in sockets:
            self._owner.close(sock)
        return defer.succeed(None)


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
        self._family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        self._reader = _Sockets(reactor)
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
        rtp = self._reader.open(self._family, self.interface, port, endpoint, False)
        if rtp is None:
            return None
        rtcp = self._reader.open(self._family, self.interface, port + 1, endpoint, True)
        if rtcp is None:
            self._reader.close(rtp)
            return None
        endpoint._sockets, endpoint._owner = (rtp, rtcp), self._reader
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
