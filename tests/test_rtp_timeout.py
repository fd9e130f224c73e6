"""Dead members removed: a member whose RTP stopped (a phone killed without
BYE) is ended after [media] rtp_timeout, one on hold after hold_timeout
(media/engine.py, focus/audio.py), on the rig's Clock."""

from twisted_mfocus.media.packet import build_rtp

from .focusrig import SDP, Phone, ROOM, join, make_rig


def _rig(text=""):
    return make_rig(config_text="[media]\nrtp_timeout = 30\nhold_timeout = 120\n" + text)


def _send_rtp(rig, phone, seq):
    leg = next(leg for leg in rig.focus.rooms.get("room").legs
               if leg.user_entity.endswith(f":{phone.port}"))
    leg.rtp.sink.rtp_received(build_rtp(0, seq, seq * 160, 1234, b"\xff" * 160),
                              ("127.0.0.1", 4000))


def test_a_member_that_stops_sending_is_ended_and_its_place_freed():
    rig = _rig()
    alive, dead = Phone(5401), Phone(5402)
    join(rig, alive)
    join(rig, dead)
    for second in range(60):
        _send_rtp(rig, alive, second)           # one of them keeps talking
        if second < 10:
            _send_rtp(rig, dead, second)        # the other dies after 10 s
        rig.clock.advance(1)
    byes = rig.wire.take("BYE")
    assert {b.call_id for b in byes} == {dead.call_id}      # (BYE resent: unanswered)
    assert rig.focus.node.load == 1
    users = rig.focus.rooms.get("room").conference.users
    assert list(users) == ["sip:phone5401@127.0.0.1:5401"]


def test_a_member_that_never_sends_is_ended_after_the_timeout():
    rig = _rig()
    phone = Phone(5403)
    join(rig, phone)
    rig.clock.advance(25)
    assert not rig.wire.take("BYE")
    rig.clock.advance(15)                       # 30 s, checked every 5 s
    assert rig.wire.take("BYE") and rig.focus.node.load == 0


def test_on_hold_the_longer_timeout_applies_and_resuming_restarts_it():
    rig = _rig()
    phone = Phone(5404)
    ok = join(rig, phone)
    hold = SDP.replace(b"a=rtpmap:0 PCMU/8000\r\n", b"a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n")
    rig.deliver(phone.request("INVITE", ROOM, to_tag=ok.to.tag, body=hold), phone.peer)
    rig.wire.take(200)
    rig.deliver(phone.request("ACK", ROOM, to_tag=ok.to.tag), phone.peer)
    rig.clock.advance(100)                      # silent on hold: beyond 30 s, within 120
    assert not rig.wire.take("BYE")
    rig.deliver(phone.request("INVITE", ROOM, to_tag=ok.to.tag, body=SDP), phone.peer)
    rig.wire.take(200)
    rig.deliver(phone.request("ACK", ROOM, to_tag=ok.to.tag), phone.peer)
    rig.clock.advance(25)                       # resumed: 30 s from the re-INVITE
    assert not rig.wire.take("BYE")
    rig.clock.advance(15)
    assert rig.wire.take("BYE")


def test_zero_turns_it_off():
    rig = make_rig(config_text="[media]\nrtp_timeout = 0\n")
    join(rig, Phone(5405))
    rig.clock.advance(3600)
    assert rig.focus.node.load == 1
