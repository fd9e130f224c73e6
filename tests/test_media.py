"""The sans-IO media core (issue 6): G.711 tables, RTP/RTCP packets, the
receiver's jitter buffer and concealment, and the N-1 mixer, with
synthetic frames."""

import warnings

import numpy as np
import pytest

from twisted_mfocus.media import g711
from twisted_mfocus.media.mixer import Mixer
from twisted_mfocus.media.packet import (RTP, PacketError, ReportBlock, build_rtp, parse_event,
                                         parse_rtcp, parse_rtp, receiver_report,
                                         sender_report)
from twisted_mfocus.media.receiver import FRAME, Receiver

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop          # the stdlib's G.711 (until Python 3.13): an oracle
    except ImportError:
        audioop = None


# -- G.711 ------------------------------------------------------------------

def test_g711_known_codes():
    assert g711.ULAW_DECODE[0xFF] == 0 and g711.ULAW_DECODE[0x7F] == 0
    assert g711.ULAW_DECODE[0x00] == -32124 and g711.ULAW_DECODE[0x80] == 32124
    assert g711.ALAW_DECODE[0xD5] == 8 and g711.ALAW_DECODE[0x55] == -8
    assert g711.ALAW_DECODE[0xAA] == 32256
    assert g711.SILENCE == {"PCMU": 0xFF, "PCMA": 0xD5}


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_g711_round_trips_every_code_and_is_monotonic(codec):
    table = {"PCMU": g711.ULAW_DECODE, "PCMA": g711.ALAW_DECODE}[codec]
    codes = np.arange(256, dtype=np.uint8)
    assert (table[g711.encode(codec, table[codes])] == table[codes]).all()
    linear = np.arange(-32768, 32768, dtype=np.int32)
    decoded = table[g711.encode(codec, linear)].astype(np.int32)
    assert (np.diff(decoded) >= 0).all()                    # never inverts loudness
    step = np.abs(decoded - linear)
    assert (step <= np.maximum(np.abs(linear) // 16, 16) + 1100).all()


@pytest.mark.skipif(audioop is None, reason="audioop left the stdlib in Python 3.13")
@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_g711_agrees_with_audioop_everywhere(codec):
    linear = np.arange(-32768, 32768, dtype=np.int16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        enc = audioop.lin2ulaw if codec == "PCMU" else audioop.lin2alaw
        dec = audioop.ulaw2lin if codec == "PCMU" else audioop.alaw2lin
        expected = np.frombuffer(enc(linear.tobytes(), 2), dtype=np.uint8)
        decoded = np.frombuffer(dec(bytes(range(256)), 2), dtype=np.int16)
    assert (g711.encode(codec, linear) == expected).all()
    assert (g711.decode(codec, bytes(range(256))) == decoded).all()


def test_encode_clips_wide_samples():
    wide = np.array([40000, -40000, 32767, -32768], dtype=np.int32)
    assert (g711.encode("PCMU", wide) == g711.encode("PCMU", [32767, -32768] * 2)).all()


# -- RTP / RTCP -------------------------------------------------------------------

def test_rtp_round_trip_and_what_is_skipped():
    packet = build_rtp(0, 65535, 2 ** 32 - 1, 0xDEADBEEF, b"\xff" * 160, marker=True)
    assert parse_rtp(packet) == RTP(0, True, 65535, 2 ** 32 - 1, 0xDEADBEEF, b"\xff" * 160)
    # CSRC count 2, a header extension of one word, 3 bytes of padding
    head = bytes([0x80 | 0x20 | 0x10 | 2, 8]) + packet[2:12]
    odd = head + b"\0" * 8 + b"\xbe\xde\x00\x01" + b"\0" * 4 + b"\x55" * 10 + b"\0\0\3"
    assert parse_rtp(odd).payload == b"\x55" * 10 and parse_rtp(odd).payload_type == 8


@pytest.mark.parametrize("data, why", [
    (b"\x80\x00\x00", "shorter than its header"),
    (b"\x40" + b"\0" * 11, "version 1"),
    (b"\x90" + b"\0" * 11, "extension runs past"),
    (b"\x8f" + b"\0" * 11, "run past the packet"),
    (b"\xa0" + b"\0" * 11 + b"\x00", "padding count is zero"),
    (b"\xa0" + b"\0" * 11 + b"\x09", "run past the packet"),
])
def test_bad_rtp_says_what_is_wrong(data, why):
    with pytest.raises(PacketError, match=why):
        parse_rtp(data)


def test_rtcp_sender_and_receiver_reports_round_trip():
    block = ReportBlock(7, 25, -3, 70000, 12, 0x12345678, 65536)
    sr = sender_report(1, 1764000000.5, 160, 10, 1600, [block])
    rr = receiver_report(2, [block._replace(ssrc=8, cumulative_lost=5)])
    parsed = parse_rtcp(sr + rr)
    assert [(p[0], p[1], p[3]) for p in parsed] == [
        (200, 1, [block]), (201, 2, [block._replace(ssrc=8, cumulative_lost=5)])]
    assert parsed[0][2][2:] == (160, 10, 1600)
    with pytest.raises(PacketError, match="runs past"):
        parse_rtcp(sr[:-4])


def test_telephone_event_payload():
    event = parse_event(bytes([10, 0x80 | 10, 0x03, 0x20]))
    assert (event.event, event.end, event.volume, event.duration) == (10, True, 10, 800)
    with pytest.raises(PacketError):
        parse_event(b"\x01")


# -- the receiver ---------------------------------------------------------------

TICKS = 160                     # RTP timestamp units of 20 ms at 8000


def tone(n, level=1000):
    """Packet n's audio: a constant level n*level (easy to recognise after
    G.711 and the resampling filter: its median)."""
    return np.full(TICKS, n * level, dtype=np.int16)


def packet(n, ssrc=1, pt=0, payload=None, ts0=1000):
    if payload is None:
        payload = g711.encode("PCMU", tone(n)).tobytes()
    return RTP(pt, False, (100 + n) & 0xFFFF, (ts0 + n * TICKS) & 0xFFFFFFFF, ssrc, payload)


def level(frame):
    """A frame's level, past the filter's rise from the frame before."""
    return None if frame is None else int(np.median(frame[FRAME // 4:]))


def played(receiver, ticks):
    return [level(receiver.pull()) for _ in range(ticks)]


def near(values, expected):
    return all((v is None and e is None) or (v is not None and e is not None and
                                             abs(v - e) <= max(abs(e) // 16, 8))
               for v, e in zip(values, expected)) and len(values) == len(expected)


def test_in_order_frames_play_after_the_initial_delay():
    r = Receiver(min_delay=1)
    for n in range(1, 4):
        r.push(packet(n), n * 0.02)
    assert near(played(r, 5), [None, 1000, 2000, 3000, 1500])    # then concealment


def test_reordering_within_the_delay_is_undone():
    r = Receiver(min_delay=2)
    for n, t in ((1, 0.02), (3, 0.04), (2, 0.05), (4, 0.08)):
        r.push(packet(n), t)
    assert near(played(r, 6)[2:], [1000, 2000, 3000, 4000])


def test_a_lost_frame_is_concealed_by_fading_then_silence():
    r = Receiver(min_delay=1)
    for n in (1, 2):
        r.push(packet(n), n * 0.02)
    out = played(r, 3)
    assert near(out, [None, 1000, 2000])
    assert near(played(r, 3), [1000, 500, None])    # half, a quarter... then nothing
    r.push(packet(6), 0.2)
    assert near(played(r, 1), [6000])


def test_a_late_packet_is_dropped_and_lengthens_the_delay():
    r = Receiver(min_delay=1, max_delay=4)
    r.push(packet(1), 0.02)
    r.push(packet(4), 0.08)
    played(r, 3)                                    # 1 played, 2 and 3 missing
    r.push(packet(2), 0.1)                          # its time has passed; 4 is still here
    assert r.late == 1 and r.delay == 1
    r.pull()
    assert r.delay == 2


def test_a_packet_after_the_buffer_ran_dry_plays_on_behind_it():
    """Nothing left to play, then a packet whose time has passed: the
    sender is slow or paused, not late among others; playout moves back."""
    r = Receiver(min_delay=1)
    r.push(packet(1), 0.02)
    played(r, 4)
    r.push(packet(2), 0.1)
    assert (r.late, r.underruns) == (0, 1)
    assert near(played(r, 2), [None, 2000])


def test_a_new_ssrc_takes_over_only_if_it_keeps_sending():
    r = Receiver()
    r.push(packet(1, ssrc=1), 0.02)
    r.push(packet(2, ssrc=9), 0.04)                 # a stray packet: ignored
    assert r.ssrc == 1
    for n in range(3, 6):
        r.push(packet(n, ssrc=9, ts0=50000), n * 0.02)
    assert r.ssrc == 9


def test_each_telephone_event_is_reported_once():
    r = Receiver(event_pt=101)
    star = bytes([10, 10, 0, 160])
    digits = [r.push(RTP(101, False, i, 8000, 1, star), i * 0.02) for i in range(3)]
    six_end = bytes([6, 0x80 | 10, 3, 0x20])
    digits += [r.push(RTP(101, False, 3 + i, 9600, 1, six_end), 0.1) for i in range(3)]
    assert [d for d in digits if d] == ["*", "6"]


def test_report_block_counts_loss_and_jitter():
    r = Receiver()
    for n in (1, 2, 4, 5):                           # 3 lost
        r.push(packet(n), n * 0.02 + (0.005 if n == 4 else 0))
    block = r.report_block()
    assert (block.ssrc, block.cumulative_lost, block.highest_seq) == (1, 1, 105)
    assert block.fraction_lost == 256 // 5 and block.jitter > 0
    assert r.report_block().fraction_lost == 0       # nothing new since


# -- the mixer ----------------------------------------------------------------------

def frames(keys, seed=0, scale=3000):
    rng = np.random.default_rng(seed)
    return {k: rng.integers(-scale, scale, FRAME).astype(np.int16) for k in keys}


def test_members_hear_exactly_everyone_else():
    m = Mixer(capacity=2)                            # grows as parties come; all mixed
    keys = [f"m{i}" for i in range(5)]
    for k in keys:
        m.add(k)
    voices = frames(keys)
    for k, v in voices.items():
        m.put(k, v)
    heard = m.mix()
    total = sum(v.astype(np.int32) for v in voices.values())
    for k in keys:
        assert (heard[k] == total - voices[k]).all()


def test_peers_get_our_members_only_and_members_hear_the_peers():
    m = Mixer()
    for k in ("a", "b"):
        m.add(k)
    for k in ("p", "q"):
        m.add(k, peer=True)
    voices = frames("abpq", seed=1)
    for k, v in voices.items():
        m.put(k, v)
    heard = m.mix()
    v = {k: x.astype(np.int32) for k, x in voices.items()}
    assert (heard["a"] == v["b"] + v["p"] + v["q"]).all()
    assert (heard["p"] == v["a"] + v["b"]).all() and (heard["q"] == heard["p"]).all()


def test_the_sum_is_clipped_not_wrapped():
    m = Mixer()
    for k in "abc":
        m.add(k)
    for k in "ab":
        m.put(k, np.full(FRAME, 30000, dtype=np.int16))
    m.put("c", np.full(FRAME, -30000, dtype=np.int16))
    heard = m.mix()
    assert (heard["c"] == 32767).all() and (heard["a"] == 0).all()


def test_muted_silent_and_held_parties():
    m = Mixer()
    for k in "abc":
        m.add(k)
    m.set("a", muted=True)
    m.set("c", receives=False)                       # on hold: no payload for it
    voices = frames("abc", seed=2)
    m.put("a", voices["a"])
    m.put("b", voices["b"])
    m.put("c", None)                                 # nothing to play this tick
    heard = m.mix()
    assert set(heard) == {"a", "b"}
    assert (heard["a"] == voices["b"]).all() and (heard["b"] == 0).all()
    assert m.mix()["a"].any() == False        # noqa: E712 (the tick was cleared)


def test_parties_that_hear_the_same_share_one_frame():
    m = Mixer()
    for k in ("talks", "quiet1", "quiet2"):
        m.add(k)
    for k in ("p", "q"):
        m.add(k, peer=True)
    m.put("talks", np.full(FRAME, 5000, dtype=np.int16))
    out = m.mix()
    assert set(out) == {"talks", "quiet1", "quiet2", "p", "q"}
    assert out["quiet1"] is out["quiet2"] and (out["quiet1"] == 5000).all()
    assert out["p"] is out["q"] and not out["talks"].any()


def test_only_the_loudest_speakers_are_mixed_and_silence_is_no_voice():
    m = Mixer(speakers=2)
    keys = ["soft", "mid", "loud", "hush", "quiet"]
    for k in keys + ["peer"]:
        m.add(k, peer=k == "peer")
    levels = {"soft": 1000, "mid": 2000, "loud": 3000, "hush": 10, "peer": 500}
    for k, level in levels.items():
        m.put(k, np.full(FRAME, level, dtype=np.int16))
    m.put("quiet", None)
    out = m.mix()
    assert (out["quiet"] == 2000 + 3000 + 500).all()       # the two loudest and the peer
    assert out["soft"] is out["quiet"] is out["hush"]      # not mixed: the shared mix
    assert (out["loud"] == 2000 + 500).all() and (out["mid"] == 3000 + 500).all()
    assert (out["peer"] == 5000).all() and out["peer"] is m.ours
    assert m.whole is out["quiet"]


def test_narrow_frames_are_ranked_as_they_are_and_widened_only_if_mixed():
    """A party put at its codec's rate (8 kHz under the 16 kHz mix) with a
    widen: its loudness comes from the narrow frame, and widen() is called
    only for the frames mixed this tick."""
    m = Mixer(capacity=2, speakers=2)            # grows: the narrow rows grow too
    widened = []

    def widen(key, level):
        def run():
            widened.append(key)
            return np.full(FRAME, 2 * level, dtype=np.float64)     # stands for 2x the rate
        return run
    levels = {"n_loud": 3000, "n_soft": 500, "wide": 2000, "n_mid": 1000}
    for k in levels:
        m.add(k)
    for k, level in levels.items():
        if k == "wide":
            m.put(k, np.full(FRAME, level, dtype=np.int16))
        else:
            m.put(k, np.full(FRAME // 2, level, dtype=np.int16), widen(k, level))
    out = m.mix()
    assert widened == ["n_loud"]                 # the two loudest: n_loud and wide
    assert (out["n_soft"] == 6000 + 2000).all() and out["n_mid"] is out["n_soft"]
    assert (out["wide"] == 6000).all() and (out["n_loud"] == 2000).all()
    # Next tick a narrow party puts a full-rate frame: it is ranked by that.
    m.put("n_soft", np.full(FRAME, 9000, dtype=np.int16))
    m.put("n_mid", np.full(FRAME // 2, 100, dtype=np.int16), widen("n_mid", 100))
    out = m.mix()
    assert widened == ["n_loud", "n_mid"] and (out["n_soft"] == 200).all()


def test_an_interpolator_filters_the_last_frame_as_if_run_on_every_one():
    from twisted_mfocus.media.codecs import CODECS, widening
    rng = np.random.default_rng(3)
    chunks = [rng.integers(-8000, 8000, 160).astype(np.int16) for _ in range(4)]
    always, lazy = widening(CODECS["PCMU"], 16000), widening(CODECS["PCMU"], 16000)
    for chunk in chunks:
        expected = always.run(chunk)
        lazy.push(chunk)
    assert np.array_equal(lazy.last(), expected) and len(expected) == 320
    assert widening(CODECS["OPUS"], 16000) is None and widening(CODECS["G722"], 16000) is None


def test_parties_come_and_go():
    m = Mixer(capacity=1)
    for k in "abc":
        m.add(k)
    m.remove("b")
    with pytest.raises(ValueError):
        m.add("a")
    m.add("d")
    assert set(m.mix()) == {"a", "c", "d"}


# -- hostile input ---------------------------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=200))
def test_any_datagram_is_a_packet_or_a_packet_error_and_never_breaks_the_receiver(data, rtcp):
    r = Receiver(event_pt=101)
    try:
        packet = parse_rtp(data)
    except PacketError:
        packet = None
    if packet is not None:
        for pt in (packet.payload_type, 0, 101):
            r.push(packet._replace(payload_type=pt), 0.02)
        frame = r.pull()
        assert frame is None or (frame.dtype == np.int16 and len(frame) == FRAME)
    try:
        parse_rtcp(rtcp)
    except PacketError:
        pass


def test_a_sender_whose_clock_runs_fast_cannot_grow_the_buffer_without_bound():
    """2 % fast: a packet every 19.6 ms of our time, each one 20 ms of its
    audio.  Over five minutes the buffer would gain 300 frames; it skips
    instead, so what is buffered stays near the jitter it needs."""
    r = Receiver(min_delay=1, max_delay=8)
    arrival, n, most = 0.0, 0, 0
    for tick in range(15000):                       # 5 minutes of 20 ms ticks
        while arrival <= tick * 0.02:
            r.push(RTP(0, False, n & 0xFFFF, (1000 + n * TICKS) & 0xFFFFFFFF, 1,
                       g711.encode("PCMU", tone(1)).tobytes()), arrival)
            n += 1
            arrival += 0.0196
        r.pull()
        most = max(most, len(r.packets))
    assert n > 15200 and r.delay <= 8 and most <= 10, (n, r.delay, most)


def test_a_sender_whose_clock_runs_slow_is_concealed_not_stalled():
    """2 % slow: now and then a frame is missing; it is concealed and the
    playout goes on, the delay bounded."""
    r = Receiver(min_delay=1, max_delay=8)
    arrival, n, played = 0.0, 0, 0
    for tick in range(3000):
        while arrival <= tick * 0.02:
            r.push(RTP(0, False, n & 0xFFFF, (1000 + n * TICKS) & 0xFFFFFFFF, 1,
                       g711.encode("PCMU", tone(1)).tobytes()), arrival)
            n += 1
            arrival += 0.0204
        played += r.pull() is not None
    assert played > 2900 and r.delay <= 8 and len(r.packets) <= 10, (played, r.delay)
