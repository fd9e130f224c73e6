"""The transport layer: SIP over UDP, TCP and TLS on Twisted (RFC 3261 §18).

Rules of this module:

- This is the edge: sockets, connections and the reactor live here and
  nowhere below.  What to do with a message is decided by the sans-IO
  functions of ``sip/message.py`` (framing, ``validate()``) and
  ``sip/routing.py`` (§18.2.1 stamping, §18.2.2 response destination).
- Up: every message that parses and validates goes to
  ``on_message(message, source)`` (requests already stamped with
  ``received``/``rport``); every one that does not goes to
  ``on_bad_message(error, source)``, which decides whether to answer and
  logs it.  A callback that raises is logged; nothing here ever crashes.
- Down: ``send`` and ``send_response`` raise ``TransportError`` when the
  failure is known at once; later failures (a connection refused, a TLS
  certificate that does not verify) go to ``on_transport_error(message,
  dest, error)``, the signature of ``TransactionLayer.transport_error``.
- Connections are indexed by their remote address, inbound ones too, so a
  request to a peer that connected to us reuses its connection
  (RFC 3261 §18.1.1 "SHOULD" reuse; RFC 5923 is not needed for that).
- Bounded: ``max_connections`` streams in all, the parser ``limits`` per
  connection, a queue per connecting stream, idle streams closed after
  ``idle_timeout`` seconds, a bounded memory of which UDP socket heard
  which peer.
"""

import socket
from collections import Counter, OrderedDict

from twisted.internet import defer
from twisted.internet.abstract import isIPv6Address
from twisted.logger import Logger

from ..logbudget import LogBudget
from ..sip.address import Peer
from ..sip.errors import SIPError
from ..sip.message import DEFAULT_LIMITS, Request, parse_datagram
from ..sip.routing import is_ip_literal, next_hop, response_destination, stamp_received
from .errors import TransportError
from .resolver import Resolver
from .stream import ClientFactory, ServerFactory, StreamConnection
from .tls import TLSSettings
from .udp import DatagramListener

__all__ = ["TransportLayer", "parse_listen_spec"]

TRANSPORTS = ("UDP", "TCP", "TLS")


def parse_listen_spec(spec):
    """``udp:HOST:PORT`` (IPv6 host in brackets) → ``Peer``; ValueError if bad."""
    kind, sep, rest = spec.partition(":")
    kind = kind.upper()
    if not sep or kind not in TRANSPORTS:
        raise ValueError(f"bad listener {spec!r}: want udp:, tcp: or tls:HOST:PORT")
    if rest.startswith("["):
        host, sep, port = rest[1:].partition("]:")
        if not isIPv6Address(host):
            raise ValueError(f"bad listener {spec!r}: [HOST] must be an IPv6 address")
    else:
        host, sep, port = rest.rpartition(":")
        if ":" in host:
            raise ValueError(f"bad listener {spec!r}: write an IPv6 host in brackets")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"bad listener {spec!r}: want {kind.lower()}:HOST:PORT")
    return Peer(kind, host, int(port))


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class _Listener:
    __slots__ = ("address", "port", "family", "protocol")

    def __init__(self, address, port, protocol=None):
        self.address = address        # Peer with the real port
        self.port = port              # IListeningPort
        self.family = _family(address.host)
        self.protocol = protocol


class TransportLayer:
    """UDP, TCP and TLS listeners and senders (RFC 3261 §18).

    ``tls``: a ``TLSSettings`` or a mapping with ``certificate``, ``key``
    and ``ca`` file names.  ``resolver``: a ``resolver.Resolver`` (one on
    the system DNS is made on first need).
    """

    log = Logger()

    def __init__(self, reactor, on_message, on_bad_message, limits=DEFAULT_LIMITS,
                 tls=None, resolver=None, idle_timeout=300.0, max_connections=1024,
                 on_transport_error=None, connect_timeout=10.0,
                 max_queue=4 * 1024 * 1024, max_write_buffer=4 * 1024 * 1024,
                 close_grace=2.0, max_udp_peers=4096, message_timeout=5.0,
                 max_per_source=64):
        self.reactor = reactor
        self.on_message = on_message
        self.on_bad_message = on_bad_message
        self.on_transport_error = on_transport_error
        self.limits = limits
        self.tls = TLSSettings.coerce(tls)
        self._resolver = resolver
        self.idle_timeout = idle_timeout
        self.message_timeout = message_timeout    # a begun message, complete by then
        self.max_connections = max_connections
        self.max_per_source = max_per_source      # inbound streams one host may hold
        self._inbound = Counter()                 # host -> inbound streams open
        self._refusals = LogBudget(reactor.seconds)
        self.connect_timeout = connect_timeout
        self.max_queue = max_queue
        self.max_write_buffer = max_write_buffer
        self.close_grace = close_grace
        self.max_udp_peers = max_udp_peers
        self._listeners = []          # [_Listener] in listen() order
        self._streams = set()         # every StreamConnection, connecting or open
        self._connections = {}        # remote Peer -> StreamConnection
        self._udp_heard = OrderedDict()  # source Peer -> _Listener (RFC 3581 §4)

    @property
    def resolver(self):
        if self._resolver is None:
            self._resolver = Resolver(self.reactor)
        return self._resolver

    @property
    def connection_count(self):
        return len(self._streams)

    # -- listening ---------------------------------------------------------

    def listen(self, spec):
        """Listen on ``udp:HOST:PORT``, ``tcp:…`` or ``tls:…`` (port 0: any).

        Returns a Deferred firing with the ``Peer`` actually bound.
        """
        try:
            want = parse_listen_spec(spec)
            if want.transport == "UDP":
                proto = DatagramListener(self)
                port = self.reactor.listenUDP(want.port, proto, interface=want.host,
                                              maxPacketSize=self._max_datagram())
            elif want.transport == "TCP":
                proto = None
                port = self.reactor.listenTCP(want.port, ServerFactory(self, "TCP"),
                                              interface=want.host)
            else:
                if self.tls is None or not self.tls.can_serve:
                    raise ValueError("a tls: listener needs a certificate and a key")
                proto = None
                port = self.reactor.listenSSL(want.port, ServerFactory(self, "TLS"),
                                              self.tls.server_options(),
                                              interface=want.host)
        except Exception as e:
            return defer.fail(e)
        host = port.getHost()
        bound = Peer(want.transport, host.host, host.port)
        listener = _Listener(bound, port, proto)
        if proto is not None:
            proto.listener = listener
        self._listeners.append(listener)
        return defer.succeed(bound)

    def _max_datagram(self):
        return min(65535, self.limits.max_head + self.limits.max_body)

    def listening(self):
        """The ``Peer`` of every listener, in the order they were made."""
        return [listener.address for listener in self._listeners]

    def local_address(self, transport, family=None):
        """(host, port) of the first listener of ``transport`` (for Via and
        Contact), optionally of one address ``family``; None if none."""
        listener = self._listener(transport.upper(), family)
        return None if listener is None else (listener.address.host, listener.address.port)

    def _listener(self, transport, family=None):
        for listener in self._listeners:
            if listener.address.transport == transport and (
                    family is None or listener.family == family):
                return listener
        return None

    def stop(self):
        """Stop listening and close every connection; Deferred when done."""
        ds = [defer.maybeDeferred(listener.port.stopListening)
              for listener in self._listeners]
        self._listeners = []
        for conn in list(self._streams):
            ds.append(conn.lost)
            conn.close()
        self._udp_heard.clear()
        return defer.gatherResults(ds, consumeErrors=True).addCallback(lambda _: None)

    # -- receiving (called by the protocols) -------------------------------

    def _datagram(self, data, source, listener):
        """One UDP datagram (RFC 3261 §18.3: one message per datagram)."""
        if not data.strip(b"\r\n") or data[0] < 4:
            return     # CRLF (RFC 5626 §3.5.1) or STUN (§4.4.2) keep-alive
        self._remember_udp(source, listener)
        try:
            message = parse_datagram(data, self.limits)
        except SIPError as e:
            self._bad(e, source)      # the rest of the datagram is dropped
            return
        except Exception:
            self.log.failure("parser failed on a datagram from {peer}", peer=str(source))
            return
        self._received(message, source)

    def _remember_udp(self, source, listener):
        heard = self._udp_heard
        if heard.get(source) is not listener:
            heard[source] = listener
        heard.move_to_end(source)
        if len(heard) > self.max_udp_peers:
            heard.popitem(last=False)

    def _received(self, message, source):
        """A framed message: validate, stamp, deliver."""
        try:
            message.validate()
            if isinstance(message, Request):
                stamp_received(message, source)   # §18.2.1, RFC 3581 §4
        except SIPError as e:
            self._bad(e, source)
            return
        except Exception:
            self.log.failure("validating a message from {peer} failed", peer=str(source))
            return
        try:
            self.on_message(message, source)
        except Exception:
            self.log.failure("on_message failed for a message from {peer}",
                             peer=str(source))

    def _bad(self, error, source):
        try:
            self.on_bad_message(error, source)
        except Exception:
            self.log.failure("on_bad_message failed for {peer}", peer=str(source))

    # -- connections (called by StreamConnection) --------------------------

    def _connection_made(self, conn):
        self._connections[conn.peer] = conn

    def admit_inbound(self, kind, host):
        """May ``host`` open one more stream?  Within ``max_connections`` in
        all and ``max_per_source`` for it (one source cannot lock the others
        out); a refusal is logged once per host per minute."""
        total, own = self.connection_count, self._inbound[host]
        if total < self.max_connections and own < self.max_per_source:
            self._inbound[host] += 1
            return True
        admitted = self._refusals.admit(host)
        if admitted is not None:
            who, suppressed = admitted
            self.log.info("refusing {kind} connections from {host}: it holds {own}, "
                          "{total} open in all{more}", kind=kind, host=who, own=own,
                          total=total, more=f" ({suppressed} refused unlogged)"
                          if suppressed else "")
        return False

    def _connection_lost(self, conn, reason, unsent):
        self._streams.discard(conn)
        if conn.inbound_host is not None:
            self._inbound[conn.inbound_host] -= 1
            if self._inbound[conn.inbound_host] <= 0:
                del self._inbound[conn.inbound_host]
            conn.inbound_host = None
        if self._connections.get(conn.peer) is conn:
            del self._connections[conn.peer]
        if unsent:
            error = TransportError(
                f"{conn.kind} connection to {conn.peer} failed: {reason.getErrorMessage()}")
            self.log.info("{error}", error=str(error))
            for message in unsent:
                self._report(message, conn.peer, error)

    def _report(self, message, dest, error):
        if self.on_transport_error is None:
            return
        try:
            self.on_transport_error(message, dest, error)
        except Exception:
            self.log.failure("on_transport_error failed for {peer}", peer=str(dest))

    def certificate_names(self, peer):
        """The names of the verified TLS client certificate of the
        connection ``peer`` came on (empty when none was presented)."""
        conn = self._connections.get(peer)
        return conn.peer_names if conn is not None and not conn.closed else frozenset()

    def hold(self, peer):
        """A dialog uses the connection ``peer`` came on: it is not closed
        for being idle until every hold is ``release``d (a phone's call
        outlives [sip] idle_timeout without keep-alives).  True if held."""
        conn = self.connection(peer) if peer is not None and peer.reliable else None
        if conn is None:
            return False
        conn.dialogs += 1
        return True

    def release(self, peer):
        conn = self.connection(peer)
        if conn is not None and conn.dialogs:
            conn.dialogs -= 1

    def connection(self, peer):
        """The open (or opening) connection to ``peer``, or None."""
        conn = self._connections.get(peer)
        return None if conn is None or conn.closed else conn

    # -- sending -----------------------------------------------------------

    def send(self, message, dest, server_name=None):
        """Send a message to ``dest`` (a ``Peer`` whose host is an IP).

        UDP goes out of a listening socket of the destination's family;
        TCP/TLS reuses an open connection to ``dest`` (inbound ones too) or
        opens one.  ``server_name`` is the name a TLS server's certificate
        must hold (RFC 5922 §4; default: ``dest.host``).  The transport is
        the caller's choice: the UA applies RFC 3261 §18.1.1 (a large request
        goes over TCP, and back to UDP if TCP cannot be had), which needs
        the retry this layer cannot do.
        """
        if not is_ip_literal(dest.host):
            raise TransportError(f"cannot send to {dest}: not an IP address")
        self._send_bytes(message, message.to_bytes(), dest, server_name)

    def _send_bytes(self, message, data, dest, server_name=None, listener=None):
        if dest.transport == "UDP":
            self._send_datagram(data, dest, listener)
        elif dest.transport in ("TCP", "TLS"):
            conn = self.connection(dest)
            if conn is None:
                conn = self._connect(dest, server_name)
            conn.send(message, data)
        else:
            raise TransportError(f"transport {dest.transport} is not supported")

    def _send_datagram(self, data, dest, listener=None):
        if listener is None:
            listener = self._listener("UDP", _family(dest.host))
        if listener is None:
            raise TransportError(f"cannot send to {dest}: no UDP listener of its family")
        if len(data) > 65507:
            raise TransportError(f"message of {len(data)} bytes is too large for UDP")
        addr = (dest.host, dest.port)
        try:
            if "[" not in dest.host and is_ip_literal(dest.host):
                # sendto on the port's socket: Twisted's ``Port.write`` checks
                # the address's syntax again on every datagram (a tenth of
                # an OPTIONS answered, bench/options_bench.py).
                listener.port.socket.sendto(data, addr)
            else:
                listener.port.write(data, addr)         # refuses a name
        except ConnectionRefusedError:
            pass    # an earlier datagram's ICMP error, ignored as Twisted's Port.write does
        except Exception as e:
            raise TransportError(f"cannot send to {dest}: {e}") from e

    def _connect(self, dest, server_name=None):
        if self.connection_count >= self.max_connections:
            raise TransportError(f"cannot connect to {dest}: "
                                 f"{self.connection_count} connections open")
        conn = StreamConnection(self, dest.transport, peer=dest, outbound=True,
                                server_name=server_name or dest.host)
        factory = ClientFactory(conn)
        try:
            if dest.transport == "TLS":
                tls = self.tls or TLSSettings()
                conn.connector = self.reactor.connectSSL(
                    dest.host, dest.port, factory, tls.client_options(conn.server_name),
                    timeout=self.connect_timeout)
            else:
                conn.connector = self.reactor.connectTCP(
                    dest.host, dest.port, factory, timeout=self.connect_timeout)
        except Exception as e:
            raise TransportError(f"cannot connect to {dest}: {e}") from e
        self._streams.add(conn)
        self._connections[dest] = conn
        return conn

    def send_response(self, response, source):
        """Send a response to a request that came from ``source`` (§18.2.2).

        Over a stream: the connection the request came on if still open,
        else a new connection to ``received`` and the sent-by port.  Over
        UDP: ``received``/``rport``/sent-by (or ``maddr``), from the socket
        that heard the request (RFC 3581 §4).
        """
        data = response.to_bytes()
        if source.reliable:
            conn = self.connection(source)
            if conn is not None:
                conn.send(response, data)
                return
            dest = response_destination(response, source, reuse=False)
            listener = None
        else:
            dest = response_destination(response, source)
            listener = self._udp_heard.get(source)
            if listener is not None and listener.family != _family(dest.host):
                listener = None
        if is_ip_literal(dest.host):
            self._send_bytes(response, data, dest, listener=listener)
            return
        # A name (maddr, or a sent-by without received): RFC 3263 §5 — its
        # addresses, the first one used.
        d = self.resolver.addresses(dest.host)

        def resolved(hosts):
            if not hosts:
                raise TransportError(f"{dest.host} does not resolve")
            target = Peer(dest.transport, hosts[0], dest.port)
            self._send_bytes(response, data, target, server_name=dest.host)

        d.addCallback(resolved)
        d.addErrback(lambda f: self._report(response, dest, f.value if isinstance(
            f.value, TransportError) else TransportError(f.getErrorMessage())))

    def locate(self, request):
        """RFC 3263 for an outgoing request: Deferred list of ``Peer`` to try,
        from its next hop (``routing.next_hop``)."""
        try:
            uri = next_hop(request)
        except SIPError as e:
            return defer.fail(TransportError(f"no next hop: {e.reason}"))
        return self.resolver.locate(uri)
