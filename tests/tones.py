"""What a phone received, from a capture of its RTP ports: decoded
G.711, and its energy by frequency band (FFT): the tone tests' ears."""

import numpy as np

from twisted_mfocus.media import g711
from twisted_mfocus.media.packet import PacketError, parse_rtp

from .pcap import udp_datagrams

TONES = {"alice": 440, "bob": 1000, "carol": 1500}


def received_audio(pcap, rtp_port, start=0.0, end=float("inf")):
    """The PCMU/PCMA RTP sent to ``rtp_port`` (captured between ``start``
    and ``end``, wall-clock times), decoded, in timestamp order."""
    frames = []
    for t, _, dport, payload in udp_datagrams(pcap):
        if dport != rtp_port or not start <= t <= end:
            continue
        try:
            packet = parse_rtp(payload)
        except PacketError:
            continue
        if packet.payload_type in g711.CODECS:
            frames.append((packet.timestamp, g711.decode(g711.CODECS[packet.payload_type],
                                                         packet.payload)))
    frames.sort(key=lambda f: f[0])
    return np.concatenate([f[1] for f in frames]) if frames else np.zeros(0, np.int16)


def band_levels(samples, freqs, width=25):
    """Energy of each frequency band, relative to the strongest (0..1)."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    bins = np.fft.rfftfreq(len(samples), 1 / 8000)
    energy = {f: float(np.sum(spectrum[(bins > f - width) & (bins < f + width)] ** 2))
              for f in freqs}
    top = max(energy.values()) or 1.0
    return {f: e / top for f, e in energy.items()}


def heard(pcap, phone, start=0.0, end=float("inf"), tones=TONES):
    """Which tones ``phone`` received (band level > 0.2 of the strongest)
    in the last 2 s before ``end``, on the RTP port of its range that got
    the most (after a handover the new call has a port of its own)."""
    audio = max((received_audio(pcap, port, start, end)
                 for port in range(phone.rtp_low, phone.rtp_high + 1, 2)), key=len)
    assert len(audio) >= 8000 * 1.5, (phone.name, len(audio))
    levels = band_levels(audio[-8000 * 2:], tones.values())
    loud = {f for f, level in levels.items() if level > 0.2}
    assert all(levels[f] < 0.01 for f in tones.values() if f not in loud), (phone.name, levels)
    return loud
