"""NAT at the SIP level ([nat] flows, focus/ua.py ``UserAgent.flow``): the
focus's requests in a member's call or subscription go to the flow the
member's requests came from when its Contact names another host (a private
address behind a NAT), on the rig (tests/focusrig.py)."""

from twisted_mfocus.sip.message import parse_datagram

from .focusrig import SDP, Phone, ROOM, make_rig

PRIVATE = "10.99.99.99"


def _natted(phone, method, uri, **kw):
    """``phone``'s request as a phone behind a NAT writes it: its Via and
    Contact name its private address; it arrives from 127.0.0.1."""
    raw = phone.request(method, uri, **kw).to_bytes()
    raw = raw.replace(f"Via: SIP/2.0/UDP 127.0.0.1:{phone.port}".encode(),
                      f"Via: SIP/2.0/UDP {PRIVATE}:5060;rport".encode())
    raw = raw.replace(f"Contact: <sip:{phone.user}@127.0.0.1:{phone.port}>".encode(),
                      f"Contact: <sip:{phone.user}@{PRIVATE}:5060>".encode())
    return parse_datagram(raw)


def _sent_to(rig, method):
    out = [(m, p) for m, p in rig.wire.sent if getattr(m, "method", None) == method]
    rig.wire.take(method)
    return [(p.host, p.port) for _, p in out]


def _join(rig, phone):
    rig.deliver(_natted(phone, "INVITE", ROOM, body=SDP), phone.peer)
    ok = rig.wire.take(200)[-1]
    rig.deliver(_natted(phone, "ACK", ROOM, to_tag=ok.to.tag), phone.peer)
    return ok


def test_our_requests_in_a_natted_call_go_to_its_flow():
    rig = make_rig(config_text="[media]\nrtp_timeout = 0\n")
    phone = Phone(5501)
    ok = _join(rig, phone)
    leg = rig.focus.rooms.get("room").legs[0]
    leg.retarget(leg.room.contact())            # a re-INVITE of ours
    assert set(_sent_to(rig, "INVITE")) == {("127.0.0.1", 5501)}
    rig.focus.shutdown()                        # and the BYE at shutdown
    assert set(_sent_to(rig, "BYE")) == {("127.0.0.1", 5501)}
    assert ok.status == 200


def test_never_sends_to_the_contact():
    rig = make_rig(config_text="[nat]\nflows = never\n[media]\nrtp_timeout = 0\n")
    _join(rig, Phone(5502))
    rig.focus.shutdown()
    assert set(_sent_to(rig, "BYE")) == {(PRIVATE, 5060)}


def test_a_natted_subscriber_gets_its_notifys_on_its_flow():
    """Not a reflection (403): the NOTIFYs go back where the SUBSCRIBE
    came from, not to the private Contact."""
    rig = make_rig(config_text="[room:room]\n")
    watcher = Phone(5503)
    rig.deliver(_natted(watcher, "SUBSCRIBE", ROOM, headers=[("Event", "conference")]),
                watcher.peer)
    assert rig.wire.take(200)
    assert _sent_to(rig, "NOTIFY") == [("127.0.0.1", 5503)]


def test_the_same_host_on_another_port_is_no_nat():
    """A Contact on the source's host but another port is a listening
    port of its own (no NAT rewrites a port and keeps the address): the
    call's requests go there, as RFC 3261 says."""
    rig = make_rig(config_text="[media]\nrtp_timeout = 0\n")
    phone = Phone(5504)
    raw = phone.request("INVITE", ROOM, body=SDP).to_bytes().replace(
        b"Contact: <sip:phone5504@127.0.0.1:5504>", b"Contact: <sip:phone5504@127.0.0.1:5999>")
    rig.deliver(parse_datagram(raw), phone.peer)
    ok = rig.wire.take(200)[-1]
    rig.deliver(phone.request("ACK", ROOM, to_tag=ok.to.tag), phone.peer)
    rig.focus.shutdown()
    assert set(_sent_to(rig, "BYE")) == {("127.0.0.1", 5999)}
