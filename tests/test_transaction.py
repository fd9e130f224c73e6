"""The SIP transaction layer (RFC 3261 §17, RFC 6026), sans-IO.

Everything runs on a ``task.Clock``; ``send`` is a recorder.  Default
timers: T1 = 0.5, T2 = 4, T4 = 5, so 64*T1 = 32 s and every retransmission
instant is a multiple of 0.5 s (the clock is pumped in 0.5 s steps).
"""

import pytest
from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted_mfocus.sip.address import Peer
from twisted_mfocus.sip.interfaces import ITransactionUser
from twisted_mfocus.sip.message import Request, Response, make_response, parse_datagram
from twisted_mfocus.sip.transaction import (
    ACCEPTED, CALLING, COMPLETED, CONFIRMED, PROCEEDING, TERMINATED, TRYING, WAITING,
    Timers, TransactionLayer, TransactionLimit, TransactionStateError,
    TransactionTimeout, TransportError)

UDP = Peer("UDP", "192.0.2.1", 5060)
TCP = Peer("TCP", "192.0.2.1", 5060)
FOCUS = Peer("UDP", "192.0.2.99", 5060)


# -- fakes -----------------------------------------------------------------------

class Wire:
    """``send``: records (time, message, peer); raises while ``fail`` is set."""

    def __init__(self, clock):
        self.clock = clock
        self.sent = []
        self.fail = False

    def __call__(self, message, peer):
        if self.fail:
            raise TransportError("network unreachable")
        # Everything the layer sends must serialize and parse back.
        parse_datagram(message.to_bytes()).validate()
        self.sent.append((self.clock.seconds(), message, peer))

    def times(self, what=None):
        return [t for t, m, _ in self.sent if what is None or _is(m, what)]

    def messages(self, what=None):
        return [m for _, m, _ in self.sent if what is None or _is(m, what)]


def _is(message, what):
    if isinstance(what, int):
        return isinstance(message, Response) and message.status == what
    return isinstance(message, Request) and message.method == what


@implementer(ITransactionUser)
class TU:
    """The transaction user: records every call; ``answer`` decides what to
    do with a new request (nothing by default)."""

    def __init__(self):
        self.requests, self.cancels, self.acks = [], [], []
        self.strays, self.errors = [], []
        self.answer = None

    def request_received(self, txn, request, source):
        self.requests.append((txn, request, source))
        if self.answer is not None:
            self.answer(txn, request)

    def cancel_received(self, txn, cancel, source, invite_txn):
        self.cancels.append((txn, cancel, source, invite_txn))

    def ack_received(self, ack, source):
        self.acks.append((ack, source))

    def stray_response(self, response, source):
        self.strays.append((response, source))

    def transaction_error(self, txn, reason):
        self.errors.append((txn, reason))

    def exempt(self, request, source):
        return False

    def attach(self, service):
        pass

    def shutdown(self):
        return None


class Client:
    """on_response / on_error recorder for a client transaction."""

    def __init__(self):
        self.responses, self.errors = [], []

    def on_response(self, response):
        self.responses.append(response)

    def on_error(self, reason):
        self.errors.append(reason)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def wire(clock):
    return Wire(clock)


@pytest.fixture
def tu():
    return TU()


@pytest.fixture
def layer(clock, wire, tu):
    return TransactionLayer(clock, wire, tu)


def pump(clock, seconds):
    steps = int(seconds / 0.5)
    clock.pump([0.5] * steps)


# -- messages ----------------------------------------------------------------------

def request(method="INVITE", branch="z9hG4bK-abc1", transport="UDP", host="192.0.2.1",
            cseq=1, cseq_method=None, to_tag=None, call_id="call-1@192.0.2.1",
            uri="sip:conf@focus.example.com", extra=""):
    to = "<sip:conf@focus.example.com>" + (f";tag={to_tag}" if to_tag else "")
    branch_param = f";branch={branch}" if branch else ""
    text = (f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {host}:5060{branch_param}\r\n"
            "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-lower\r\n"
            "Max-Forwards: 70\r\n"
            "Route: <sip:p1.example.com;lr>\r\n"
            "Route: <sip:p2.example.com;lr>\r\n"
            "From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} {cseq_method or method}\r\n"
            "Contact: <sip:alice@192.0.2.1>\r\n"
            f"{extra}"
            "Content-Length: 0\r\n\r\n")
    msg = parse_datagram(text.encode())
    msg.validate()
    return msg


def response_to(req, status, to_tag="b2"):
    """A response as the peer would send it, through bytes."""
    msg = parse_datagram(make_response(req, status, to_tag=to_tag).to_bytes())
    msg.validate()
    return msg


def ack_for(invite, to_tag="b2", branch=None):
    """The ACK the peer sends for our final response: same branch for a
    non-2xx (§17.1.1.3), a new one for a 2xx (§13.2.2.4)."""
    return request("ACK", branch=branch or invite.top_via.branch, to_tag=to_tag,
                   call_id=invite.call_id, uri=invite.uri_text)


def load(shared_dir, name):
    msg = parse_datagram((shared_dir / "sip-torture" / "rfc4475" / name).read_bytes())
    msg.validate()
    return msg


def test_stand_in_tu_provides_the_interface(tu):
    assert verifyObject(ITransactionUser, tu)


# -- Timers ---------------------------------------------------------------------------

def test_timer_values():
    t = Timers()
    assert (t.T1, t.T2, t.T4) == (0.5, 4.0, 5.0)
    assert (t.A, t.B, t.D, t.E, t.F, t.G, t.H, t.I, t.J, t.K, t.L, t.M) == \
           (0.5, 32, 32.0, 0.5, 32, 0.5, 32, 5.0, 32, 5.0, 32, 32)
    assert [t.value(n, True) for n in "AEG"] == [None, None, None]
    assert [t.value(n, True) for n in "DIJK"] == [0, 0, 0, 0]
    assert [t.value(n, True) for n in "BFHLM"] == [32] * 5
    fast = Timers(T1=0.1, T2=1.0, T4=2.0)
    assert (fast.B, fast.E, fast.K) == (pytest.approx(6.4), 0.1, 2.0)


# -- INVITE client (figure 5, RFC 6026) ------------------------------------------------

UDP_INVITE_TIMES = [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]


def test_invite_client_timer_A_doubles_then_B_times_out(clock, wire, layer):
    c = Client()
    txn = layer.send_request(request(), UDP, c.on_response, c.on_error)
    assert txn.state == CALLING and layer.count == 1
    pump(clock, 31.5)
    assert wire.times("INVITE") == UDP_INVITE_TIMES     # Timer A: T1, 2T1, 4T1 ...
    assert all(p == UDP for _, _, p in wire.sent)
    assert all(m is txn.request for m in wire.messages())
    assert c.errors == []
    pump(clock, 0.5)                                    # Timer B = 64*T1
    assert len(c.errors) == 1 and isinstance(c.errors[0], TransactionTimeout)
    assert txn.state == TERMINATED and layer.count == 0
    assert clock.getDelayedCalls() == []
    pump(clock, 100)
    assert len(wire.sent) == 7 and len(c.errors) == 1


def test_invite_client_over_tcp_never_retransmits(clock, wire, layer):
    c = Client()
    layer.send_request(request(transport="TCP"), TCP, c.on_response, c.on_error)
    pump(clock, 31.5)
    assert wire.times() == [0]
    pump(clock, 0.5)
    assert isinstance(c.errors[0], TransactionTimeout) and layer.count == 0


def test_invite_client_timeout_without_on_error_synthesises_408(clock, layer):
    c = Client()
    layer.send_request(request(), UDP, c.on_response)
    pump(clock, 32)
    assert [r.status for r in c.responses] == [408]


def test_provisional_stops_A_and_B(clock, wire, layer, tu):
    c = Client()
    inv = request()
    txn = layer.send_request(inv, UDP, c.on_response, c.on_error)
    pump(clock, 1)
    layer.receive(response_to(inv, 180), FOCUS)
    assert txn.state == PROCEEDING
    assert [r.status for r in c.responses] == [180]
    pump(clock, 100)
    assert wire.times() == [0, 0.5]             # no retransmission after the 1xx
    assert c.errors == [] and txn.state == PROCEEDING    # §17.1.1.2: B only in Calling
    layer.receive(response_to(inv, 200), FOCUS)
    assert txn.state == ACCEPTED


def test_invite_client_non_2xx_generates_ack_and_timer_D(clock, wire, layer, tu):
    c = Client()
    inv = request()
    txn = layer.send_request(inv, UDP, c.on_response, c.on_error)
    layer.receive(response_to(inv, 180), FOCUS)
    busy = response_to(inv, 486, to_tag="uas-tag")
    layer.receive(busy, FOCUS)
    assert txn.state == COMPLETED
    assert [r.status for r in c.responses] == [180, 486]
    acks = wire.messages("ACK")
    assert len(acks) == 1
    ack = acks[0]
    # §17.1.1.3: same Request-URI, Call-ID, From, CSeq number; top Via only;
    # To from the response; the Route set of the INVITE; sent where it went.
    assert ack.uri_text == inv.uri_text
    assert ack.call_id == inv.call_id
    assert ack.headers.get("from") == inv.headers.get("from")
    assert (ack.cseq.seq, ack.cseq.method) == (1, "ACK")
    assert len(ack.vias) == 1 and ack.top_via == inv.top_via
    assert ack.to.tag == "uas-tag"
    assert ack.headers.lines("route") == inv.headers.lines("route")
    assert ack.body == b""
    assert wire.sent[-1][2] == UDP
    # A retransmitted 486 is ACKed again and absorbed.
    pump(clock, 10)
    layer.receive(response_to(inv, 486, to_tag="uas-tag"), FOCUS)
    assert len(wire.messages("ACK")) == 2 and len(c.responses) == 2
    assert wire.messages("ACK")[1] is ack
    assert wire.times("INVITE") == [0]          # Timer A stopped by the 1xx
    pump(clock, 21.5)
    assert txn.state == COMPLETED               # Timer D = 32 s from the 486
    pump(clock, 0.5)
    assert txn.state == TERMINATED and layer.count == 0
    layer.receive(response_to(inv, 486, to_tag="uas-tag"), FOCUS)
    assert len(tu.strays) == 1 and len(wire.messages("ACK")) == 2


def test_invite_client_non_2xx_in_calling_stops_A(clock, wire, layer):
    c = Client()
    inv = request()
    layer.send_request(inv, UDP, c.on_response, c.on_error)
    pump(clock, 0.5)
    layer.receive(response_to(inv, 603), FOCUS)
    pump(clock, 40)
    assert wire.times("INVITE") == [0, 0.5]
    assert wire.times("ACK") == [0.5]
    assert layer.count == 0 and c.errors == []


def test_invite_client_timer_D_is_zero_over_tcp(clock, wire, layer):
    c = Client()
    inv = request(transport="TCP")
    txn = layer.send_request(inv, TCP, c.on_response, c.on_error)
    layer.receive(response_to(inv, 404), TCP)
    assert len(wire.messages("ACK")) == 1
    assert txn.state == TERMINATED and layer.count == 0
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("peer", [UDP, TCP])
def test_invite_client_2xx_accepted_and_timer_M(clock, wire, layer, tu, peer):
    c = Client()
    inv = request(transport=peer.transport)
    txn = layer.send_request(inv, peer, c.on_response, c.on_error)
    layer.receive(response_to(inv, 200), FOCUS)
    assert txn.state == ACCEPTED
    assert wire.messages("ACK") == []           # the 2xx ACK is the TU's (§13.2.2.4)
    pump(clock, 10)
    # RFC 6026: 2xx retransmissions and forked 2xx pass up in Accepted.
    layer.receive(response_to(inv, 200), FOCUS)
    layer.receive(response_to(inv, 200, to_tag="fork2"), FOCUS)
    layer.receive(response_to(inv, 180), FOCUS)           # dropped in Accepted
    assert [r.status for r in c.responses] == [200, 200, 200]
    assert wire.times("INVITE") == [0]
    pump(clock, 21.5)
    assert txn.state == ACCEPTED
    pump(clock, 0.5)                                      # Timer M = 64*T1
    assert txn.state == TERMINATED and layer.count == 0
    layer.receive(response_to(inv, 200), FOCUS)
    assert len(c.responses) == 3 and len(tu.strays) == 1


def test_response_matching_uses_branch_and_cseq_method(clock, layer, tu):
    c = Client()
    inv = request()
    layer.send_request(inv, UDP, c.on_response, c.on_error)
    other = request(branch="z9hG4bK-other")
    layer.receive(response_to(other, 180), FOCUS)                 # other branch
    layer.receive(response_to(request(method="BYE"), 200), FOCUS)  # same branch, other method
    assert c.responses == [] and len(tu.strays) == 2
    layer.receive(response_to(inv, 180), FOCUS)
    assert len(c.responses) == 1


def test_send_request_adds_a_branch_when_missing(layer, wire):
    req = request(method="OPTIONS", branch=None)
    layer.send_request(req, UDP, Client().on_response)
    branch = wire.messages()[0].top_via.branch
    assert branch.startswith("z9hG4bK") and len(branch) > 7
    assert len(wire.messages()[0].vias) == 2


def test_send_request_refuses_ack_and_reused_branch(layer):
    with pytest.raises(ValueError):
        layer.send_request(request("ACK"), UDP, Client().on_response)
    layer.send_request(request("OPTIONS"), UDP, Client().on_response)
    with pytest.raises(ValueError):
        layer.send_request(request("OPTIONS"), UDP, Client().on_response)


# -- non-INVITE client (figure 6) --------------------------------------------------------

UDP_NON_INVITE_TIMES = [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]


def test_non_invite_client_timer_E_capped_at_T2_then_F(clock, wire, layer):
    c = Client()
    txn = layer.send_request(request("OPTIONS"), UDP, c.on_response, c.on_error)
    assert txn.state == TRYING
    pump(clock, 31.5)
    assert wire.times("OPTIONS") == UDP_NON_INVITE_TIMES
    assert c.errors == []
    pump(clock, 0.5)                                            # Timer F
    assert isinstance(c.errors[0], TransactionTimeout)
    assert txn.state == TERMINATED and layer.count == 0
    pump(clock, 50)
    assert len(wire.sent) == 11


def test_non_invite_client_after_provisional_retransmits_every_T2(clock, wire, layer):
    c = Client()
    req = request("BYE", to_tag="b2")
    txn = layer.send_request(req, UDP, c.on_response, c.on_error)
    pump(clock, 1)                           # sent at 0 and 0.5; E due at 1.5
    layer.receive(response_to(req, 100), FOCUS)
    assert txn.state == PROCEEDING
    pump(clock, 30.5)
    # §17.1.2.2: the pending E fires, then every T2.
    assert wire.times("BYE") == [0, 0.5, 1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    pump(clock, 0.5)
    assert isinstance(c.errors[0], TransactionTimeout) and layer.count == 0


def test_non_invite_client_final_then_timer_K(clock, wire, layer, tu):
    c = Client()
    req = request("OPTIONS")
    txn = layer.send_request(req, UDP, c.on_response, c.on_error)
    layer.receive(response_to(req, 200), FOCUS)
    assert txn.state == COMPLETED and [r.status for r in c.responses] == [200]
    pump(clock, 4.5)
    layer.receive(response_to(req, 200), FOCUS)          # absorbed
    assert len(c.responses) == 1 and tu.strays == []
    assert wire.times() == [0]                           # E stopped
    pump(clock, 0.5)                                     # Timer K = T4
    assert txn.state == TERMINATED and layer.count == 0
    assert clock.getDelayedCalls() == []


def test_non_invite_client_over_tcp(clock, wire, layer):
    c = Client()
    req = request("OPTIONS", transport="TCP")
    txn = layer.send_request(req, TCP, c.on_response, c.on_error)
    pump(clock, 31.5)
    assert wire.times() == [0]                           # no Timer E
    layer.receive(response_to(req, 404), TCP)
    assert txn.state == TERMINATED and layer.count == 0  # K = 0
    assert [r.status for r in c.responses] == [404]
    assert clock.getDelayedCalls() == []


# -- CANCEL as a client (§9.1) ------------------------------------------------------------

def test_cancel_waits_for_a_provisional(clock, wire, layer):
    c, cc = Client(), Client()
    inv = request()
    txn = layer.send_request(inv, UDP, c.on_response, c.on_error)
    cancel_txn = txn.cancel(cc.on_response, cc.on_error)
    assert cancel_txn.state == WAITING and wire.messages("CANCEL") == []
    assert txn.cancel() is cancel_txn
    assert layer.count == 1
    pump(clock, 1)
    layer.receive(response_to(inv, 180), FOCUS)
    cancels = wire.messages("CANCEL")
    assert len(cancels) == 1 and cancel_txn.state == TRYING and layer.count == 2
    cancel = cancels[0]
    # §9.1: same Request-URI, Call-ID, To, From, CSeq number; one Via, same
    # branch; the Route set; same destination.
    assert cancel.uri_text == inv.uri_text
    assert (cancel.cseq.seq, cancel.cseq.method) == (1, "CANCEL")
    assert cancel.headers.get("to") == inv.headers.get("to")
    assert cancel.headers.get("from") == inv.headers.get("from")
    assert cancel.call_id == inv.call_id
    assert len(cancel.vias) == 1 and cancel.top_via == inv.top_via
    assert cancel.headers.lines("route") == inv.headers.lines("route")
    assert wire.sent[-1][2] == UDP
    # The CANCEL's own transaction retransmits (Timer E) and completes.
    pump(clock, 0.5)
    assert wire.times("CANCEL") == [1, 1.5]
    layer.receive(response_to(cancel, 200), FOCUS)
    assert [r.status for r in cc.responses] == [200]
    layer.receive(response_to(inv, 487), FOCUS)
    assert [r.status for r in c.responses] == [180, 487]
    assert len(wire.messages("ACK")) == 1
    pump(clock, 40)
    assert layer.count == 0


def test_cancel_in_proceeding_is_sent_at_once(layer, wire):
    inv = request()
    txn = layer.send_request(inv, UDP, Client().on_response)
    layer.receive(response_to(inv, 100), FOCUS)
    cancel_txn = txn.cancel()
    assert cancel_txn.state == TRYING and len(wire.messages("CANCEL")) == 1


def test_cancel_dropped_when_a_final_comes_first(clock, wire, layer):
    inv = request()
    txn = layer.send_request(inv, UDP, Client().on_response)
    cancel_txn = txn.cancel()
    layer.receive(response_to(inv, 200), FOCUS)
    assert cancel_txn.state == TERMINATED
    assert wire.messages("CANCEL") == []
    assert txn.cancel() is cancel_txn
    other = layer.send_request(request(branch="z9hG4bK-2"), UDP, Client().on_response)
    layer.receive(response_to(other.request, 486), FOCUS)
    assert other.cancel() is None                    # too late (§9.1)
    pump(clock, 40)
    assert layer.count == 0 and wire.messages("CANCEL") == []


def test_cancel_dropped_on_timeout(clock, wire, layer):
    c = Client()
    txn = layer.send_request(request(), UDP, c.on_response, c.on_error)
    cancel_txn = txn.cancel()
    pump(clock, 32)
    assert cancel_txn.state == TERMINATED and wire.messages("CANCEL") == []
    assert layer.count == 0


def test_cancel_of_non_invite_is_refused(layer):
    txn = layer.send_request(request("OPTIONS"), UDP, Client().on_response)
    with pytest.raises(TransactionStateError):
        txn.cancel()


# -- INVITE server (figure 7, RFC 6026) ----------------------------------------------------

def test_invite_server_sends_100_when_tu_is_silent(layer, wire, tu):
    inv = request()
    layer.receive(inv, UDP)
    [(txn, req, source)] = tu.requests
    assert req is inv and source == UDP and txn.request is inv and txn.source == UDP
    assert txn.state == PROCEEDING
    [trying] = wire.messages()
    assert trying.status == 100 and trying.to.tag is None    # §17.2.1
    assert wire.sent[0][2] == UDP
    # A retransmitted INVITE gets the last provisional again, not the TU.
    layer.receive(request(), UDP)
    assert len(tu.requests) == 1
    assert wire.messages() == [trying, trying]
    txn.respond(make_response(inv, 180, to_tag="t1"))
    layer.receive(request(), UDP)
    assert [m.status for m in wire.messages()] == [100, 100, 180, 180]


def test_invite_server_no_100_when_tu_answers_at_once(layer, wire, tu):
    tu.answer = lambda txn, req: txn.respond(make_response(req, 180, to_tag="t1"))
    layer.receive(request(), UDP)
    assert [m.status for m in wire.messages()] == [180]


def test_invite_server_timer_G_then_H(clock, wire, layer, tu):
    tu.answer = lambda txn, req: txn.respond(make_response(req, 486, to_tag="t1"))
    layer.receive(request(), UDP)
    txn = tu.requests[0][0]
    assert txn.state == COMPLETED
    pump(clock, 31.5)
    # Timer G: T1, 2T1, ... capped at T2 (§17.2.1).
    assert wire.times(486) == UDP_NON_INVITE_TIMES
    assert tu.errors == []
    pump(clock, 0.5)                                  # Timer H: no ACK came
    assert txn.state == TERMINATED and layer.count == 0
    [(failed, reason)] = tu.errors
    assert failed is txn and isinstance(reason, TransactionTimeout)
    assert clock.getDelayedCalls() == []


def test_invite_server_ack_confirms_then_timer_I(clock, wire, layer, tu):
    tu.answer = lambda txn, req: txn.respond(make_response(req, 404, to_tag="t1"))
    inv = request()
    layer.receive(inv, UDP)
    txn = tu.requests[0][0]
    pump(clock, 1)
    layer.receive(request(), UDP)                     # retransmission: final again
    assert wire.times(404) == [0, 0.5, 1]
    layer.receive(ack_for(inv, to_tag="t1"), UDP)
    assert txn.state == CONFIRMED and tu.acks == []   # absorbed (§17.2.1)
    pump(clock, 1)
    assert wire.times(404) == [0, 0.5, 1]             # Timer G stopped
    layer.receive(ack_for(inv, to_tag="t1"), UDP)     # ACK retransmission absorbed
    layer.receive(request(), UDP)                     # late INVITE absorbed
    assert tu.acks == [] and len(tu.requests) == 1 and len(wire.sent) == 3
    pump(clock, 3.5)
    assert txn.state == CONFIRMED
    pump(clock, 0.5)                                  # Timer I = T4
    assert txn.state == TERMINATED and layer.count == 0 and tu.errors == []


def test_invite_server_over_tcp(clock, wire, layer, tu):
    tu.answer = lambda txn, req: txn.respond(make_response(req, 486, to_tag="t1"))
    inv = request(transport="TCP")
    layer.receive(inv, TCP)
    txn = tu.requests[0][0]
    pump(clock, 31.5)
    assert wire.times() == [0]                        # no Timer G
    pump(clock, 0.5)
    assert txn.state == TERMINATED and len(tu.errors) == 1    # Timer H still runs
    # With the ACK: Timer I is zero.
    layer.receive(request(transport="TCP", branch="z9hG4bK-2"), TCP)
    txn2 = tu.requests[1][0]
    layer.receive(ack_for(request(transport="TCP", branch="z9hG4bK-2"), to_tag="t1"), TCP)
    assert txn2.state == TERMINATED and layer.count == 0
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("peer", [UDP, TCP])
def test_invite_server_2xx_accepted_and_timer_L(clock, wire, layer, tu, peer):
    inv = request(transport=peer.transport)
    layer.receive(inv, peer)
    txn = tu.requests[0][0]
    ok = make_response(inv, 200, to_tag="t1")
    txn.respond(ok)
    assert txn.state == ACCEPTED
    pump(clock, 0.5)
    # RFC 6026: INVITE retransmissions are absorbed, the TU retransmits its 2xx.
    layer.receive(request(transport=peer.transport), peer)
    assert len(tu.requests) == 1 and [m.status for m in wire.messages()] == [100, 200]
    txn.respond(ok)
    assert [m.status for m in wire.messages()] == [100, 200, 200]
    # The 2xx ACK has its own branch: end to end, to the TU (§17.2.3).
    ack = ack_for(inv, to_tag="t1", branch="z9hG4bK-ack")
    layer.receive(ack, peer)
    assert tu.acks == [(ack, peer)]
    # An ACK that does match the transaction is passed up too (RFC 6026).
    same = ack_for(inv, to_tag="t1")
    layer.receive(same, peer)
    assert tu.acks[-1] == (same, peer)
    with pytest.raises(TransactionStateError):
        txn.respond(make_response(inv, 486, to_tag="t1"))
    with pytest.raises(TransactionStateError):
        txn.respond(make_response(inv, 180, to_tag="t1"))
    pump(clock, 31)
    assert txn.state == ACCEPTED
    pump(clock, 0.5)                                  # Timer L = 64*T1
    assert txn.state == TERMINATED and layer.count == 0
    assert wire.times(200) == [0, 0.5]                # never retransmitted by us
    with pytest.raises(TransactionStateError):
        txn.respond(ok)


def test_invite_server_respond_after_final_is_an_error(layer, tu):
    inv = request()
    layer.receive(inv, UDP)
    txn = tu.requests[0][0]
    txn.respond(make_response(inv, 486, to_tag="t1"))
    with pytest.raises(TransactionStateError, match="Completed"):
        txn.respond(make_response(inv, 200, to_tag="t1"))


def test_tu_exception_answers_500(layer, wire, tu):
    def boom(txn, req):
        raise RuntimeError("bug")
    tu.answer = boom
    with pytest.raises(RuntimeError):
        layer.receive(request("OPTIONS"), UDP)
    assert [m.status for m in wire.messages()] == [500]
    assert tu.requests[0][0].state == COMPLETED


# -- non-INVITE server (figure 8) ------------------------------------------------------------

def test_non_invite_server_trying_proceeding_completed_timer_J(clock, wire, layer, tu):
    req = request("OPTIONS")
    layer.receive(req, UDP)
    txn = tu.requests[0][0]
    assert txn.state == TRYING and wire.sent == []        # no automatic 100
    layer.receive(request("OPTIONS"), UDP)                # absorbed in Trying
    assert wire.sent == [] and len(tu.requests) == 1
    txn.respond(make_response(req, 100))
    assert txn.state == PROCEEDING
    layer.receive(request("OPTIONS"), UDP)                # last provisional again
    assert [m.status for m in wire.messages()] == [100, 100]
    ok = make_response(req, 200, to_tag="t1")
    txn.respond(ok)
    assert txn.state == COMPLETED
    pump(clock, 10)
    layer.receive(request("OPTIONS"), UDP)                # final again
    assert wire.messages()[2:] == [ok, ok]
    assert len(tu.requests) == 1
    with pytest.raises(TransactionStateError):
        txn.respond(make_response(req, 500, to_tag="t1"))
    pump(clock, 21.5)
    assert txn.state == COMPLETED
    pump(clock, 0.5)                                      # Timer J = 64*T1
    assert txn.state == TERMINATED and layer.count == 0
    assert len(wire.sent) == 4                            # nothing retransmitted by timers
    layer.receive(request("OPTIONS"), UDP)                # now a new transaction
    assert len(tu.requests) == 2


def test_non_invite_server_timer_J_is_zero_over_tcp(layer, tu, clock):
    req = request("OPTIONS", transport="TCP")
    layer.receive(req, TCP)
    txn = tu.requests[0][0]
    txn.respond(make_response(req, 200, to_tag="t1"))
    assert txn.state == TERMINATED and layer.count == 0
    assert clock.getDelayedCalls() == []


# -- request matching (§17.2.3) ----------------------------------------------------------------

def test_matching_needs_branch_sent_by_and_method(layer, tu):
    layer.receive(request("OPTIONS"), UDP)
    layer.receive(request("OPTIONS"), Peer("UDP", "203.0.113.5", 5060))   # same Via: same txn
    assert len(tu.requests) == 1
    layer.receive(request("OPTIONS", host="192.0.2.2"), UDP)       # other sent-by
    layer.receive(request("INFO", branch="z9hG4bK-abc1"), UDP)     # other method
    layer.receive(request("OPTIONS", branch="z9hG4bK-abc2"), UDP)  # other branch
    assert len(tu.requests) == 4 and layer.count == 4


def test_cancel_matches_its_own_transaction_and_the_invite(layer, wire, tu):
    inv = request()
    layer.receive(inv, UDP)
    invite_txn = tu.requests[0][0]
    cancel = request("CANCEL")
    layer.receive(cancel, UDP)
    [(txn, got, source, target)] = tu.cancels
    assert got is cancel and source == UDP and target is invite_txn
    assert txn is not invite_txn and txn.request is cancel and txn.state == TRYING
    # The TU answers the CANCEL itself, and the INVITE with 487 (§9.2).
    txn.respond(make_response(cancel, 200, to_tag="t1"))
    invite_txn.respond(make_response(inv, 487, to_tag="t1"))
    layer.receive(request("CANCEL"), UDP)                 # retransmission
    assert len(tu.cancels) == 1
    assert [m.status for m in wire.messages()] == [100, 200, 487, 200]
    # A CANCEL that matches nothing is still handed to the TU (→ 481).
    layer.receive(request("CANCEL", branch="z9hG4bK-nothing"), UDP)
    assert tu.cancels[-1][3] is None
    assert tu.requests == [(invite_txn, inv, UDP)]


def test_unmatched_ack_goes_to_the_tu(layer, tu):
    ack = request("ACK", to_tag="t1")
    layer.receive(ack, UDP)
    assert tu.acks == [(ack, UDP)] and layer.count == 0


def test_rfc2543_invite_retransmission_ack_and_cancel(shared_dir, clock, layer, wire, tu):
    inv = load(shared_dir, "inv2543.dat")        # no branch at all
    assert inv.top_via.branch is None
    layer.receive(inv, UDP)
    layer.receive(load(shared_dir, "inv2543.dat"), UDP)
    assert len(tu.requests) == 1
    assert [m.status for m in wire.messages()] == [100, 100]
    txn = tu.requests[0][0]
    # CANCEL: same Request-URI, tags, Call-ID, CSeq number and Via.
    raw = (shared_dir / "sip-torture" / "rfc4475" / "inv2543.dat").read_bytes()
    head = raw.split(b"\r\n\r\n")[0].replace(b"INVITE sip:", b"CANCEL sip:")
    cancel = parse_datagram(head.replace(b"56 INVITE", b"56 CANCEL") + b"\r\n\r\n")
    layer.receive(cancel, UDP)
    assert tu.cancels[0][3] is txn
    txn.respond(make_response(inv, 487, to_tag="uas"))
    # The ACK carries the To tag of our response, and matches under it.
    ack_head = head.replace(b"CANCEL sip:", b"ACK sip:").replace(b"56 INVITE", b"56 ACK")
    ack_head = ack_head.replace(b"user=phone\r\nCall-ID", b"user=phone;tag=uas\r\nCall-ID")
    layer.receive(parse_datagram(ack_head + b"\r\n\r\n"), UDP)
    assert txn.state == CONFIRMED and tu.acks == []
    other = parse_datagram(ack_head.replace(b"tag=uas", b"tag=other") + b"\r\n\r\n")
    layer.receive(other, UDP)
    assert tu.acks == [(other, UDP)]
    pump(clock, 5)
    assert txn.state == TERMINATED


def test_bare_magic_cookie_is_an_rfc2543_branch(shared_dir, layer, tu):
    """RFC 4475 §3.2.1: branch=z9hG4bK alone must not be used as a key."""
    first = load(shared_dir, "badbranch.dat")
    assert first.top_via.branch == "z9hG4bK"
    layer.receive(first, UDP)
    layer.receive(load(shared_dir, "badbranch.dat"), UDP)       # retransmission
    assert len(tu.requests) == 1
    raw = (shared_dir / "sip-torture" / "rfc4475" / "badbranch.dat").read_bytes()
    other = parse_datagram(raw.replace(b"CSeq: 8", b"CSeq: 9"))
    layer.receive(other, UDP)                                   # same branch, new request
    assert len(tu.requests) == 2 and layer.count == 2


# -- transport errors (§17.1.4, §17.2.4) --------------------------------------------------------

def test_client_transport_error_on_first_send(layer, wire):
    wire.fail = True
    c = Client()
    txn = layer.send_request(request("OPTIONS"), UDP, c.on_response, c.on_error)
    assert txn.state == TERMINATED and layer.count == 0
    assert len(c.errors) == 1 and isinstance(c.errors[0], TransportError)


def test_client_transport_error_without_on_error_is_503(layer, wire):
    wire.fail = True
    c = Client()
    layer.send_request(request("OPTIONS"), UDP, c.on_response)
    assert [r.status for r in c.responses] == [503]


def test_client_transport_error_on_retransmission(clock, layer, wire):
    c = Client()
    txn = layer.send_request(request(), UDP, c.on_response, c.on_error)
    pump(clock, 0.5)
    wire.fail = True
    pump(clock, 1)
    assert txn.state == TERMINATED and layer.count == 0 and len(c.errors) == 1
    assert clock.getDelayedCalls() == []


def test_client_transport_error_on_ack(layer, wire):
    c = Client()
    inv = request()
    txn = layer.send_request(inv, UDP, c.on_response, c.on_error)
    wire.fail = True
    layer.receive(response_to(inv, 486), FOCUS)
    assert txn.state == TERMINATED and len(c.errors) == 1 and layer.count == 0


def test_server_transport_error(clock, layer, wire, tu):
    req = request("OPTIONS")
    layer.receive(req, UDP)
    txn = tu.requests[0][0]
    wire.fail = True
    txn.respond(make_response(req, 200, to_tag="t1"))
    assert txn.state == TERMINATED and layer.count == 0
    [(failed, reason)] = tu.errors
    assert failed is txn and isinstance(reason, TransportError)
    assert clock.getDelayedCalls() == []


def test_server_transport_error_on_timer_G(clock, layer, wire, tu):
    tu.answer = lambda txn, req: txn.respond(make_response(req, 486, to_tag="t1"))
    layer.receive(request(), UDP)
    wire.fail = True
    pump(clock, 0.5)
    assert layer.count == 0 and len(tu.errors) == 1


def test_server_transport_error_in_accepted_keeps_absorbing(layer, wire, tu):
    inv = request()
    layer.receive(inv, UDP)
    txn = tu.requests[0][0]
    wire.fail = True
    txn.respond(make_response(inv, 200, to_tag="t1"))
    assert txn.state == ACCEPTED and len(tu.errors) == 1
    layer.receive(request(), UDP)
    assert len(tu.requests) == 1


def test_transport_error_reported_later(layer, wire, tu):
    c = Client()
    inv = request()
    txn = layer.send_request(inv, TCP, c.on_response, c.on_error)
    layer.transport_error(wire.messages()[0], TCP, "connection refused")
    assert txn.state == TERMINATED and isinstance(c.errors[0], TransportError)
    req = request("OPTIONS")
    layer.receive(req, UDP)
    server = tu.requests[0][0]
    ok = make_response(req, 200, to_tag="t1")
    server.respond(ok)
    layer.transport_error(ok, UDP, TransportError("ICMP unreachable"))
    assert server.state == TERMINATED and len(tu.errors) == 1 and layer.count == 0


def test_transport_error_reported_later_rfc2543(shared_dir, layer, wire, tu):
    inv = load(shared_dir, "inv2543.dat")
    layer.receive(inv, UDP)
    txn = tu.requests[0][0]
    layer.transport_error(wire.messages()[0], UDP)
    assert txn.state == TERMINATED and layer.count == 0


# -- bounds and cleanup --------------------------------------------------------------------------

def test_full_table_answers_503_and_refuses_clients(clock, wire, tu):
    layer = TransactionLayer(clock, wire, tu, max_transactions=2)
    layer.receive(request("OPTIONS", branch="z9hG4bK-1"), UDP)
    layer.send_request(request("OPTIONS", branch="z9hG4bK-2"), UDP, Client().on_response)
    assert layer.count == 2
    layer.receive(request("OPTIONS", branch="z9hG4bK-3"), UDP)
    assert len(tu.requests) == 1
    assert wire.messages()[-1].status == 503 and wire.sent[-1][2] == UDP
    assert wire.messages()[-1].to.tag
    layer.receive(request("ACK", branch="z9hG4bK-4", to_tag="x"), UDP)   # never answered
    assert wire.messages()[-1].status == 503 and len(tu.acks) == 1
    with pytest.raises(TransactionLimit):
        layer.send_request(request("OPTIONS", branch="z9hG4bK-5"), UDP, Client().on_response)
    # Retransmissions of live transactions are still matched.
    layer.receive(request("OPTIONS", branch="z9hG4bK-1"), UDP)
    assert len(wire.sent) == 2


def test_custom_timers(tu):
    clock = Clock()
    wire = Wire(clock)
    layer = TransactionLayer(clock, wire, tu, timers=Timers(T1=0.25, T2=1.0, T4=2.0))
    c = Client()
    layer.send_request(request("OPTIONS"), UDP, c.on_response, c.on_error)
    clock.pump([0.25] * 64)
    assert wire.times() == [0, 0.25, 0.75, 1.75, 2.75, 3.75, 4.75, 5.75, 6.75,
                            7.75, 8.75, 9.75, 10.75, 11.75, 12.75, 13.75, 14.75, 15.75]
    assert isinstance(c.errors[0], TransactionTimeout) and layer.count == 0


RESPONSES = st.sampled_from([100, 180, 200, 486])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["INVITE", "OPTIONS"]),
                          st.sampled_from([UDP, TCP]),
                          st.lists(st.tuples(RESPONSES, st.sampled_from([0, 0.5, 3])),
                                   max_size=5)),
                max_size=6))
def test_no_transaction_outlives_its_timers(scenarios):
    """Whatever responses arrive, client and server transactions that got a
    final response (or none) leave every table once their timers ran."""
    clock = Clock()
    wire, tu = Wire(clock), TU()
    layer = TransactionLayer(clock, wire, tu)
    for n, (method, peer, responses) in enumerate(scenarios):
        req = request(method, branch=f"z9hG4bK-{n}", transport=peer.transport)
        c = Client()
        client = layer.send_request(req, peer, c.on_response, c.on_error)
        layer.receive(request(method, branch=f"z9hG4bK-s{n}", transport=peer.transport), peer)
        server = tu.requests[-1][0]
        for status, wait in responses:
            pump(clock, wait)
            layer.receive(response_to(req, status), peer)
            if server.state in (TRYING, PROCEEDING) or (status == 200 and server.state == ACCEPTED):
                server.respond(make_response(server.request, status, to_tag="t"))
        if client.state == PROCEEDING and method == "INVITE":
            layer.receive(response_to(req, 486), peer)     # otherwise it waits forever (§17.1.1.2)
        if server.state in (TRYING, PROCEEDING):
            server.respond(make_response(server.request, 486, to_tag="t"))
    pump(clock, 64)
    assert layer.count == 0
    assert clock.getDelayedCalls() == []
    assert not layer._clients and not layer._servers and not layer._targets
