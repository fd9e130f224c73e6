"""Session timers (RFC 4028, twisted_mfocus/focus/session_timer.py) and
UPDATE (RFC 3311) on the in-memory rig (tests/focusrig.py), on a Clock."""

from twisted_mfocus.sip.message import make_response, parse_datagram

from .focusrig import SDP, Phone, ROOM
from .focusrig import make_rig as _make_rig


def make_rig():
    return _make_rig(config_text="[media]\nrtp_timeout = 0\n")   # the rig's phones send no RTP


def _call(rig, phone, headers):
    rig.deliver(phone.request("INVITE", ROOM, body=SDP, headers=headers), phone.peer)
    answer = rig.wire.take()[-1]
    if answer.status == 200:
        rig.deliver(phone.request("ACK", ROOM, to_tag=answer.to.tag), phone.peer)
    return answer


def _answer(rig, request, peer, headers=()):
    response = make_response(request, 200, headers=list(headers))
    rig.deliver(parse_datagram(response.to_bytes()), peer)


def test_a_phone_that_refreshes_gets_require_timer_and_is_ended_without_refresh():
    rig = make_rig()
    phone = Phone(5301)
    ok = _call(rig, phone, [("Supported", "timer, replaces"), ("Session-Expires", "120"),
                            ("Allow", "INVITE, ACK, BYE, UPDATE")])
    assert ok.headers.get("session-expires") == "120;refresher=uac"
    assert ok.headers.get("require") == "timer"
    assert "timer" in ok.headers.get("supported")
    assert "UPDATE" in ok.headers.get("allow")
    rig.clock.advance(70)
    rig.deliver(phone.request("UPDATE", ROOM, to_tag=ok.to.tag,   # a refresh, no SDP
                              headers=[("Session-Expires", "120;refresher=uac"),
                                       ("Supported", "timer")]), phone.peer)
    refreshed = rig.wire.take(200)[-1]
    assert refreshed.headers.get("session-expires") == "120;refresher=uac" and not refreshed.body
    rig.clock.advance(70)                       # 140 s after the call began: still on
    assert not rig.wire.take("BYE") and rig.focus.node.load == 1
    rig.clock.advance(20)                       # 90 s after the refresh: 120 - min(32, 40)
    assert rig.wire.take("BYE") and rig.focus.node.load == 0


def test_a_reinvite_is_a_refresh_too():
    rig = make_rig()
    phone = Phone(5302)
    ok = _call(rig, phone, [("Supported", "timer"), ("Session-Expires", "90")])
    for _ in range(3):
        rig.clock.advance(50)
        rig.deliver(phone.request("INVITE", ROOM, to_tag=ok.to.tag, body=SDP, headers=[
            ("Supported", "timer"), ("Session-Expires", "90;refresher=uac")]), phone.peer)
        assert rig.wire.take(200)[-1].headers.get("session-expires") == "90;refresher=uac"
        rig.deliver(phone.request("ACK", ROOM, to_tag=ok.to.tag), phone.peer)
    assert not rig.wire.take("BYE") and rig.focus.node.load == 1


def test_too_small_an_interval_is_422_with_min_se():
    rig = make_rig()
    refused = _call(rig, Phone(5303), [("Supported", "timer"), ("Session-Expires", "30")])
    assert (refused.status, refused.headers.get("min-se")) == (422, "90")
    assert rig.focus.node.load == 0
    assert _call(rig, Phone(5304), [("Session-Expires", "abc")]).status == 400


def test_a_phone_without_timers_is_refreshed_by_us_with_update():
    """A Session-Expires a proxy inserted, from a phone that does not
    support timers: we refresh (refresher=uas), by UPDATE since it allows
    it; an answered refresh goes on, a 481 ends the call."""
    rig = make_rig()
    phone = Phone(5305)
    ok = _call(rig, phone, [("Session-Expires", "100"), ("Allow", "INVITE, ACK, BYE, UPDATE")])
    assert ok.headers.get("session-expires") == "100;refresher=uas"
    assert ok.headers.get("require") is None    # it could not know what that means
    rig.clock.advance(51)
    update = rig.wire.take("UPDATE")[-1]
    assert update.headers.get("session-expires") == "100;refresher=uac"
    _answer(rig, update, phone.peer, [("Session-Expires", "100;refresher=uac")])
    rig.clock.advance(51)
    update = rig.wire.take("UPDATE")[-1]
    rig.deliver(parse_datagram(make_response(update, 481).to_bytes()), phone.peer)
    assert rig.wire.take("BYE") and rig.focus.node.load == 0


def test_without_update_our_refresh_is_a_reinvite():
    rig = make_rig()
    phone = Phone(5306)
    ok = _call(rig, phone, [("Session-Expires", "100")])
    rig.clock.advance(51)
    reinvite = rig.wire.take("INVITE")[-1]
    assert reinvite.headers.get("session-expires") == "100;refresher=uac"
    assert (reinvite.call_id, reinvite.from_.tag, reinvite.to.tag) == (
        ok.call_id, ok.to.tag, phone.tag)      # in the call
    assert b"m=audio" in reinvite.body        # a re-INVITE carries an offer


def test_a_phone_that_supports_timers_but_asks_none_gets_ours_and_one_without_gets_none():
    rig = make_rig()
    ok = _call(rig, Phone(5307), [("Supported", "timer")])
    assert ok.headers.get("session-expires") == "1800;refresher=uac"
    plain = _call(rig, Phone(5308), [])
    assert plain.headers.get("session-expires") is None
    rig.clock.advance(7200)     # the first, never refreshed, ended; the plain one goes on
    assert rig.focus.node.load == 1
    assert rig.focus.rooms.get("room").legs[0].call_id == plain.call_id


def test_update_with_an_offer_is_answered_in_its_200():
    rig = make_rig()
    phone = Phone(5309)
    ok = _call(rig, phone, [])
    hold = SDP.replace(b"a=rtpmap:0 PCMU/8000\r\n", b"a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n")
    rig.deliver(phone.request("UPDATE", ROOM, to_tag=ok.to.tag, body=hold), phone.peer)
    answer = rig.wire.take(200)[-1]
    assert b"a=recvonly" in answer.body
    rig.clock.advance(40)                       # an UPDATE's 200 is not retransmitted
    assert not rig.wire.take(200)
