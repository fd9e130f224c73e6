"""SIP over TCP and TLS: one protocol instance per connection (RFC 3261 §18.3).

Rules of this module:

- A connection only moves bytes: it frames them with a ``StreamParser``
  and hands every item to its ``TransportLayer``, which decides.
- Everything is bounded: the parser's ``Limits`` cap what is buffered for
  reading; ``max_queue`` caps what waits for the connection (or the TLS
  handshake) to complete; ``max_write_buffer`` caps what may pile up while
  the peer does not read (the connection is aborted past it); an idle
  connection is closed after ``idle_timeout`` seconds (``TimeoutMixin``).
- A framing error kills the stream: the layer is told (so it can answer
  400 on this very connection), then the connection is closed.
- An outbound connection is *ready* once connected (TCP) or once the TLS
  handshake, with its certificate check, has completed; messages sent
  before that wait in a queue, and are reported failed if it never is.
"""

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from ..sip.address import Peer
from ..sip.errors import FramingError, SIPError
from ..sip.message import PING, StreamParser
from .errors import TransportError
from .tls import peer_names

__all__ = ["StreamConnection", "ServerFactory", "ClientFactory"]


@implementer(IHandshakeListener, IPushProducer)
class StreamConnection(protocol.Protocol, TimeoutMixin):
    """One TCP or TLS connection, inbound or outbound."""

    def __init__(self, layer, kind, peer=None, outbound=False, server_name=None):
        self.layer = layer
        self.kind = kind                  # "TCP" or "TLS"
        self.peer = peer                  # known in advance when outbound
        self.outbound = outbound
        self.server_name = server_name    # what the TLS certificate must name
        self.peer_names = frozenset()     # a verified client certificate's names (tls.py)
        self.inbound_host = None          # who connected to us (its budget), if inbound
        self.parser = StreamParser(layer.limits)
        self.connector = None
        self.ready = False
        self.closed = False
        self.lost = defer.Deferred()
        self._queue = []                  # [(message, bytes)] until ready
        self._queued = 0
        self._paused = False
        self._unread = 0                  # bytes written while the peer is slow
        self._abort_call = None
        self._deadline = None             # a started message must be complete by then
        self.dialogs = 0                  # dialogs whose flow this is: not idle (layer.hold)

    def __repr__(self):
        way = "to" if self.outbound else "from"
        return f"<StreamConnection {way} {self.peer}>"

    # -- connection life ---------------------------------------------------

    def connectionMade(self):
        if self.peer is None:
            addr = self.transport.getPeer()
            self.peer = Peer(self.kind, addr.host, addr.port)
        self.callLater = self.layer.reactor.callLater
        self.setTimeout(self.layer.idle_timeout)
        self.transport.registerProducer(self, True)
        self.layer._connection_made(self)
        # An inbound TLS connection may queue its writes in the TLS layer;
        # an outbound one waits for the server's certificate to be checked.
        if not (self.outbound and self.kind == "TLS"):
            self._ready()

    def handshakeCompleted(self):
        if self.kind == "TLS" and not self.outbound:
            cert = self.transport.getPeerCertificate()
            if cert is not None:          # verified, or the handshake had failed
                self.peer_names = peer_names(cert)
        if not self.ready:
            self._ready()

    def _ready(self):
        self.ready = True
        queue, self._queue, self._queued = self._queue, [], 0
        for _, data in queue:
            self._write(data)

    def connectionFailed(self, reason):
        """The outbound connection could not be made."""
        self._gone(reason)

    def connectionLost(self, reason=protocol.connectionDone):
        self.setTimeout(None)
        self._stop_deadline()
        self._gone(reason)

    def _gone(self, reason):
        if self.lost.called:
            return
        self.closed = True
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        queue, self._queue, self._queued = self._queue, [], 0
        self.layer._connection_lost(self, reason, [m for m, _ in queue])
        self.lost.callback(None)

    def close(self):
        """Close gracefully; abort if the peer does not let go in time."""
        if self.closed and self.transport is None:
            return
        self.closed = True
        if self.transport is None:            # still connecting
            if self.connector is not None:
                try:
                    self.connector.stopConnecting()
                except Exception:
                    pass
            return
        self.transport.loseConnection()
        if self._abort_call is None:
            self._abort_call = self.layer.reactor.callLater(
                self.layer.close_grace, self._abort)

    def _abort(self):
        self._abort_call = None
        if not self.lost.called:
            self.transport.abortConnection()

    def _too_slow(self):
        self._deadline = None
        self.layer.log.info("closing {kind} connection with {peer}: no complete message "
                            "within {timeout} s", kind=self.kind, peer=str(self.peer),
                            timeout=self.layer.message_timeout)
        self.close()

    def _stop_deadline(self):
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def timeoutConnection(self):
        if self.dialogs:                # RFC 5626 §4.4: a dialog's flow stays while it lives
            self.setTimeout(self.layer.idle_timeout)    # (the mixin forgot its call)
            return
        self.layer.log.info("closing idle {kind} connection with {peer}",
                            kind=self.kind, peer=str(self.peer))
        self.close()

    # -- IPushProducer: told when the peer stops reading what we write --------

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        self._unread = 0

    def stopProducing(self):
        pass

    # -- sending -----------------------------------------------------------

    def send(self, message, data):
        if self.closed:
            raise TransportError(f"connection with {self.peer} is closed")
        if not self.ready:
            if self._queued + len(data) > self.layer.max_queue:
                raise TransportError(f"too much waiting for {self.peer}")
            self._queue.append((message, data))
            self._queued += len(data)
            return
        self._write(data)

    def _write(self, data):
        if self._paused:
            self._unread += len(data)
            if self._unread > self.layer.max_write_buffer:
                self.layer.log.info("{peer} does not read: aborting the connection",
                                    peer=str(self.peer))
                self.closed = True
                self.transport.abortConnection()
                raise TransportError(f"{self.peer} does not read")
        self.resetTimeout()
        self.transport.write(data)

    # -- receiving ---------------------------------------------------------

    def dataReceived(self, data):
        """Bytes in.  Only a complete message (or a keep-alive) restarts the
        idle timer, and a message once begun must be complete within
        ``message_timeout`` (slow-loris: one byte at a time keeps nothing)."""
        if self.closed:
            return
        try:
            items = self.parser.feed(data)
        except Exception:
            self.layer.log.failure("stream parser failed on input from {peer}",
                                   peer=str(self.peer))
            self.close()
            return
        layer = self.layer
        if items:
            self.resetTimeout()
            self._stop_deadline()
        if self.parser.pending and self._deadline is None and not self.closed:
            self._deadline = layer.reactor.callLater(layer.message_timeout, self._too_slow)
        for item in items:
            if item is PING:
                # RFC 5626 §4.4.1: a CRLFCRLF ping is answered by a CRLF pong.
                self.transport.write(b"\r\n")
            elif isinstance(item, SIPError):
                layer._bad(item, self.peer)
                if isinstance(item, FramingError):
                    # RFC 3261 §18.3: the stream cannot be trusted any more.
                    # (The bad input itself is logged by on_bad_message.)
                    layer.log.debug("framing error from {peer}: closing the connection",
                                   peer=str(self.peer))
                    self.close()
                    return
            else:
                layer._received(item, self.peer)


class ServerFactory(protocol.ServerFactory):
    """Accepts connections up to the layer's ``max_connections``."""

    noisy = False

    def __init__(self, layer, kind):
        self.layer = layer
        self.kind = kind

    def buildProtocol(self, addr):
        layer = self.layer
        if not layer.admit_inbound(self.kind, addr.host):
            return None                     # Twisted closes the socket at once
        conn = StreamConnection(layer, self.kind)
        conn.inbound_host = addr.host
        layer._streams.add(conn)
        return conn


class ClientFactory(protocol.ClientFactory):
    """Builds exactly one outbound connection, made in advance."""

    noisy = False

    def __init__(self, conn):
        self.conn = conn

    def buildProtocol(self, addr):
        return self.conn

    def clientConnectionFailed(self, connector, reason):
        self.conn.connectionFailed(reason)
