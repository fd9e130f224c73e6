"""The Twisted transport layer on real loopback sockets (127.0.0.1 and ::1 only).

trial ``TestCase``s (pytest runs them): each test returns a Deferred and the
reactor runs until it fires.  Peers are either raw sockets (to send exactly
the bytes we want) or a second ``TransportLayer``.
"""

import pathlib
import shutil
import socket
import tempfile

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.defer import DeferredQueue
from twisted.trial import unittest

from tests.certs import make_ca_and_leaf
from twisted_mfocus.sip.address import Peer
from twisted_mfocus.sip.errors import FramingError
from twisted_mfocus.sip.message import Limits, Request, make_response, parse_datagram
from twisted_mfocus.transport import TransportError, TransportLayer, parse_listen_spec


def options(via, branch="z9hG4bK-1", method="OPTIONS", body=b"", cseq=1):
    text = (f"{method} sip:conf@127.0.0.1 SIP/2.0\r\n"
            f"Via: {via};branch={branch}\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:a@example.com>;tag=1\r\n"
            "To: <sip:conf@127.0.0.1>\r\n"
            f"Call-ID: {branch}@test\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return text


def ipv6_available():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


class Recorder:
    """A TransportLayer with its callbacks recorded into queues."""

    def __init__(self, test, **kw):
        self.messages = DeferredQueue()
        self.bad = DeferredQueue()
        self.errors = DeferredQueue()
        self.answer_bad = False
        self.layer = TransportLayer(reactor, self._message, self._bad,
                                    on_transport_error=self._error, **kw)
        test.addCleanup(self.layer.stop)

    def _message(self, message, source):
        self.messages.put((message, source))

    def _bad(self, error, source):
        self.bad.put((error, source))
        if self.answer_bad and isinstance(error.message, Request):
            self.layer.send_response(make_response(error.message, error.status,
                                                   error.reason), source)

    def _error(self, message, dest, error):
        self.errors.put((message, dest, error))


class UDPClient(protocol.DatagramProtocol):
    def __init__(self):
        self.received = DeferredQueue()

    def datagramReceived(self, data, addr):
        self.received.put((data, addr))


class StreamClient(protocol.Protocol):
    """Raw stream peer: collects bytes, knows when it is closed."""

    def __init__(self):
        self.data = b""
        self.closed = defer.Deferred()
        self._waiting = []

    def dataReceived(self, data):
        self.data += data
        waiting, self._waiting = self._waiting, []
        for want, d in waiting:
            self._check(want, d)

    def connectionLost(self, reason):
        self.closed.callback(None)
        for _, d in self._waiting:
            d.errback(reason)

    def _check(self, want, d):
        if want in self.data:
            d.callback(self.data)
        else:
            self._waiting.append((want, d))

    def wait_for(self, want):
        d = defer.Deferred()
        self._check(want, d)
        return d


def with_timeout(d, seconds=5):
    return d.addTimeout(seconds, reactor)


class Base(unittest.TestCase):
    timeout = 20

    def tempdir(self):
        # Not trial's mktemp(): under pytest it would write into the cwd.
        path = pathlib.Path(tempfile.mkdtemp(prefix="mfocus-tls-"))
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def udp_client(self, host="127.0.0.1"):
        client = UDPClient()
        port = reactor.listenUDP(0, client, interface=host)
        self.addCleanup(port.stopListening)
        client.port = port
        return client

    @defer.inlineCallbacks
    def tcp_client(self, port, host="127.0.0.1"):
        client = StreamClient()
        yield protocol.ClientCreator(reactor, lambda: client).connectTCP(host, port)
        self.addCleanup(self._close, client)
        return client

    def _close(self, client):
        if not client.closed.called:
            client.transport.abortConnection()
        return client.closed


class ListenTests(Base):

    def test_parse_listen_spec(self):
        self.assertEqual(parse_listen_spec("udp:127.0.0.1:5060"), Peer("UDP", "127.0.0.1", 5060))
        self.assertEqual(parse_listen_spec("tls:[::1]:5061"), Peer("TLS", "::1", 5061))
        for bad in ("sctp:1.2.3.4:5", "udp:1.2.3.4", "udp::5060", "tcp:::1:5060",
                    "udp:1.2.3.4:99999"):
            self.assertRaises(ValueError, parse_listen_spec, bad)

    @defer.inlineCallbacks
    def test_port_zero_reports_real_port_and_local_address(self):
        rec = Recorder(self)
        udp = yield rec.layer.listen("udp:127.0.0.1:0")
        tcp = yield rec.layer.listen("tcp:127.0.0.1:0")
        self.assertNotEqual(udp.port, 0)
        self.assertEqual(rec.layer.local_address("UDP"), ("127.0.0.1", udp.port))
        self.assertEqual(rec.layer.local_address("tcp"), ("127.0.0.1", tcp.port))
        self.assertIsNone(rec.layer.local_address("TLS"))
        self.assertEqual(rec.layer.listening(), [udp, tcp])

    @defer.inlineCallbacks
    def test_tls_listener_without_certificate_fails(self):
        rec = Recorder(self)
        with self.assertRaises(ValueError):
            yield rec.layer.listen("tls:127.0.0.1:0")

    @defer.inlineCallbacks
    def test_stop_closes_everything(self):
        rec = Recorder(self)
        tcp = yield rec.layer.listen("tcp:127.0.0.1:0")
        client = yield self.tcp_client(tcp.port)
        yield task.deferLater(reactor, 0.05)
        self.assertEqual(rec.layer.connection_count, 1)
        yield rec.layer.stop()
        yield with_timeout(client.closed)
        self.assertEqual(rec.layer.connection_count, 0)


class UDPTests(Base):

    @defer.inlineCallbacks
    def setUp(self):
        self.rec = Recorder(self)
        self.addr = yield self.rec.layer.listen("udp:127.0.0.1:0")

    @defer.inlineCallbacks
    def test_round_trip_with_rport(self):
        client = self.udp_client()
        cport = client.port.getHost().port
        client.transport.write(options("SIP/2.0/UDP client.invalid:5999;rport"),
                               ("127.0.0.1", self.addr.port))
        msg, src = yield with_timeout(self.rec.messages.get())
        self.assertEqual(src, Peer("UDP", "127.0.0.1", cport))
        self.assertEqual(msg.top_via.received, "127.0.0.1")
        self.assertEqual(msg.top_via.rport, cport)
        self.rec.layer.send_response(make_response(msg, 200, to_tag="x"), src)
        data, addr = yield with_timeout(client.received.get())
        self.assertEqual(addr, ("127.0.0.1", self.addr.port))   # from the same socket
        resp = parse_datagram(data)
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.top_via.rport, cport)

    @defer.inlineCallbacks
    def test_response_goes_to_sent_by_port_without_rport(self):
        sender = self.udp_client()
        target = self.udp_client()
        tport = target.port.getHost().port
        sender.transport.write(options(f"SIP/2.0/UDP 127.0.0.1:{tport}"),
                               ("127.0.0.1", self.addr.port))
        msg, src = yield with_timeout(self.rec.messages.get())
        self.assertNotIn("received", msg.top_via.params)   # host matches: untouched
        self.rec.layer.send_response(make_response(msg, 200), src)
        data, _ = yield with_timeout(target.received.get())
        self.assertEqual(parse_datagram(data).status, 200)
        self.assertEqual(sender.received.pending, [])

    @defer.inlineCallbacks
    def test_bad_datagrams_reported_and_layer_survives(self):
        client = self.udp_client()
        dest = ("127.0.0.1", self.addr.port)
        client.transport.write(b"\r\n\r\n", dest)             # keep-alive: ignored
        client.transport.write(b"garbage without end", dest)
        error, src = yield with_timeout(self.rec.bad.get())
        self.assertIsInstance(error, FramingError)
        self.assertEqual(src.port, client.port.getHost().port)
        # Content-Length beyond the datagram: framing error with the partial message.
        data = options("SIP/2.0/UDP 127.0.0.1:5999").replace(
            b"Content-Length: 0", b"Content-Length: 50")
        client.transport.write(data, dest)
        error, _ = yield with_timeout(self.rec.bad.get())
        self.assertIsInstance(error, FramingError)
        self.assertIsInstance(error.message, Request)
        # Framed but invalid (no Call-ID): validate() fails, 400 can be formed.
        data = options("SIP/2.0/UDP 127.0.0.1:5999").replace(b"Call-ID", b"X-Call")
        client.transport.write(data, dest)
        error, _ = yield with_timeout(self.rec.bad.get())
        self.assertEqual(error.status, 400)
        self.assertIn("Call-ID", error.reason)
        client.transport.write(options("SIP/2.0/UDP 127.0.0.1:5999"), dest)
        msg, _ = yield with_timeout(self.rec.messages.get())
        self.assertEqual(msg.method, "OPTIONS")
        self.assertEqual(len(self.rec.bad.pending), 0)

    @defer.inlineCallbacks
    def test_callback_exception_is_logged_not_raised(self):
        def boom(message, source):
            raise RuntimeError("TU bug")
        self.rec.layer.on_message = boom
        client = self.udp_client()
        client.transport.write(options("SIP/2.0/UDP 127.0.0.1:5999"),
                               ("127.0.0.1", self.addr.port))
        yield task.deferLater(reactor, 0.1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_send_errors_known_at_once(self):
        layer = self.rec.layer
        msg = parse_datagram(options("SIP/2.0/UDP 127.0.0.1:5999"))
        self.assertRaises(TransportError, layer.send, msg, Peer("UDP", "example.com", 5060))
        self.assertRaises(TransportError, layer.send, msg, Peer("UDP", "::1", 5060))
        self.assertRaises(TransportError, layer.send, msg, Peer("SCTP", "127.0.0.1", 5060))

    @defer.inlineCallbacks
    def test_a_large_request_goes_where_it_is_sent(self):
        # The transport does not pick: the UA applies RFC 3261 §18.1.1 (TCP
        # for a large request, UDP again when TCP cannot be had), which it
        # could not do if this layer switched transports behind its back.
        other = Recorder(self)
        oudp = yield other.layer.listen("udp:127.0.0.1:0")
        msg = parse_datagram(options(f"SIP/2.0/UDP 127.0.0.1:{self.addr.port}",
                                     method="MESSAGE", body=b"x" * 2000))
        self.rec.layer.send(msg, Peer("UDP", "127.0.0.1", oudp.port))
        got, src = yield with_timeout(other.messages.get())
        self.assertEqual((src.transport, got.top_via.transport, len(got.body)),
                         ("UDP", "UDP", 2000))


class TCPTests(Base):

    @defer.inlineCallbacks
    def setUp(self):
        self.rec = Recorder(self)
        self.addr = yield self.rec.layer.listen("tcp:127.0.0.1:0")

    @defer.inlineCallbacks
    def test_pipelined(self):
        client = yield self.tcp_client(self.addr.port)
        client.transport.write(options("SIP/2.0/TCP 127.0.0.1:5999", branch="z9hG4bK-a")
                               + options("SIP/2.0/TCP 127.0.0.1:5999", branch="z9hG4bK-b",
                                         method="INFO", body=b"hello", cseq=2))
        m1, src = yield with_timeout(self.rec.messages.get())
        m2, src2 = yield with_timeout(self.rec.messages.get())
        self.assertEqual((m1.method, m2.method), ("OPTIONS", "INFO"))
        self.assertEqual(m2.body, b"hello")
        self.assertEqual(src, src2)
        self.assertEqual(src, Peer("TCP", "127.0.0.1", client.transport.getHost().port))
        # Sent-by port differs from the source port: received is added only
        # when the host differs (§18.2.1), so nothing here.
        self.assertNotIn("received", m1.top_via.params)

    @defer.inlineCallbacks
    def test_fragmented(self):
        client = yield self.tcp_client(self.addr.port)
        data = options("SIP/2.0/TCP client.invalid:5999", body=b"0123456789",
                       method="INFO")
        for i in range(0, len(data), 7):
            client.transport.write(data[i:i + 7])
            yield task.deferLater(reactor, 0.002)
        msg, _ = yield with_timeout(self.rec.messages.get())
        self.assertEqual(msg.body, b"0123456789")
        self.assertEqual(msg.top_via.received, "127.0.0.1")

    @defer.inlineCallbacks
    def test_framing_error_answers_then_closes(self):
        self.rec.answer_bad = True
        client = yield self.tcp_client(self.addr.port)
        client.transport.write(options("SIP/2.0/TCP 127.0.0.1:5999").replace(
            b"Content-Length: 0", b"Content-Length: 0\r\nContent-Length: 5"))
        error, src = yield with_timeout(self.rec.bad.get())
        self.assertIsInstance(error, FramingError)
        yield with_timeout(client.closed)
        self.assertIn(b"SIP/2.0 400 ", client.data)
        yield task.deferLater(reactor, 0)
        self.assertEqual(self.rec.layer.connection_count, 0)

    @defer.inlineCallbacks
    def test_bad_message_does_not_close(self):
        client = yield self.tcp_client(self.addr.port)
        client.transport.write(options("SIP/2.0/TCP 127.0.0.1:5999").replace(
            b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS"))
        error, _ = yield with_timeout(self.rec.bad.get())
        self.assertEqual(error.status, 400)
        client.transport.write(options("SIP/2.0/TCP 127.0.0.1:5999"))
        msg, _ = yield with_timeout(self.rec.messages.get())
        self.assertFalse(client.closed.called)

    @defer.inlineCallbacks
    def test_keepalive_ping_pong(self):
        client = yield self.tcp_client(self.addr.port)
        client.transport.write(b"\r\n\r\n")
        data = yield with_timeout(client.wait_for(b"\r\n"))
        self.assertEqual(data, b"\r\n")

    @defer.inlineCallbacks
    def test_response_on_the_same_connection(self):
        client = yield self.tcp_client(self.addr.port)
        client.transport.write(options("SIP/2.0/TCP 127.0.0.1:5999"))
        msg, src = yield with_timeout(self.rec.messages.get())
        self.rec.layer.send_response(make_response(msg, 200), src)
        data = yield with_timeout(client.wait_for(b"\r\n\r\n"))
        self.assertTrue(data.startswith(b"SIP/2.0 200 OK\r\n"))
        self.assertEqual(self.rec.layer.connection_count, 1)

    @defer.inlineCallbacks
    def test_response_reconnects_when_connection_gone(self):
        # §18.2.2: the connection closed → a new one to received + sent-by port.
        target = Recorder(self)
        taddr = yield target.layer.listen("tcp:127.0.0.1:0")
        client = yield self.tcp_client(self.addr.port)
        client.transport.write(options(f"SIP/2.0/TCP 127.0.0.1:{taddr.port}"))
        msg, src = yield with_timeout(self.rec.messages.get())
        client.transport.loseConnection()
        yield client.closed
        yield task.deferLater(reactor, 0.05)
        self.rec.layer.send_response(make_response(msg, 200), src)
        resp, rsrc = yield with_timeout(target.messages.get())
        self.assertEqual(resp.status, 200)

    @defer.inlineCallbacks
    def test_request_to_peer_reuses_inbound_connection(self):
        client = yield self.tcp_client(self.addr.port)
        client.transport.write(options("SIP/2.0/TCP 127.0.0.1:5999"))
        _, src = yield with_timeout(self.rec.messages.get())
        out = parse_datagram(options(f"SIP/2.0/TCP 127.0.0.1:{self.addr.port}",
                                     method="NOTIFY", branch="z9hG4bK-n"))
        self.rec.layer.send(out, src)
        data = yield with_timeout(client.wait_for(b"NOTIFY"))
        self.assertTrue(data.startswith(b"NOTIFY sip:"))
        self.assertEqual(self.rec.layer.connection_count, 1)

    @defer.inlineCallbacks
    def test_layer_to_layer_reuse(self):
        a = Recorder(self)
        yield a.layer.listen("tcp:127.0.0.1:0")
        dest = Peer("TCP", "127.0.0.1", self.addr.port)
        for n in range(3):          # queued while connecting, then reused
            a.layer.send(parse_datagram(options("SIP/2.0/TCP 127.0.0.1:5999",
                                                branch=f"z9hG4bK-{n}")), dest)
        self.assertEqual(a.layer.connection_count, 1)
        for n in range(3):
            msg, src = yield with_timeout(self.rec.messages.get())
            self.assertEqual(msg.top_via.branch, f"z9hG4bK-{n}")
        self.rec.layer.send_response(make_response(msg, 200), src)
        resp, rsrc = yield with_timeout(a.messages.get())
        self.assertEqual(resp.status, 200)
        self.assertEqual(rsrc, dest)
        self.assertEqual(a.layer.connection_count, 1)
        self.assertEqual(self.rec.layer.connection_count, 1)

    @defer.inlineCallbacks
    def test_connection_refused_reported_later(self):
        port = reactor.listenTCP(0, protocol.ServerFactory(), interface="127.0.0.1")
        free = port.getHost().port
        yield port.stopListening()
        msg = parse_datagram(options("SIP/2.0/TCP 127.0.0.1:5999"))
        self.rec.layer.send(msg, Peer("TCP", "127.0.0.1", free))
        got, dest, error = yield with_timeout(self.rec.errors.get())
        self.assertIs(got, msg)
        self.assertEqual(dest, Peer("TCP", "127.0.0.1", free))
        self.assertIsInstance(error, TransportError)
        self.assertEqual(self.rec.layer.connection_count, 0)

    @defer.inlineCallbacks
    def test_max_connections(self):
        self.rec.layer.max_connections = 1
        first = yield self.tcp_client(self.addr.port)
        second = yield self.tcp_client(self.addr.port)
        yield with_timeout(second.closed)
        self.assertFalse(first.closed.called)
        msg = parse_datagram(options("SIP/2.0/TCP 127.0.0.1:5999"))
        self.assertRaises(TransportError, self.rec.layer.send, msg,
                          Peer("TCP", "127.0.0.1", 1))

    @defer.inlineCallbacks
    def test_idle_connection_closed(self):
        self.rec.layer.idle_timeout = 0.2
        client = yield self.tcp_client(self.addr.port)
        yield task.deferLater(reactor, 0.1)
        client.transport.write(b"\r\n\r\n")          # activity resets the timer
        yield task.deferLater(reactor, 0.15)
        self.assertFalse(client.closed.called)
        yield with_timeout(client.closed, 2)
        self.assertEqual(self.rec.layer.connection_count, 0)

    @defer.inlineCallbacks
    def test_oversized_header_closes(self):
        self.rec.layer.limits = Limits(max_head=512, max_body=1024)
        client = yield self.tcp_client(self.addr.port)
        client.transport.write(b"OPTIONS sip:x SIP/2.0\r\nX: " + b"a" * 1000)
        error, _ = yield with_timeout(self.rec.bad.get())
        self.assertEqual(error.status, 513)
        yield with_timeout(client.closed)


class IPv6Tests(Base):

    def setUp(self):
        if not ipv6_available():
            raise unittest.SkipTest("no IPv6 loopback")

    @defer.inlineCallbacks
    def test_udp_round_trip_v6(self):
        rec = Recorder(self)
        addr = yield rec.layer.listen("udp:[::1]:0")
        self.assertEqual(addr.host, "::1")
        client = self.udp_client("::1")
        cport = client.port.getHost().port
        client.transport.write(options("SIP/2.0/UDP [::1]:5999;rport"), ("::1", addr.port))
        msg, src = yield with_timeout(rec.messages.get())
        self.assertEqual(src, Peer("UDP", "::1", cport))
        self.assertEqual(msg.top_via.rport, cport)
        rec.layer.send_response(make_response(msg, 200), src)
        data, _ = yield with_timeout(client.received.get())
        self.assertEqual(parse_datagram(data).status, 200)

    @defer.inlineCallbacks
    def test_tcp_v6_layer_to_layer(self):
        a, b = Recorder(self), Recorder(self)
        addr = yield b.layer.listen("tcp:[::1]:0")
        a.layer.send(parse_datagram(options("SIP/2.0/TCP [::1]:5999")),
                     Peer("TCP", "::1", addr.port))
        msg, src = yield with_timeout(b.messages.get())
        self.assertEqual(src.host, "::1")


class TLSTests(Base):

    @defer.inlineCallbacks
    def setUp(self):
        paths = make_ca_and_leaf(self.tempdir())
        settings = {"certificate": paths["cert"], "key": paths["key"], "ca": paths["ca"]}
        self.server = Recorder(self, tls=settings)
        self.addr = yield self.server.layer.listen("tls:127.0.0.1:0")
        self.client = Recorder(self, tls={"ca": paths["ca"]})
        self.dest = Peer("TLS", "127.0.0.1", self.addr.port)

    @defer.inlineCallbacks
    def test_round_trip_verified(self):
        msg = parse_datagram(options("SIP/2.0/TLS client.invalid:5999"))
        self.client.layer.send(msg, self.dest, server_name="localhost")
        got, src = yield with_timeout(self.server.messages.get())
        self.assertEqual(src.transport, "TLS")
        self.assertEqual(got.top_via.received, "127.0.0.1")
        self.server.layer.send_response(make_response(got, 200), src)
        resp, rsrc = yield with_timeout(self.client.messages.get())
        self.assertEqual(resp.status, 200)
        self.assertEqual(rsrc, self.dest)

    @defer.inlineCallbacks
    def test_ip_address_verified(self):
        # The certificate also names 127.0.0.1 (an iPAddress SAN).
        self.client.layer.send(parse_datagram(options("SIP/2.0/TLS 127.0.0.1:5999")),
                               self.dest)
        got, src = yield with_timeout(self.server.messages.get())
        self.assertEqual(got.method, "OPTIONS")

    @defer.inlineCallbacks
    def test_wrong_hostname_fails(self):
        msg = parse_datagram(options("SIP/2.0/TLS 127.0.0.1:5999"))
        self.client.layer.send(msg, self.dest, server_name="wrong.example")
        got, dest, error = yield with_timeout(self.client.errors.get())
        self.assertIs(got, msg)
        self.assertEqual(dest, self.dest)
        self.assertIsInstance(error, TransportError)
        yield task.deferLater(reactor, 0.05)
        self.assertEqual(self.server.messages.pending, [])
        self.assertEqual(self.client.layer.connection_count, 0)
        self.flushLoggedErrors()

    @defer.inlineCallbacks
    def test_untrusted_ca_fails(self):
        stranger = Recorder(self, tls={"ca": make_ca_and_leaf(self.tempdir())["ca"]})
        stranger.layer.send(parse_datagram(options("SIP/2.0/TLS 127.0.0.1:5999")),
                            self.dest, server_name="localhost")
        _, _, error = yield with_timeout(stranger.errors.get())
        self.assertIsInstance(error, TransportError)
