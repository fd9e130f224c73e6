"""PIN entry (issue 14, point 4): the sans-IO gate and prompts, the lobby
stream of the media engine, and the focus on a Clock (tests/focusrig.py):
a caller is a member only once it entered the PIN; one that fails leaves
no trace (model, mesh, NOTIFY, API)."""

import threading
import time

import numpy as np
import pytest
from twisted.internet.task import Clock

from twisted_mfocus.focus.pin import PinGate, info_digit
from twisted_mfocus.media import g711, prompts
from twisted_mfocus.media.codecs import CODECS, FRAME, MIX_RATE, Transcoder
from twisted_mfocus.media.engine import MediaEngine
from twisted_mfocus.media.packet import build_rtp, parse_rtp
from twisted_mfocus.media.prompts import ENTER, WELCOME, WRONG, Player, duration
from twisted_mfocus.media.sdp import Negotiated
from twisted_mfocus.sip.message import make_response, parse_datagram

from .foci import start_foci, stop_all
from .focusrig import ROOM, SDP, Phone, answer, join, make_rig
from .harness import wait_for
from .pcap import Capture, sip_messages
from .peers import tone_phone
from .peers.process import need
from .tones import TONES, heard, received_audio

MEMBER_BANDS = (440, 1000, 1500)        # the tone tests' member tones (±60 Hz)


# -- the gate ------------------------------------------------------------------


class Gate:
    def __init__(self, pin="1234", timeout=20):
        self.clock = Clock()
        self.played, self.results, self.wrong = [], [], []
        self.gate = PinGate(pin, self.clock, timeout, self.play,
                            lambda ok, why: self.results.append((ok, why)),
                            on_wrong=self.wrong.append)
        self.gate.start()

    def play(self, prompt):
        self.played.append(prompt)
        return duration(prompt)

    def keys(self, digits):
        for d in digits:
            self.gate.press(d)


def test_right_pin_then_hash_is_welcomed_then_admitted():
    g = Gate()
    assert g.played == [ENTER]
    g.keys("1234")
    assert g.results == []
    g.keys("#")
    assert g.played[-1] == WELCOME and g.results == []      # welcome plays first
    g.clock.advance(duration(WELCOME))
    assert g.results == [(True, "admitted")]
    g.clock.advance(60)                                     # no timeout later
    assert g.results == [(True, "admitted")]


def test_three_wrong_pins_fail():
    g = Gate()
    g.keys("1111#")
    assert g.played[-1] == WRONG and g.wrong == [1]
    g.clock.advance(duration(WRONG) + 0.5)
    assert g.played[-1] == ENTER                            # asked again
    g.keys("12345#")
    g.keys("#")                                             # a lone '#' costs no try
    g.keys("4321#")
    assert g.wrong == [1, 2, 3] and g.results == []
    g.clock.advance(duration(WRONG))
    assert g.results == [(False, "wrong PIN 3 times")]
    g.keys("1234#")                                         # too late
    assert g.results == [(False, "wrong PIN 3 times")]


def test_no_pin_within_the_timeout_fails_and_enter_repeats_meanwhile():
    g = Gate(timeout=20)
    g.clock.pump([0.1] * 199)
    assert g.results == [] and g.played.count(ENTER) == 7   # every 3 s
    g.clock.advance(0.2)
    assert g.results == [(False, "no PIN within 20 s")]


def test_digits_without_hash_do_nothing():
    g = Gate()
    g.keys("1234")
    g.clock.advance(10)
    assert g.results == [] and g.played == [ENTER]          # digits came: no more prompts
    g.keys("#")
    g.clock.advance(1)
    assert g.results == [(True, "admitted")]


def test_digits_are_bounded_and_cancel_stops_everything():
    g = Gate()
    g.keys("1234" * 20 + "#")                               # past 32 digits: wrong
    assert g.wrong == [1]
    g.keys("1234")
    g.gate.cancel()
    g.keys("#")
    g.clock.advance(60)
    assert g.results == []


def test_dtmf_relay_bodies():
    def relay(body):
        return info_digit("application/dtmf-relay", body)
    assert relay(b"Signal=5\r\nDuration=160\r\n") == "5"
    assert relay(b"signal= #\r\nduration=100") == "#"
    assert relay(b"Signal=11\r\n") == "#"
    assert relay(b"Signal=*\r\n") == "*"
    for bad in (b"", b"Duration=160", b"Signal=55", b"Signal=x", b"\xff\xfe"):
        assert relay(bad) is None


def test_dtmf_bodies():
    """application/dtmf: the body is the key (or its event number)."""
    assert [info_digit("application/dtmf", b) for b in (b"5", b"*\r\n", b"11", b"d")] == [
        "5", "*", "#", "D"]
    for bad in (b"", b"55", b"Signal=5", b"\xff"):
        assert info_digit("application/dtmf", bad) is None
    assert info_digit("text/plain", b"5") is None


# -- the prompts -----------------------------------------------------------------


def spectrum_of(samples, rate=MIX_RATE):
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples)))) ** 2
    return np.fft.rfftfreq(len(samples), 1 / rate), spectrum


@pytest.mark.parametrize("codec", [None, g711.PCMU, g711.PCMA])
def test_prompts_differ_by_dominant_frequency_and_avoid_the_member_bands(codec):
    """As made (16 kHz), and as a G.711 caller decodes them."""
    dominant = {}
    for name in (ENTER, WRONG, WELCOME):
        made = prompts.frames(name)
        assert all(len(f) == FRAME for f in made)
        assert prompts.frames(name) is made                 # cached
        if codec is None:
            bins, power = spectrum_of(np.concatenate(made))
        else:
            coder = Transcoder(CODECS[codec])
            bins, power = spectrum_of(np.concatenate(
                [g711.decode(codec, coder.encode(f)) for f in made]), 8000)
        dominant[name] = float(bins[np.argmax(power)])
        for band in MEMBER_BANDS:
            inside = power[(bins > band - 60) & (bins < band + 60)].sum()
            assert inside < 1e-3 * power.max(), (name, band, inside / power.max())
    assert abs(dominant[ENTER] - 660) < 10
    assert abs(dominant[WRONG] - 330) < 10
    assert abs(dominant[WELCOME] - 1180) < 10


def test_player_plays_a_prompt_then_silence():
    player = Player()
    assert not player.next_frame().any() and len(player.next_frame()) == FRAME
    seconds = player.play(WRONG)
    played = [player.next_frame() for _ in range(int(round(seconds / 0.02)))]
    assert all((a == b).all() for a, b in zip(played, prompts.frames(WRONG)))
    assert len(played) == len(prompts.frames(WRONG))
    assert not player.next_frame().any()


# -- the media engine's lobby -------------------------------------------------------


class Endpoint:
    def __init__(self):
        self.sink, self.sent = None, []

    def send_rtp(self, packet, dest):
        self.sent.append(parse_rtp(packet))

    def send_rtcp(self, packet, dest):
        pass


def tone(freq, n=160):
    return (8000 * np.sin(2 * np.pi * freq * np.arange(n) / 8000)).astype(np.int16)


def test_a_lobby_stream_is_sent_its_source_and_mixed_only_once_admitted():
    clock = Clock()
    digits = []
    engine = MediaEngine(clock, lambda key, digit: digits.append((key, digit)))
    n = Negotiated("PCMU", 0, 101, ("127.0.0.1", 4000), "sendrecv", False)
    member, caller = Endpoint(), Endpoint()
    engine.add("conf", "member", member, n)
    player = Player()
    engine.add_lobby("caller", caller, n, player.next_frame)
    player.play(ENTER)
    seq = 0

    def speak(endpoint, freq):
        nonlocal seq
        seq += 1
        endpoint.sink.rtp_received(build_rtp(0, seq, seq * 160, 7, g711.encode(
            "PCMU", tone(freq)).tobytes()), ("127.0.0.1", 4000))
    for _ in range(10):
        speak(caller, 440)
        clock.advance(0.02)
    # The caller's digits come; its voice reaches no one, it hears the prompt.
    caller.sink.rtp_received(build_rtp(101, 99, 5000, 7, bytes([5, 0x0A, 0, 160])),
                             ("127.0.0.1", 4000))
    assert digits == [("caller", "5")]
    assert "caller" not in engine.mixers["conf"].parties
    heard = np.concatenate([g711.decode("PCMU", p.payload) for p in member.sent])
    assert not heard.any()
    prompt = Transcoder(CODECS["PCMU"])     # the prompt, coded as the caller's call does
    assert [p.payload for p in caller.sent[:5]] == [prompt.encode(f)
                                                     for f in prompts.frames(ENTER)[:5]]
    ssrc = caller.sent[0].ssrc
    engine.add("conf", "caller", caller, n)                 # admitted: the same stream
    assert not engine.lobby and "caller" in engine.mixers["conf"].parties
    caller.sent.clear()
    member.sent.clear()
    for _ in range(5):
        speak(caller, 440)
        clock.advance(0.02)
    assert {p.ssrc for p in caller.sent} == {ssrc}
    heard = np.concatenate([g711.decode("PCMU", p.payload) for p in member.sent])
    assert heard.any()
    engine.remove("caller")
    engine.remove("member")
    assert engine._loop is None


# -- the focus on a Clock ---------------------------------------------------------


PIN_ROOM = "[room:room]\npin = 1234\n"


@pytest.fixture
def rig():
    rig = make_rig(config_text=PIN_ROOM)
    rig.writes = []
    return rig


def room_of(rig):
    return rig.focus.rooms.get("room")


def watch(rig, port=5900):
    """A SUBSCRIBE watcher; returns the list its NOTIFY bodies go to."""
    watcher = Phone(port, "watcher")
    rig.deliver(watcher.request("SUBSCRIBE", ROOM, headers=[("Event", "conference"),
                                                            ("Expires", "600")]), watcher.peer)
    bodies = []

    def take():
        for notify in answer(rig, rig.wire.take("NOTIFY"), watcher.peer):
            bodies.append(notify.body)
        return bodies
    take()
    spy = room_of(rig).mesh.replica.write
    room_of(rig).mesh.replica.write = lambda *ops: rig.writes.append(ops) or spy(*ops)
    return take


def info(rig, phone, ok, digit, content_type="application/dtmf-relay"):
    """An INFO with a ``content_type`` body carrying ``digit`` in ``phone``'s call."""
    body = digit if content_type == "application/dtmf" else \
        f"Signal={digit}\r\nDuration=160\r\n"
    request = phone.request("INFO", ROOM, to_tag=ok.to.tag, body=body.encode())
    raw = request.to_bytes().replace(b"Content-Type: application/sdp",
                                     f"Content-Type: {content_type}".encode())
    rig.deliver(parse_datagram(raw), phone.peer)
    assert rig.wire.take(200)


def members(rig):
    room = room_of(rig)
    return (set(room.conference.users),
            {record.user for _, record in room.mesh.replica.members().values()},
            {m["uri"] for m in rig.focus.views.conference("room")["members"]})


@pytest.mark.parametrize("content_type", ["application/dtmf-relay", "application/dtmf"])
def test_a_caller_is_a_member_only_after_the_pin_and_hash(rig, content_type):
    notifies = watch(rig)
    phone = Phone(5001)
    ok = join(rig, phone)
    me = f"sip:{phone.user}@127.0.0.1:{phone.port}"
    for digit in "1234":
        info(rig, phone, ok, digit, content_type)
        rig.clock.advance(0.1)
        assert members(rig) == (set(), set(), set())
    info(rig, phone, ok, "#", content_type)
    rig.clock.advance(duration(WELCOME) + 0.05)
    assert members(rig) == ({me}, {me}, {me})
    rig.clock.advance(0.5)
    assert any(me.encode() in body for body in notifies())
    # What it was sent while in the lobby: the prompts (660 Hz, then welcome).
    leg = room_of(rig).legs[0]
    assert not leg.in_lobby and leg in rig.focus.audio.engine.streams


def test_wrong_pins_end_the_call_and_leave_no_trace(rig):
    notifies = watch(rig)
    member = Phone(5010)
    ok_member = join(rig, member)
    for digit in "1234#":
        info(rig, member, ok_member, digit)
    rig.clock.advance(1)
    rig.writes.clear()
    phone = Phone(5011)
    ok = join(rig, phone)
    me = f"sip:{phone.user}@127.0.0.1:{phone.port}"
    leg = room_of(rig).legs[-1]
    assert leg.in_lobby and leg not in rig.focus.audio.engine.streams
    rig.deliver(phone.request("REFER", ROOM, to_tag=ok.to.tag,
                              headers=[("Refer-To", "<sip:x@127.0.0.1:5999>")]), phone.peer)
    assert rig.wire.take(403) and not rig.wire.take("INVITE")   # no member: no REFER
    for attempt in ("9999#", "*6#", "12345#"):              # *6 means nothing here
        for digit in attempt:
            info(rig, phone, ok, digit)
            assert me not in members(rig)[0] | members(rig)[1] | members(rig)[2]
        assert not leg.muted
        rig.clock.advance(1.5)
    byes = rig.wire.take("BYE")
    assert [b.call_id for b in byes] == [phone.call_id]
    assert room_of(rig).legs == [room_of(rig).legs[0]] and not room_of(rig).lobby
    rig.clock.advance(1)
    assert me not in members(rig)[0] | members(rig)[1] | members(rig)[2]
    assert rig.writes == []                                 # the mesh never heard of it
    assert not any(me.encode() in body for body in notifies())
    assert rig.focus.node.load == 1


def test_rfc4733_digits_and_the_prompts_on_the_wire(rig):
    phone = Phone(5020)
    join(rig, phone)
    leg = room_of(rig).legs[0]
    rig.clock.advance(0.5)
    lobby = [parse_rtp(p) for p, _ in leg.rtp.sent]
    audio = np.concatenate([g711.decode("PCMU", p.payload) for p in lobby])
    bins, power = spectrum_of(audio, 8000)
    assert abs(bins[np.argmax(power)] - 660) < 10           # "enter PIN"
    for i, digit in enumerate("1234#"):
        event = "0123456789*#".index(digit)
        for n in range(3):                                  # RFC 4733 §2.5: resent
            leg.rtp.sink.rtp_received(build_rtp(101, 10 * i + n, 1000 + i * 800, 9,
                                                bytes([event, 0x0A, 0, 160])),
                                      ("127.0.0.1", 4000))
    assert room_of(rig).conference.user_count == 0
    rig.clock.advance(duration(WELCOME) + 0.05)
    assert room_of(rig).conference.user_count == 1
    assert {parse_rtp(p).ssrc for p, _ in leg.rtp.sent} == {lobby[0].ssrc}


def test_no_pin_in_time_is_bye_and_no_trace(rig):
    watch(rig)
    phone = Phone(5030)
    join(rig, phone)
    rig.clock.advance(19.5)
    assert not rig.wire.take("BYE")
    rig.clock.advance(1)
    assert [b.call_id for b in rig.wire.take("BYE")] == [phone.call_id]
    assert rig.writes == [] and rig.focus.node.load == 0


def test_a_caller_hanging_up_in_the_lobby_leaves_no_trace(rig):
    watch(rig)
    phone = Phone(5040)
    ok = join(rig, phone)
    info(rig, phone, ok, "1")
    rig.deliver(phone.request("BYE", ROOM, to_tag=ok.to.tag), phone.peer)
    assert rig.wire.take(200)
    rig.clock.advance(30)
    assert rig.writes == [] and not room_of(rig).lobby and rig.focus.node.load == 0
    assert not rig.focus.audio.engine.lobby


def test_a_dialled_out_member_is_not_asked(rig):
    member = Phone(5050)
    ok = join(rig, member)
    for digit in "1234#":
        info(rig, member, ok, digit)
    rig.clock.advance(1)
    rig.deliver(member.request("REFER", ROOM, to_tag=ok.to.tag,
                               headers=[("Refer-To", "<sip:x@127.0.0.1:5999>")]), member.peer)
    assert rig.wire.take(202)
    invite = rig.wire.take("INVITE")[0]
    ok2 = make_response(invite, 200, to_tag="x1", body=SDP,
                        headers=[("Contact", "<sip:x@127.0.0.1:5999>"),
                                 ("Content-Type", "application/sdp")])
    rig.deliver(parse_datagram(ok2.to_bytes()), Phone(5999).peer)
    assert "sip:x@127.0.0.1:5999" in room_of(rig).conference.users
    assert not room_of(rig).lobby


# -- real phones --------------------------------------------------------------------


def test_baresip_callers_enter_the_pin_as_rfc4733_events(tmp_path):
    """Three baresip tone phones dial a PIN room: alice and bob key the PIN
    (RFC 4733 events) and hear each other; carol keys three wrong PINs and
    gets BYE: the API never listed her, the members never heard her, and
    she heard only the prompts.  All from the wire (captures, the API)."""
    need("baresip", "dumpcap")
    conf = "pins"
    nodes = start_foci(tmp_path, [("focus", "primary", 10)],
                       config_text=f"[room:{conf}]\npin = 1234\n")
    focus = nodes[0]
    phones = [tone_phone(tmp_path, name, freq) for name, freq in TONES.items()]
    alice, bob, carol = phones
    ports = " or ".join(f"dst portrange {p.rtp_low}-{p.rtp_high}" for p in phones)
    capture = Capture(str(tmp_path / "rtp.pcap"),
                      bpf=f"udp and ({ports} or port {focus.port})")
    listed, polling = set(), threading.Event()

    def members():
        view = focus.conference(conf)
        return {m["uri"] for m in view["members"]} if view else set()

    def poll():                         # every member the API ever showed
        while not polling.is_set():
            listed.update(members())
            time.sleep(0.05)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    uri = f"sip:{conf}@127.0.0.1:{focus.port}"
    try:
        for phone in (alice, bob):
            phone.start()
            phone.dial(uri)
            phone.wait_event("CALL_ESTABLISHED", 8)
            time.sleep(0.5)             # the "enter PIN" prompt
            assert phone.aor not in members()
            phone.command("sndcode", "1234#")
            assert wait_for(lambda p=phone: p.aor in members(), timeout=8), phone.name
        carol.start()
        carol.dial(uri)
        carol.wait_event("CALL_ESTABLISHED", 8)
        for wrong in ("9999#", "1243#"):
            time.sleep(1.5)
            carol.command("sndcode", wrong)
        time.sleep(1.5)
        lobby_end = time.time()         # carol has been in the lobby for 4.5 s
        carol.command("sndcode", "4321#")
        carol.wait_event("CALL_CLOSED", 10)
        closed = time.time()
        assert members() == {alice.aor, bob.aor}
        time.sleep(0.5)
    finally:
        polling.set()
        poller.join(2)
        capture.stop()
        for phone in phones:
            phone.stop()
        stop_all(nodes)
    assert alice.aor in listed and bob.aor in listed and carol.aor not in listed, listed
    byes = [m for _, sport, dport, m in sip_messages(capture.path)
            if sport == focus.port and dport == carol.sip_port and m.startswith(b"BYE ")]
    assert byes, "the focus sent carol no BYE"
    # The members heard each other, never carol (while she was in the lobby).
    a, b, c = TONES["alice"], TONES["bob"], TONES["carol"]
    assert heard(capture.path, alice, lobby_end - 2.5, lobby_end) == {b}
    assert heard(capture.path, bob, lobby_end - 2.5, lobby_end) == {a}
    bands = [330, 660, 1180, a, b, c]
    for phone in (alice, bob):          # in no half second of the whole call
        peaks = peak_levels(received_audio(capture.path, phone.rtp_low, end=closed), bands)
        assert peaks[c] < 0.01, (phone.name, peaks)
    # Carol heard the prompts ("enter PIN" 660 Hz, "wrong PIN" 330 Hz), no member.
    audio = received_audio(capture.path, carol.rtp_low)
    assert len(audio) >= 8000 * 3, len(audio)
    peaks = peak_levels(audio, bands)
    assert peaks[330] > 0.1 and peaks[660] > 0.1, peaks
    assert max(peaks[a], peaks[b], peaks[c]) < 0.01, peaks


def peak_levels(audio, freqs, seconds=0.5):
    """Each band's highest energy in any half second of ``audio`` (windows
    overlapping by half, so no moment is lost to the FFT window's edges),
    relative to the strongest band's."""
    n = int(8000 * seconds)
    bins = np.fft.rfftfreq(n, 1 / 8000)
    peaks = dict.fromkeys(freqs, 0.0)
    for start in range(0, len(audio) - n + 1, n // 2):
        power = np.abs(np.fft.rfft(audio[start:start + n] * np.hanning(n))) ** 2
        for f in freqs:
            peaks[f] = max(peaks[f], float(power[(bins > f - 25) & (bins < f + 25)].sum()))
    top = max(peaks.values()) or 1.0
    return {f: e / top for f, e in peaks.items()}
