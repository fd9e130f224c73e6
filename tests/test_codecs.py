"""Codecs at the mixer's rate (twisted_mfocus/media/codecs.py): each codec
carries a tone through; what goes to a narrowband phone has no alias of
what it cannot carry; Opus recovers a lost frame from the next packet."""

import numpy as np
import pytest

from twisted_mfocus.config import Config, ConfigError
from twisted_mfocus.media.codecs import CODECS, FRAME, MIX_RATE, Transcoder, match
from twisted_mfocus.media.g711 import decode as g711_decode



def tone(freq, frames, level=8000, rate=MIX_RATE):
    t = np.arange(frames * (rate // 50)) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.int16).reshape(frames, rate // 50)


def levels(samples, freqs, rate):
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples)))) ** 2
    bins = np.fft.rfftfreq(len(samples), 1 / rate)
    total = spectrum.sum()
    return {f: float(spectrum[np.abs(bins - f) < 30].sum() / total) for f in freqs}


def round_trip(name, frames, rate=MIX_RATE):
    """Encode with one call's coder, decode with another's (a phone's)."""
    out, back = Transcoder(CODECS[name], rate), Transcoder(CODECS[name], rate)
    return np.concatenate([back.decode(out.encode(f)) for f in frames])


RATES = pytest.mark.parametrize("rate", [16000, 48000])


@RATES
@pytest.mark.parametrize("name, freq", [("PCMU", 1000), ("PCMA", 440), ("G722", 5000),
                                        ("G722", 6000), ("OPUS", 6000), ("OPUS", 300)])
def test_a_tone_the_codec_can_carry_comes_through(name, freq, rate):
    got = round_trip(name, tone(freq, 50, rate=rate), rate)[rate // 5:]
    assert levels(got, [freq], rate)[freq] > 0.9, name


def test_opus_at_48_khz_carries_what_16_khz_cannot():
    got = round_trip("OPUS", tone(10000, 50, rate=48000), 48000)[48000 // 5:]
    assert levels(got, [10000], 48000)[10000] > 0.9        # above 16 kHz's Nyquist


@RATES
@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_a_narrowband_phone_gets_no_alias_of_high_tones(name, rate):
    out = Transcoder(CODECS[name], rate)
    for freq, alias in [(6000, 2000), (5000, 3000)]:
        frames = tone(freq, 50, level=16000, rate=rate)
        sent = np.concatenate([g711_decode(name, out.encode(f)) for f in frames])[1600:]
        # What the phone decodes at 8 kHz: nothing at the alias (nor anywhere loud).
        assert np.sqrt(np.mean(sent.astype(np.float64) ** 2)) < 30, (freq, name)
    mixed = tone(6000, 50, 16000, rate) // 2 + tone(1000, 50, 16000, rate) // 2
    sent = np.concatenate([g711_decode(name, out.encode(f)) for f in mixed])[1600:]
    got = levels(sent, [1000, 2000], 8000)
    assert got[1000] > 0.9 and got[2000] < 1e-4, got


@RATES
def test_g711_in_is_upsampled_without_images(rate):
    into = Transcoder(CODECS["PCMU"], rate)
    phone = Transcoder(CODECS["PCMU"], rate)    # a phone's 1 kHz, as it sends it
    frames = [phone.encode(f) for f in tone(1000, 50, rate=rate)]
    wide = np.concatenate([into.decode(p) for p in frames])[rate // 10:]
    images = [7000, 9000, 15000] if rate == 48000 else [7000]   # 1 kHz mirrored at 8k·n
    got = levels(wide, [1000] + images, rate)
    assert len(wide) == 45 * rate // 50 and got[1000] > 0.95, got
    assert all(got[f] < 1e-4 for f in images), got


def test_opus_recovers_a_lost_frame_from_the_next_packets_fec():
    phone = Transcoder(CODECS["OPUS"])
    packets = [phone.encode(f) for f in tone(1000, 30)]
    ours = Transcoder(CODECS["OPUS"])
    out = []
    for i, packet in enumerate(packets):
        if i == 20:
            continue                            # lost
        if i == 21:
            out.append(ours.recover(packet))    # from 21's FEC
        out.append(ours.decode(packet))
    got = np.concatenate(out)
    assert len(got) == 30 * FRAME
    lost = got[20 * FRAME:21 * FRAME]
    assert np.sqrt(np.mean(lost.astype(np.float64) ** 2)) > 2000    # not silence
    assert ours.recover(None).shape == (FRAME,)                      # PLC without a packet
    assert Transcoder(CODECS["PCMU"]).recover(packets[0]) is None


def test_codec_names(tmp_path):
    def config(text):
        path = tmp_path / "c.conf"
        path.write_text(f"[media]\ncodecs = {text}\n")
        return Config(str(path))
    assert config("opus, G722 pcmu").codecs == ("OPUS", "G722", "PCMU")
    with pytest.raises(ConfigError, match="GSM"):
        config("opus, GSM")
    assert match("OPUS", 48000, 1) is CODECS["OPUS"] and match("G722", 16000).clock == 16000
    assert match("PCMU", 16000) is None and match("SPEEX", 8000) is None
    assert CODECS["OPUS"].rtpmap() == "opus/48000/2" and CODECS["G722"].rtpmap() == "G722/8000"
    assert [CODECS[n].ticks_per_frame for n in ("OPUS", "G722", "PCMU")] == [960, 160, 160]


# -- the engine codes a mix heard by many once ----------------------------------

class Endpoint:
    def __init__(self):
        self.sink, self.rtp = None, []

    def send_rtp(self, packet, dest):
        self.rtp.append(packet)

    def send_rtcp(self, packet, dest):
        pass


def test_members_who_hear_the_same_mix_get_one_coded_payload_per_codec():
    from twisted.internet.task import Clock

    from twisted_mfocus.media.engine import MediaEngine
    from twisted_mfocus.media.packet import build_rtp, parse_rtp
    from twisted_mfocus.media.sdp import Negotiated

    clock = Clock()
    engine = MediaEngine(clock, speakers=3)
    members = {}
    for i, (name, pt) in enumerate([("OPUS", 96)] * 3 + [("PCMU", 0)] * 2):
        members[i] = Endpoint()
        engine.add("conf", i, members[i], Negotiated(name, pt, 101, ("127.0.0.1", 4000 + 2 * i),
                                                     "sendrecv", False))
    talker = Transcoder(CODECS["OPUS"])        # member 0 talks, in Opus
    for n, frame in enumerate(tone(440, 20)):
        members[0].sink.rtp_received(build_rtp(96, n, 960 * n, 9, talker.encode(frame)),
                                     ("127.0.0.1", 4000))
        clock.advance(0.02)
    last = {i: parse_rtp(e.rtp[-1]) for i, e in members.items()}
    assert last[1].payload == last[2].payload               # silent Opus members: shared
    assert last[3].payload == last[4].payload               # silent PCMU members: shared
    assert last[0].payload != last[1].payload               # the talker: its own mix
    assert len({last[i].ssrc for i in members}) == 5        # each its own stream
    heard = Transcoder(CODECS["PCMU"])
    assert levels(np.concatenate([heard.decode(parse_rtp(p).payload)
                                  for p in members[3].rtp[-10:]]), [440], MIX_RATE)[440] > 0.9
    engine.stop()
