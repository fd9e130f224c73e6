"""The audio codecs a call may use, and one call's coding state.

Sans-IO: bytes and numpy arrays in and out.  The mixer works at
``MIX_RATE`` (16 kHz: wideband, so a 6 kHz tone of one wideband member
reaches the others); each call's ``Transcoder`` turns its payloads into
20 ms frames at that rate (``FRAME`` samples) and back.

- **G.711** (PCMU, PCMA; g711.py): 8 kHz.  Up to the mixer by a 2x
  interpolating low-pass; down by the same low-pass then every other
  sample, so what a narrowband phone hears has nothing above 4 kHz folded
  into it (a 5 or 6 kHz tone would come back as a 3 or 2 kHz alias).
- **G.722** (ITU-T G.722 at 64 kbit/s) through libg722 (the ``G722``
  package, sippy's; public domain): 16 kHz audio, an RTP clock of 8000
  (RFC 3551 §4.5.2, kept for compatibility with RFC 1890).
- **Opus** (RFC 6716, RFC 7587) through libopus (``opuslib_next``, with
  the library bundled): always ``opus/48000/2`` in SDP, coded here in mono
  at the mixer's rate (libopus resamples); a lost frame is recovered from
  the next packet's in-band FEC when it is there, else concealed (PLC).

The ``Codec`` records are what SDP offers and answers name; ``CODECS``
the ones known, by upper-cased encoding name.
"""

import functools
from dataclasses import dataclass
from typing import Optional

import G722
import numpy as np
import opuslib_next
from opuslib_next.api import decoder as opus_decoder

from . import g711

__all__ = ["CODECS", "DEFAULT", "Codec", "CodecError", "FRAME", "Interpolator", "MIX_RATE",
           "Transcoder", "match", "widening"]

MIX_RATE = 16000                # the mixer's rate by default: wideband
#: what we send in Opus (FEC included), by mixing rate: below these, with FEC
#: on, libopus narrows the band (32 kbit/s keeps 8 kHz, 48 kbit/s 12 kHz and up)
OPUS_BITRATE = {16000: 32000, 48000: 48000}
FRAME = MIX_RATE // 50          # 20 ms
PTIME_MS = 20


class CodecError(ValueError):
    """A payload that does not decode, or a codec name we do not know."""


@dataclass(frozen=True)
class Codec:
    """A codec as SDP names it (RFC 4566 §6 rtpmap) and what it carries."""

    encoding: str               # as we write it: "PCMU", "PCMA", "G722", "opus"
    clock: int                  # the RTP clock rate (the rtpmap's)
    rate: int                   # the audio sample rate it carries
    channels: int = 1           # the rtpmap's channels (opus: always 2, RFC 7587 §7)
    static_pt: Optional[int] = None     # RFC 3551 §6 table 4
    fmtp: str = ""              # our a=fmtp parameters for it ({rate}: the mixer's)

    @property
    def name(self):
        return self.encoding.upper()

    @property
    def ticks_per_frame(self):
        """RTP timestamp units in one 20 ms frame."""
        return self.clock * PTIME_MS // 1000

    def fmtp_at(self, mix_rate):
        """Our a=fmtp when the mixer runs at ``mix_rate`` (Opus: the rate we
        play and capture at, RFC 7587 §6.1)."""
        return self.fmtp.format(rate=mix_rate)

    def rtpmap(self):
        channels = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.encoding}/{self.clock}{channels}"


#: RFC 7587 §7: mono is preferred (stereo=0), FEC welcome, what the mixer's
#: rate carries is all it has; DTX lets a silent phone send almost nothing.
OPUS_FMTP = ("maxplaybackrate={rate};sprop-maxcapturerate={rate};stereo=0;useinbandfec=1;"
             "usedtx=1")

CODECS = {c.name: c for c in (
    Codec("opus", 48000, 48000, channels=2, fmtp=OPUS_FMTP),
    Codec("G722", 8000, 16000, static_pt=9),
    Codec("PCMU", 8000, 8000, static_pt=0),
    Codec("PCMA", 8000, 8000, static_pt=8),
)}


def match(encoding, clock, channels=1):
    """The Codec an rtpmap names (encoding upper-cased), None if not ours.
    Lenient where phones differ: G.722 at a clock of 16000 (its sample
    rate, which some phones write; their timestamps then count at it),
    Opus with 1 channel (RFC 7587 §7 says 2 whatever is sent)."""
    codec = CODECS.get(encoding)
    if codec is None:
        return None
    if codec.name == "G722" and clock == 16000:
        return _G722_16K
    if clock != codec.clock or channels not in (1, codec.channels):
        return None
    return codec


_G722_16K = Codec("G722", 16000, 16000, static_pt=9)
DEFAULT = ("OPUS", "G722", "PCMU", "PCMA")


# -- to and from the mixer's rate ----------------------------------------------------

@functools.lru_cache(maxsize=None)
def _lowpass(factor, cutoff, rate):
    """A windowed-sinc low-pass at ``rate`` for a change of rate by
    ``factor``: 32 taps per phase plus one (so each phase lines up),
    Blackman (about 74 dB down in the stop band), unity gain at DC."""
    taps = 32 * factor + 1
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(2 * cutoff / rate * n) * np.blackman(taps)
    return h / h.sum()


@functools.lru_cache(maxsize=None)
def _phases(factor, cutoff, rate):
    """The low-pass's ``factor`` phases, scaled for unity gain (shared, read-only)."""
    h = _lowpass(factor, cutoff, rate)
    phases = tuple(factor * h[p::factor] for p in range(factor))
    for phase in phases:
        phase.setflags(write=False)
    return phases


class Interpolator:
    """Up by ``factor``: the low-pass as an interpolator, in its phases
    (each output sample from every ``factor``-th tap over the input, so no
    stuffed zeros are multiplied); the input's history is kept between
    frames (a filter restarted every 20 ms would click).

    ``push`` every frame, in order, keeps that history (cheap); ``last``
    filters the frame pushed last (the costly part), so the engine widens
    only the frames the mixer uses (engine.py)."""

    HISTORY = 32                # input samples a phase reaches back

    def __init__(self, factor, cutoff, rate):
        self.factor, self.cutoff = factor, cutoff
        self._phases = _phases(factor, cutoff, rate)
        self._before = self._tail = np.zeros(self.HISTORY, dtype=np.int16)
        self._last = None

    def push(self, x):
        """The next frame of the input."""
        self._before, self._last = self._tail, x
        self._tail = x[-self.HISTORY:] if len(x) >= self.HISTORY else \
            np.concatenate((self._tail, x))[-self.HISTORY:]

    def last(self):
        """The frame pushed last, at ``factor`` times its rate (float)."""
        x = self._last
        data = np.concatenate((self._before, x)).astype(np.float64)
        out = np.empty(self.factor * len(x))
        for p, phase in enumerate(self._phases):    # phase 0 has one tap more
            out[p::self.factor] = np.convolve(data, phase, mode="valid")[(p > 0):][:len(x)]
        return out

    def run(self, x):
        self.push(x)
        return self.last()


class _Decimator:
    """Down by ``factor``: the low-pass, then every ``factor``-th sample, the
    history kept between frames; nothing above the new Nyquist rate is
    folded back in (a 6 kHz tone would come back at 2 kHz otherwise)."""

    def __init__(self, factor, cutoff, rate):
        self.factor = factor
        self._h = _lowpass(factor, cutoff, rate)
        self._tail = np.zeros(len(self._h) - 1, dtype=np.float64)

    def run(self, x):
        data = np.concatenate((self._tail, x))
        self._tail = data[-len(self._tail):]
        return np.convolve(data, self._h, mode="valid")[::self.factor]


def _clip16(x):
    """Float samples to int16, clipped (the filters may overshoot a full-scale edge)."""
    return np.clip(x, -32768, 32767, out=x).astype(np.int16)


def widening(codec, rate):
    """The Interpolator that brings ``codec``'s audio up to ``rate`` (the
    mixer's), cut off at 0.925 of the codec's Nyquist rate; None when its
    coder gives that rate itself (Opus: libopus decodes at any of its
    rates) or it already is."""
    if codec.name == "OPUS" or codec.rate >= rate or rate % codec.rate:
        return None
    return Interpolator(rate // codec.rate, 0.4625 * codec.rate, rate)


class Transcoder:
    """One call's coding state both ways (codecs with memory: G.722's
    ADPCM, Opus; the resampling filters)."""

    def __init__(self, codec, rate=MIX_RATE):
        self.codec = codec
        self.name = codec.name
        self.rate, self.frame = rate, rate // 50
        if rate % codec.rate and self.name != "OPUS":
            raise CodecError(f"cannot mix {codec.encoding} at {rate} Hz")
        self._up = widening(codec, rate)
        self._down = None if self._up is None else \
            _Decimator(self._up.factor, self._up.cutoff, rate)
        if self.name == "G722":
            self._g722_in, self._g722_out = G722.G722(16000, 64000), G722.G722(16000, 64000)
        elif self.name == "OPUS":
            self._opus_in = opuslib_next.Decoder(rate, 1)
            self._opus_out = opuslib_next.Encoder(rate, 1, opuslib_next.APPLICATION_VOIP)
            # FEC costs bits: at libopus's default rate with FEC on, the
            # encoder narrows the band (OPUS_BITRATE keeps it).
            self._opus_out.bitrate = OPUS_BITRATE[rate]
            self._opus_out.inband_fec = 1
            self._opus_out.packet_loss_perc = 10
            self._opus_out.complexity = 5
        elif self.name not in (g711.PCMU, g711.PCMA):
            raise CodecError(f"no coder for {codec.encoding}")

    # -- in ---------------------------------------------------------------

    def decode(self, payload):
        """int16 samples at the mixer's rate; CodecError if it does not decode."""
        name = self.name
        if name == "OPUS":
            return self._opus(payload, False)
        if name == "G722":
            samples = np.asarray(self._g722_in.decode(payload), dtype=np.int16)
        else:
            samples = g711.decode(name, payload)
        return samples if self._up is None else _clip16(self._up.run(samples))

    def recover(self, next_payload=None):
        """The frame before ``next_payload``, which was lost: from its
        in-band FEC (Opus), else concealed; None where the codec has no
        concealment of its own (the receiver fades the last frame)."""
        if self.name != "OPUS":
            return None
        if next_payload:
            try:
                return self._opus(next_payload, True)
            except CodecError:
                pass
        return self._opus(None, False)

    def _opus(self, payload, fec):
        try:
            pcm = opus_decoder.decode(self._opus_in.decoder_state, payload,
                                      len(payload) if payload else 0, self.frame, fec,
                                      channels=1)
        except opuslib_next.OpusError as e:
            raise CodecError(f"opus: {e}") from None
        return np.frombuffer(pcm, dtype=np.int16)

    # -- out --------------------------------------------------------------

    def encode(self, frame):
        """The payload for one 20 ms frame of int16 samples at the mixer's rate."""
        name = self.name
        if name == "OPUS":
            return self._opus_out.encode(frame.tobytes(), self.frame)
        if self._down is not None:
            frame = _clip16(self._down.run(frame.astype(np.float64)))
        if name == "G722":
            return self._g722_out.encode(frame)
        return g711.encode(name, frame).tobytes()
