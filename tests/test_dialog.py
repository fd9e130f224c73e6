"""RFC 3261 §12 dialogs: route sets, routing modes, CSeq, target refresh."""

import pytest

from twisted_mfocus.sip.dialog import (Dialog, DialogError, dialog_id_of, pop_own_route,
                                       strict_route_fixup, uas_response_headers)
from twisted_mfocus.sip.message import make_response, parse_datagram
from twisted_mfocus.sip.uri import URI

INVITE = (
    "INVITE sip:conf1@focus.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-d1\r\n"
    "{rr}"
    "Max-Forwards: 70\r\n"
    "From: \"Alice\" <sip:alice@example.com>;tag=alice1\r\n"
    "To: <sip:conf1@focus.example.com>\r\n"
    "Call-ID: dlg-1@192.0.2.10\r\n"
    "CSeq: 10 INVITE\r\n"
    "Contact: <sip:alice@192.0.2.10:5060>\r\n"
    "Content-Length: 0\r\n\r\n")
RR3 = ("Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
       "Record-Route: <sip:p3.example.com;lr>\r\n")


def req(rr="", text=INVITE):
    m = parse_datagram(text.format(rr=rr).encode())
    m.validate()
    return m


def ok_response(request, rr="", contact="<sip:conf1@203.0.113.5:5070>;isfocus", status=200):
    headers = [("Contact", contact)]
    if rr:
        headers += [("Record-Route", v) for v in rr]
    r = make_response(request, status, to_tag="focus9", headers=headers)
    return parse_datagram(r.to_bytes())


def reparse(request):
    """Serialize with a Via and parse again: the output is valid SIP."""
    request.headers.add("Via", "SIP/2.0/UDP 203.0.113.5:5070;branch=z9hG4bK-x", first=True)
    m = parse_datagram(request.to_bytes())
    m.validate()
    return m


def route_uris(m):
    return [str(r.uri) for r in m.routes]


def test_uas_route_set_is_record_route_in_order():
    d = Dialog.from_uas(req(RR3), local_tag="focus9")
    assert [str(r.uri) for r in d.route_set] == [
        "sip:p1.example.com;lr", "sip:p2.example.com;lr", "sip:p3.example.com;lr"]
    assert d.id == ("dlg-1@192.0.2.10", "focus9", "alice1")
    assert d.remote_seq == 10 and d.local_seq is None
    assert str(d.remote_target) == "sip:alice@192.0.2.10:5060"


def test_uac_route_set_is_record_route_reversed():
    invite = req()
    resp = ok_response(invite, rr=["<sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
                                   "<sip:p3.example.com;lr>"])
    d = Dialog.from_uac(invite, resp)
    assert [str(r.uri) for r in d.route_set] == [
        "sip:p3.example.com;lr", "sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    assert d.id == ("dlg-1@192.0.2.10", "alice1", "focus9")
    assert d.state == "confirmed" and d.local_seq == 10


def test_early_dialog_then_confirmed_with_target_refresh():
    invite = req()
    d = Dialog.from_uac(invite, ok_response(invite, status=180,
                                            contact="<sip:early@203.0.113.5>"))
    assert d.state == "early" and str(d.remote_target) == "sip:early@203.0.113.5"
    d.confirm(ok_response(invite))
    assert d.state == "confirmed" and str(d.remote_target) == "sip:conf1@203.0.113.5:5070"


def test_loose_routing_request():
    d = Dialog.from_uas(req(RR3), local_tag="focus9")
    bye = reparse(d.create_request("BYE"))
    assert bye.uri_text == "sip:alice@192.0.2.10:5060"
    assert route_uris(bye) == ["sip:p1.example.com;lr", "sip:p2.example.com;lr",
                               "sip:p3.example.com;lr"]
    assert bye.from_.tag == "focus9" and bye.to.tag == "alice1"
    assert str(bye.from_.uri) == "sip:conf1@focus.example.com"
    assert bye.cseq.seq == 1 and bye.cseq.method == "BYE"
    assert bye.call_id == "dlg-1@192.0.2.10"


def test_strict_routing_request():
    rr = "Record-Route: <sip:strict.example.com;maddr=192.0.2.99;method=INVITE>, <sip:p2.example.com;lr>\r\n"
    d = Dialog.from_uas(req(rr), local_tag="focus9")
    bye = reparse(d.create_request("BYE"))
    # §12.2.1.1: R-URI = first route without forbidden params; the remote
    # target goes last in Route.
    assert bye.uri_text == "sip:strict.example.com;maddr=192.0.2.99"
    assert route_uris(bye) == ["sip:p2.example.com;lr", "sip:alice@192.0.2.10:5060"]


def test_cseq_increments_and_ack_reuses_the_invite_number():
    d = Dialog.from_uas(req(), local_tag="focus9")
    assert d.create_request("INFO").cseq.seq == 1
    reinvite = d.create_request("INVITE")
    assert reinvite.cseq.seq == 2
    ack = d.create_ack(2)
    assert ack.method == "ACK" and ack.cseq.seq == 2 and ack.cseq.method == "ACK"
    assert d.create_request("BYE").cseq.seq == 3


def test_remote_cseq_must_grow():
    d = Dialog.from_uas(req(), local_tag="focus9")
    text = INVITE.replace("CSeq: 10 INVITE", "CSeq: {n} {m}").replace("INVITE sip", "{m} sip")
    bye = parse_datagram(text.format(rr="", n=11, m="BYE").encode())
    d.receive_request(bye)
    assert d.remote_seq == 11
    old = parse_datagram(text.format(rr="", n=11, m="INFO").encode())
    with pytest.raises(DialogError) as info:
        d.receive_request(old)
    assert info.value.status == 500
    ack = parse_datagram(text.format(rr="", n=10, m="ACK").encode())
    d.receive_request(ack)          # ACK carries the INVITE's number: fine


def test_reinvite_refreshes_target_and_keeps_route_set():
    d = Dialog.from_uas(req(RR3), local_tag="focus9")
    text = (INVITE.replace("CSeq: 10", "CSeq: 11")
            .replace("Contact: <sip:alice@192.0.2.10:5060>", "Contact: <sip:alice@198.51.100.7:5062>"))
    reinvite = req("Record-Route: <sip:evil.example.com;lr>\r\n", text)
    d.receive_request(reinvite)
    assert str(d.remote_target) == "sip:alice@198.51.100.7:5062"
    assert len(d.route_set) == 3, "§12.2: the route set never changes in a dialog"


def test_dialog_id_of_both_sides():
    invite = req()
    assert dialog_id_of(invite, local_is_uas=True) == ("dlg-1@192.0.2.10", None, "alice1")
    resp = ok_response(invite)
    assert dialog_id_of(resp, local_is_uas=False) == ("dlg-1@192.0.2.10", "alice1", "focus9")


def test_uas_response_headers_copy_record_route():
    invite = req(RR3)
    d = Dialog.from_uas(invite, local_tag="focus9")
    contact = "<sip:conf1@203.0.113.5:5070>;isfocus"
    r = make_response(invite, 200, to_tag=d.local_tag,
                      headers=uas_response_headers(invite, d, contact))
    r = parse_datagram(r.to_bytes())
    assert [str(x.uri) for x in r.record_routes] == [
        "sip:p1.example.com;lr", "sip:p2.example.com;lr", "sip:p3.example.com;lr"]
    assert r.to.tag == "focus9" and "isfocus" in r.contacts[0].params


def test_strict_route_fixup_and_pop_own_route():
    me = URI.parse("sip:203.0.113.5:5070;lr")
    is_local = lambda uri: (uri.host, uri.port) == (me.host, me.port)  # noqa: E731
    text = INVITE.replace("INVITE sip:conf1@focus.example.com", "BYE sip:203.0.113.5:5070") \
                 .replace("CSeq: 10 INVITE", "CSeq: 11 BYE")
    bye = req("Route: <sip:p2.example.com;lr>, <sip:conf1@focus.example.com>\r\n", text)
    assert strict_route_fixup(bye, is_local)
    assert bye.uri_text == "sip:conf1@focus.example.com"
    assert route_uris(bye) == ["sip:p2.example.com;lr"]
    loose = req("Route: <sip:203.0.113.5:5070;lr>, <sip:p9.example.com;lr>\r\n")
    assert not strict_route_fixup(loose, is_local)
    assert pop_own_route(loose, is_local)
    assert route_uris(loose) == ["sip:p9.example.com;lr"]
    assert not pop_own_route(loose, is_local)


def test_dialog_needs_one_contact():
    text = INVITE.replace("Contact: <sip:alice@192.0.2.10:5060>\r\n", "")
    with pytest.raises(DialogError):
        Dialog.from_uas(req("", text))
