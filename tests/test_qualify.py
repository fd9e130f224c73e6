"""Qualify (``[focus] qualify``, twisted_mfocus/focus/qualify.py): OPTIONS
inside each member's call; no answer, or 481, ends the call.  On a Clock:
the Qualifier alone, then the whole focus on the in-memory rig."""

from twisted.internet.task import Clock

from twisted_mfocus.focus.mesh import nearest_first
from twisted_mfocus.focus.qualify import Qualifier
from twisted_mfocus.sip.message import make_response, parse_datagram

from .focusrig import SDP, ROOM, Phone, make_rig


class Pings:
    def __init__(self):
        self.pending = []

    def __call__(self, answered):
        self.pending.append(answered)


def test_a_phone_that_answers_anything_but_481_is_kept():
    clock, pings, gone = Clock(), Pings(), []
    q = Qualifier(clock, 30, pings, gone.append)
    q.start()
    clock.advance(29.9)
    assert pings.pending == []
    for status in (200, 405, 501, 408):     # a final answer came from the phone
        clock.advance(0.1 if status == 200 else 30)
        pings.pending.pop()(status)
    assert (q.sent, q.answered, gone) == (4, 4, [])


def test_the_round_trip_of_the_last_answer_is_kept():
    """How near a member is (an agent asks the nearest first to be a focus:
    mesh.nearest_first)."""
    clock, pings, gone = Clock(), Pings(), []
    q = Qualifier(clock, 30, pings, gone.append)
    q.start()
    assert q.rtt is None
    clock.advance(30)
    clock.advance(0.25)
    pings.pending.pop()(200)
    assert abs(q.rtt - 0.25) < 1e-9
    clock.advance(30)
    clock.advance(0.05)
    pings.pending.pop()(405)
    assert abs(q.rtt - 0.05) < 1e-9


def test_members_measured_nearer_are_asked_first_then_the_rest_in_join_order():
    class Call:
        def __init__(self, rtt):
            self.qualifier = type("Q", (), {"rtt": rtt})()

    far, near, unknown1, unknown2 = Call(0.2), Call(0.01), Call(None), Call(None)
    joined = [("a", "A", unknown1), ("b", "B", far), ("c", "C", unknown2), ("d", "D", near)]
    assert [uri for uri, _, _ in nearest_first(joined)] == ["d", "b", "a", "c"]


def test_a_stopped_qualifier_lets_its_call_go_without_the_garbage_collector():
    """The call holds its Qualifier and the Qualifier the call's methods:
    stop() breaks that cycle, so an ended call is freed at once."""
    import gc
    import weakref

    class Call:
        def __init__(self, clock):
            self.qualifier = Qualifier(clock, 30, self.ping, self.gone)

        def ping(self, answered):
            pass

        def gone(self, why):
            pass
    call = Call(Clock())
    call.qualifier.start()
    call.qualifier.stop()
    alive = weakref.ref(call)
    gc.disable()
    try:
        del call
        assert alive() is None
    finally:
        gc.enable()


def test_no_answer_or_481_ends_it_once_and_nothing_more_is_sent():
    for status, why in [(None, "no answer to OPTIONS"), (481, "481")]:
        clock, pings, gone = Clock(), Pings(), []
        q = Qualifier(clock, 10, pings, gone.append)
        q.start()
        clock.advance(10)
        pings.pending.pop()(status)
        assert len(gone) == 1 and why in gone[0]
        clock.advance(100)
        assert pings.pending == [] and q.sent == 1


def test_zero_is_off_and_stop_cancels():
    clock, pings = Clock(), Pings()
    Qualifier(clock, 0, pings, None).start()
    q = Qualifier(clock, 5, pings, None)
    q.start()
    q.stop()
    clock.advance(60)
    assert pings.pending == [] and clock.getDelayedCalls() == []


def _join(rig, phone):
    rig.deliver(phone.request("INVITE", ROOM, body=SDP), phone.peer)
    ok = rig.wire.take(200)[-1]
    rig.deliver(phone.request("ACK", ROOM, to_tag=ok.to.tag), phone.peer)
    return ok


def test_the_focus_pings_each_member_in_its_call_and_ends_a_silent_one():
    rig = make_rig(config_text="[focus]\nqualify = 20\n[media]\nrtp_timeout = 0\n")
    alive, dead = Phone(5401), Phone(5402)
    for phone in (alive, dead):
        _join(rig, phone)
    rig.wire.take()
    room = rig.focus.rooms.get("room")
    assert len(room.legs) == 2
    rig.clock.advance(20)
    pings = rig.wire.take("OPTIONS")
    assert sorted(p.call_id for p in pings) == sorted([alive.call_id, dead.call_id])
    for ping in pings:          # in the dialog: our tag, the phone's tag
        assert ping.to.tag and ping.from_.tag and ping.uri.port in (5401, 5402)
    answer = next(p for p in pings if p.call_id == alive.call_id)
    rig.deliver(parse_datagram(make_response(answer, 200).to_bytes()), alive.peer)
    rig.clock.advance(40)       # Timer F (64*T1) ran out for the other one
    byes = rig.wire.take("BYE")
    assert [b.call_id for b in byes] == [dead.call_id]
    assert [leg.dialog.call_id for leg in room.legs] == [alive.call_id]
    first = {p.call_id: p.cseq.seq for p in pings}
    new = [p.call_id for p in rig.wire.take("OPTIONS") if p.cseq.seq > first[p.call_id]]
    assert new and set(new) == {alive.call_id}    # retransmissions aside, alive only


def test_a_481_to_the_ping_ends_the_call():
    rig = make_rig(config_text="[focus]\nqualify = 5\n[media]\nrtp_timeout = 0\n")
    phone = Phone(5403)
    _join(rig, phone)
    rig.wire.take()
    rig.clock.advance(5)
    (ping,) = rig.wire.take("OPTIONS")
    rig.deliver(parse_datagram(make_response(ping, 481).to_bytes()), phone.peer)
    assert [b.call_id for b in rig.wire.take("BYE")] == [phone.call_id]
    assert rig.focus.rooms.get("room") is None or not rig.focus.rooms.get("room").legs
