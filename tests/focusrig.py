"""A focus on a ``task.Clock`` with an in-memory wire, for tests and benches.

The transaction layer, dialogs, legs, REFER and the notifier run as in the
daemon; only the sockets are replaced by ``Wire`` (which serializes and
re-parses every message, so what is asserted is what would go out) and
RTP ports by a counter.  Time moves only when the caller says so.
"""

import collections
import itertools
import os
import tempfile

from twisted.internet import defer
from twisted.internet.task import Clock

from twisted_mfocus.budget import request_budgets
from twisted_mfocus.config import Config
from twisted_mfocus.focus.focus import ConferenceFocus
from twisted_mfocus.sip.address import Peer
from twisted_mfocus.sip.message import Request, Response, make_response, parse_datagram
from twisted_mfocus.sip.routing import next_hop, stamp_received
from twisted_mfocus.sip.transaction import Timers, TransactionLayer

FOCUS = Peer("UDP", "127.0.0.1", 5060)
SDP = (b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


class Wire:
    """The transport, in memory: records what the focus sends."""

    def __init__(self):
        self.sent = []

    def listening(self):
        return [FOCUS]

    def local_address(self, transport, family=None):
        return (FOCUS.host, FOCUS.port) if transport == "UDP" else None

    def certificate_names(self, peer):
        return frozenset()              # no TLS on this wire

    def connection(self, peer):
        return None                     # no streams on this wire

    def hold(self, peer):
        return False

    def release(self, peer):
        pass

    def locate(self, request):
        uri = next_hop(request)
        return defer.succeed([Peer("UDP", uri.host, uri.port or 5060)])

    def send(self, message, peer):
        self.sent.append((parse_datagram(message.to_bytes()), peer))

    send_response = send

    def take(self, what=None):
        """Messages sent so far (of a method or status), and forget them."""
        out = [m for m, _ in self.sent if what is None or _is(m, what)]
        self.sent = [(m, p) for m, p in self.sent if not (what is None or _is(m, what))]
        return out


def _is(message, what):
    if isinstance(what, int):
        return isinstance(message, Response) and message.status == what
    return isinstance(message, Request) and message.method == what


class RTP:
    """A rig's RTP pair: keeps the last RTP packets sent (``sent``)."""

    def __init__(self, port):
        self.port, self.sink = port, None
        self.sent = collections.deque(maxlen=2000)

    def send_rtp(self, packet, dest):
        self.sent.append((packet, dest))

    def send_rtcp(self, packet, dest):
        pass


class Pool:
    interface = "127.0.0.1"

    def __init__(self, size=100):
        self.free = list(range(40000, 40000 + 2 * size, 2))

    def allocate(self):
        from twisted_mfocus.media.rtp import PortsExhausted
        if not self.free:
            raise PortsExhausted()
        return RTP(self.free.pop(0))

    def release(self, endpoint):
        self.free.append(endpoint.port)


class Phone:
    """A SIP phone's messages, as text, at 127.0.0.1:PORT."""

    counter = itertools.count(1)

    def __init__(self, port, user=None):
        self.port = port
        self.user = user or f"phone{port}"
        self.peer = Peer("UDP", "127.0.0.1", port)
        self.tag = f"t{port}"
        self.call_id = f"call{port}-{next(self.counter)}"
        self.cseq = 0

    def request(self, method, uri, to_tag=None, body=b"", headers=(), call_id=None,
                from_tag=None):
        self.cseq += 1
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{self.call_id}"
                 f"{self.cseq}{method}",
                 "Max-Forwards: 70",
                 f"From: <sip:{self.user}@127.0.0.1:{self.port}>;tag={from_tag or self.tag}",
                 f"To: <{uri}>" + (f";tag={to_tag}" if to_tag else ""),
                 f"Call-ID: {call_id or self.call_id}",
                 f"CSeq: {self.cseq if method != 'ACK' else self.cseq - 1} {method}",
                 f"Contact: <sip:{self.user}@127.0.0.1:{self.port}>"]
        lines += [f"{k}: {v}" for k, v in headers]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def make_rig(capacity=4, notify_interval=0.2, config_text=None):
    """``config_text``: a config file's text (e.g. ``[room:NAME]`` sections)."""
    clock = Clock()
    wire = Wire()
    path = None
    if config_text:
        fd, path = tempfile.mkstemp(suffix=".conf")
        with os.fdopen(fd, "w") as f:
            f.write(config_text)
    try:
        config = Config(path, overrides={("focus", "capacity"): str(capacity),
                                         ("events", "notify_interval"): str(notify_interval),
                                         ("events", "min_expires"): "1"})
    finally:
        if path:
            os.unlink(path)
    focus = ConferenceFocus(config, Pool(capacity), clock)

    def send(message, peer):
        (wire.send_response if isinstance(message, Response) else wire.send)(message, peer)
    transactions = TransactionLayer(clock, send, focus, timers=Timers())
    service = type("Service", (), {"reactor": clock, "transport": wire,
                                   "transactions": transactions,
                                   "budgets": request_budgets(config, clock.seconds)})()
    focus.attach(service)

    def deliver(message, peer):
        message.validate()
        if isinstance(message, Request):
            stamp_received(message, peer)
        transactions.receive(message, peer)
    return type("Rig", (), {"clock": clock, "wire": wire, "focus": focus,
                            "deliver": staticmethod(deliver)})()


ROOM = "sip:room@127.0.0.1:5060"


def join(rig, phone, ack=True):
    rig.deliver(phone.request("INVITE", ROOM, body=SDP), phone.peer)
    ok = rig.wire.take(200)[-1]
    if ack:
        rig.deliver(phone.request("ACK", ROOM, to_tag=ok.to.tag), phone.peer)
    return ok


def answer(rig, requests, peer):
    """The phone at ``peer`` answers each of ``requests`` with 200."""
    for request in requests:
        rig.deliver(parse_datagram(make_response(request, 200).to_bytes()), peer)
    return requests


