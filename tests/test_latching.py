"""Strict RTP latching (issue 16, cf. Asterisk AST-2017-005): a stream learns
its member's source from the first packets (the SDP address, or behind NAT
a source sending the negotiated payload type with one SSRC, in sequence),
then takes nothing from anywhere else; it learns again only after a
re-INVITE or a long silence.  On the engine with a task.Clock."""

import numpy as np
import pytest
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from twisted_mfocus.media import g711
from twisted_mfocus.media.engine import RELATCH_AFTER, Latch, MediaEngine
from twisted_mfocus.media.packet import build_rtp, parse_rtp, receiver_report
from twisted_mfocus.media.sdp import Negotiated

from .focusrig import Phone, join, make_rig
from .tones import band_levels

MEMBER_SDP = ("127.0.0.1", 4000)
OTHER_SDP = ("127.0.0.1", 4002)
INJECTOR = ("127.0.0.1", 9999)


class Endpoint:
    """An RTP pair: what the stream sent, and where."""

    def __init__(self):
        self.sink, self.sent = None, []

    def send_rtp(self, packet, dest):
        self.sent.append((parse_rtp(packet), dest))

    def send_rtcp(self, packet, dest):
        pass


def negotiated(remote, pt=0):
    return Negotiated("PCMU", pt, 101, remote, "sendrecv", False)


def tone(freq):
    samples = (8000 * np.sin(2 * np.pi * freq * np.arange(160) / 8000)).astype(np.int16)
    return g711.encode("PCMU", samples).tobytes()


class Call:
    """Two parties in one conference: ``member`` and ``other`` (who listens)."""

    def __init__(self, member_sdp=MEMBER_SDP, relatch_after=RELATCH_AFTER):
        self.clock = Clock()
        self.engine = MediaEngine(self.clock, relatch_after=relatch_after)
        self.member, self.other = Endpoint(), Endpoint()
        self.engine.add("conf", "member", self.member, negotiated(member_sdp))
        self.engine.add("conf", "other", self.other, negotiated(OTHER_SDP))
        self.seq = {}

    @property
    def stream(self):
        return self.engine.streams["member"][1]

    def send(self, addr, freq=440, ssrc=1, pt=0, count=1, seq=None):
        """``count`` packets from ``addr`` to the member's port, 20 ms apart."""
        for _ in range(count):
            n = self.seq[ssrc] = self.seq.get(ssrc, 0) + 1 if seq is None else seq
            self.member.sink.rtp_received(build_rtp(pt, n, 160 * n, ssrc, tone(freq)), addr)
            self.clock.advance(0.02)

    def heard_by_other(self):
        """The tones (440, 1500 Hz) in the last 0.8 s the mix sent ``other``."""
        sent = self.other.sent[-40:]
        audio = np.concatenate([g711.decode("PCMU", p.payload) for p, _ in sent])
        return {f for f, level in band_levels(audio, (440, 1500)).items() if level > 0.01}


def test_the_sdp_address_locks_at_once_and_a_stranger_is_dropped_not_heard():
    call = Call()
    call.send(MEMBER_SDP, 440, count=5)
    stream = call.stream
    assert stream.latch is Latch.LOCKED and stream.latched == MEMBER_SDP
    call.send(INJECTOR, 1500, ssrc=66, count=100)       # AST-2017-005: 100 packets
    call.send(MEMBER_SDP, 440, count=20)
    assert stream.latched == MEMBER_SDP
    assert stream.dropped["source"] == 100 and stream.received == 25
    assert {dest for _, dest in call.member.sent} == {MEMBER_SDP}   # nothing to the injector
    assert call.heard_by_other() == {440}


def test_a_member_behind_nat_is_learned_from_a_stable_ssrc_in_sequence():
    call = Call(member_sdp=("10.0.0.5", 4000))          # a private address
    nat = ("203.0.113.7", 40000)
    call.send(nat, ssrc=5, count=3)
    stream = call.stream
    assert stream.latch is Latch.LEARNING and stream.dropped["source"] == 3
    assert {dest for _, dest in call.member.sent} == {("10.0.0.5", 4000)}   # the SDP's
    call.send(nat, ssrc=5, count=1)                     # the fourth in sequence
    assert stream.latch is Latch.LOCKED and stream.latched == nat and stream.received == 1
    call.member.sent.clear()
    call.clock.advance(0.04)
    assert {dest for _, dest in call.member.sent} == {nat}


@pytest.mark.parametrize("spray", ["new ssrc each", "seq jumps", "other payload type",
                                   "ports change"])
def test_learning_takes_no_source_that_is_not_steady(spray):
    call = Call(member_sdp=("10.0.0.5", 4000))
    for i in range(20):
        if spray == "new ssrc each":
            call.send(INJECTOR, ssrc=100 + i)
        elif spray == "seq jumps":
            call.send(INJECTOR, ssrc=7, seq=10 * i)
        elif spray == "other payload type":
            call.send(INJECTOR, ssrc=7, pt=8)
        else:
            call.send(("127.0.0.1", 9000 + i), ssrc=7)
    assert call.stream.latch is Latch.LEARNING and call.stream.dropped["source"] == 20
    assert call.stream.received == 0


def test_a_reinvite_relearns_and_the_old_source_stays_the_destination_meanwhile():
    call = Call()
    call.send(MEMBER_SDP, count=3)
    moved = ("127.0.0.1", 4100)
    call.send(moved, ssrc=2, count=5)
    stream = call.stream
    assert stream.latched == MEMBER_SDP and stream.dropped["source"] == 5
    call.engine.update("member", negotiated(("10.0.0.5", 4000)))    # re-INVITE
    assert stream.latch is Latch.LEARNING
    call.member.sent.clear()
    call.send(moved, ssrc=2, count=3)
    assert {dest for _, dest in call.member.sent} == {MEMBER_SDP}
    call.send(moved, ssrc=2, count=1)
    assert stream.latch is Latch.LOCKED and stream.latched == moved


def test_a_source_taken_after_a_silence_loses_to_the_member_at_the_next_reinvite():
    call = Call(relatch_after=10.0)
    call.send(MEMBER_SDP, count=3)
    call.clock.advance(10.0)                            # the member is silent (on hold)
    call.send(INJECTOR, ssrc=9, count=4)
    assert call.stream.latched == INJECTOR              # what relatch_after allows
    call.engine.update("member", negotiated(MEMBER_SDP))   # the member resumes
    for _ in range(10):                                 # both keep sending
        call.send(INJECTOR, ssrc=9)
        call.send(MEMBER_SDP)
    assert call.stream.latched == MEMBER_SDP and call.stream.latch is Latch.LOCKED


def test_after_a_long_silence_another_source_is_learned():
    call = Call(relatch_after=10.0)
    call.send(MEMBER_SDP, count=3)
    heard = call.stream.last_heard
    assert heard == pytest.approx(call.clock.seconds() - 0.02)
    call.clock.advance(5.0)
    call.send(INJECTOR, ssrc=9, count=10)               # too soon: dropped
    assert call.stream.latched == MEMBER_SDP and call.stream.last_heard == heard
    call.clock.advance(5.0)                             # 10 s since the last packet taken
    call.send(INJECTOR, ssrc=9, count=4)
    assert call.stream.latched == INJECTOR
    assert call.stream.last_heard == pytest.approx(call.clock.seconds() - 0.02)


def test_rtcp_only_from_the_members_host():
    call = Call()
    call.send(MEMBER_SDP, count=2)
    rr = receiver_report(1)
    call.member.sink.rtcp_received(rr, ("192.0.2.66", 4001))
    assert call.stream.dropped["source"] == 1 and call.stream.latched_rtcp is None
    call.member.sink.rtcp_received(rr, ("127.0.0.1", 4001))
    assert call.stream.latched_rtcp == ("127.0.0.1", 4001)
    call.member.sink.rtcp_received(b"\x80\xc9", ("127.0.0.1", 4001))
    assert call.stream.dropped["malformed"] == 1


def test_drops_are_counted_by_reason_and_logged_once_per_call_and_reason():
    lines = []

    def observer(event):
        if "dropping RTP" in event.get("log_format", ""):
            lines.append(event)
    globalLogPublisher.addObserver(observer)
    try:
        call = Call()
        call.send(MEMBER_SDP, count=2)
        call.send(INJECTOR, count=500)
        for _ in range(500):
            call.member.sink.rtp_received(b"\x00junk", MEMBER_SDP)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert call.stream.dropped == {"source": 500, "auth": 0, "replay": 0, "malformed": 500}
    assert sorted(e["reason"] for e in lines) == ["malformed", "source"]


def test_a_lobby_stream_keeps_its_source_when_it_joins_the_mix():
    clock = Clock()
    engine = MediaEngine(clock)
    caller = Endpoint()
    n = negotiated(("10.0.0.5", 4000))
    engine.add_lobby("caller", caller, n, lambda: None)
    nat = ("203.0.113.7", 40000)
    for seq in range(1, 5):
        caller.sink.rtp_received(build_rtp(0, seq, 160 * seq, 3, tone(440)), nat)
    stream = engine.lobby["caller"][0]
    assert stream.latched == nat
    engine.add("conf", "caller", caller, n)             # admitted: the same answer
    assert engine.streams["caller"][1] is stream and stream.latch is Latch.LOCKED


def test_the_api_shows_what_a_member_took_and_dropped():
    rig = make_rig()
    join(rig, Phone(5070))
    room = rig.focus.rooms.get("room")
    leg = room.legs[0]
    for seq in range(1, 11):
        leg.rtp.sink.rtp_received(build_rtp(0, seq, 160 * seq, 4, tone(440)), MEMBER_SDP)
        leg.rtp.sink.rtp_received(build_rtp(0, seq, 160 * seq, 5, tone(1500)), INJECTOR)
    (member,) = rig.focus.views.conference("room")["members"]
    assert member["media"] == "sendrecv"                # the keys it had are kept
    assert member["rtp"] == {"received": 10, "source": "127.0.0.1:4000", "latch": "locked",
                             "dropped": {"source": 10, "auth": 0, "replay": 0,
                                         "malformed": 0}, "srtp": None,
                             "codec": "PCMU/8000", "recovered": 0}
