"""One party's inbound RTP: source tracking, statistics, an adaptive jitter
buffer, loss recovery and telephone-events (RFC 3550, RFC 4733).

Sans-IO: ``push(packet, arrival)`` with the arrival time in seconds from
the caller's clock, ``pull()`` once per mixer tick for the next 20 ms at
the mixer's rate (``rate``: 16 kHz unless ``[media] mix_rate`` says 48).

- **Sources** (RFC 3550 §8.2, A.1): the first SSRC heard is followed; a
  different SSRC that keeps sending (``NEW_SOURCE_PACKETS`` in a row)
  replaces it (a phone that restarted its stream) and resets the buffer.
- **Statistics** (A.1, A.3, A.8): extended highest sequence number,
  expected and lost packets, interarrival jitter (in the codec's clock);
  ``report_block`` gives the RTCP report block.
- **Jitter buffer**: packets are kept coded, by RTP timestamp, and decoded
  in timestamp order when their turn comes (Opus and G.722 decoders keep
  state: they must see their packets in order).  Playout starts ``delay``
  frames behind the first packet and advances one frame per ``pull``,
  in the codec's clock (a frame is ``ticks_per_frame`` units: 160 at
  8000, 960 for Opus at 48000), so the buffer adapts at any clock rate.
  A packet older than the playout point, behind packets still buffered,
  is late (counted, dropped) and makes the delay one frame longer (up to
  ``max_delay``: one recovered frame is played while the playout point
  waits); one that comes after the buffer ran dry (a sender whose clock
  runs slow, or that paused) moves playout back behind it.  One frame is
  skipped when more is buffered than ``delay`` + 1 (a sender whose clock
  runs fast cannot grow the buffer without bound) or than the jitter
  needs (about three times it, in frames, at least ``min_delay``: the
  delay shrinks again).  A packet far ahead (a silence, a clock jump)
  restarts playout.
- **Loss**: a missing frame is recovered by the codec where it can (Opus:
  the next packet's in-band FEC, else its PLC), else the last frame is
  repeated at half level, then a quarter; after ``CONCEAL_FRAMES``
  silence (the party contributes nothing).
- **Events** (RFC 4733 §2.5): a telephone-event is reported once, when
  its first packet (a new event timestamp) arrives.
"""

import numpy as np

from .codecs import CODECS, FRAME, MIX_RATE, CodecError, Transcoder
from .packet import PacketError, ReportBlock, parse_event

__all__ = ["Receiver", "FRAME", "DIGITS"]

NEW_SOURCE_PACKETS = 3
CONCEAL_FRAMES = 2
MAX_SLOTS = 64                  # frames ahead of playout at most (1.28 s), else resync
MAX_PACKETS = 128               # packets held at most (a flood of tiny ones)
DIGITS = "0123456789*#ABCD"
G711_TYPES = {0: CODECS["PCMU"], 8: CODECS["PCMA"]}


def _one_clock(codecs):
    """The RTP clock rate all of ``codecs`` (payload type -> Codec) share."""
    clocks = {c.clock for c in codecs.values()}
    if len(clocks) != 1:
        raise ValueError(f"payload types of more than one clock rate: {sorted(clocks)}")
    return clocks.pop()


class Receiver:
    """See the module docstring.  ``codecs``: payload type -> codecs.Codec
    (the answer's); all must share one RTP clock rate."""

    def __init__(self, codecs=None, event_pt=None, min_delay=1, max_delay=8, rate=MIX_RATE):
        self.codecs = dict(G711_TYPES if codecs is None else codecs)
        self.clock = _one_clock(self.codecs)
        self.tpf = self.clock // 50                 # RTP ticks in one 20 ms frame
        self.rate, self.frame = rate, rate // 50    # what pull gives: 20 ms at the mixer's
        self.event_pt = event_pt
        self.min_delay, self.max_delay = min_delay, max_delay
        self._coders = {}           # codec name -> Transcoder (decoder state)
        self.ssrc = None
        self._candidate, self._candidate_count = None, 0
        self._reset()
        self.late = 0
        self.bad = 0
        self.recovered = 0          # frames the codec recovered (FEC, PLC)
        self.underruns = 0          # times the buffer ran dry and playout moved back

    def retune(self, codecs, event_pt):
        """A new answer: its payload types (a new clock rate starts afresh)."""
        clock = _one_clock(codecs)
        self.codecs, self.event_pt = dict(codecs), event_pt
        if clock != self.clock:
            self.clock, self.tpf = clock, clock // 50
            self._coders.clear()
            self._reset()

    def _reset(self):
        self.packets = {}           # RTP timestamp -> (codec, payload)
        self.pcm = None             # decoded samples beyond the last frame played
        self.playout = None         # timestamp of the next frame to play
        self.newest = None          # highest timestamp received
        self.delay = self.min_delay
        self.last = None            # last frame played (for concealment)
        self.concealed = 0
        self._late_pending = False
        # RFC 3550 A.1 / A.8 statistics
        self.base_seq = self.max_seq = None
        self.cycles = 0
        self.received = 0
        self.expected_prior = self.received_prior = 0
        self.jitter = 0.0           # timestamp units
        self._transit = None
        self._last_event = None

    # -- input ---------------------------------------------------------------

    def push(self, packet, arrival):
        """Take one parsed RTP packet; return the digit it starts, or None."""
        if not self._source(packet.ssrc):
            return None
        self._count(packet.seq, packet.timestamp, arrival)
        if packet.payload_type == self.event_pt:
            return self._event(packet)
        codec = self.codecs.get(packet.payload_type)
        if codec is None or not packet.payload:
            self.bad += 1
            return None
        self._store(packet.timestamp, codec, packet.payload)
        return None

    def _source(self, ssrc):
        if self.ssrc is None or ssrc == self.ssrc:
            self.ssrc = ssrc
            self._candidate_count = 0
            return True
        if ssrc == self._candidate:
            self._candidate_count += 1
        else:
            self._candidate, self._candidate_count = ssrc, 1
        if self._candidate_count >= NEW_SOURCE_PACKETS:
            self.ssrc, self._candidate = ssrc, None
            self._reset()
            return True
        return False

    def _count(self, seq, timestamp, arrival):
        if self.max_seq is None:
            self.base_seq = self.max_seq = seq
        else:
            delta = (seq - self.max_seq) & 0xFFFF
            if 0 < delta < 0x8000:
                if seq < self.max_seq:
                    self.cycles += 1 << 16
                self.max_seq = seq
        self.received += 1
        # Interarrival jitter, RFC 3550 A.8 (in timestamp units).
        transit = arrival * self.clock - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            self.jitter += (d - self.jitter) / 16
        self._transit = transit

    def _event(self, packet):
        try:
            event = parse_event(packet.payload)
        except PacketError:
            self.bad += 1
            return None
        if packet.timestamp == self._last_event or event.event >= len(DIGITS):
            return None
        self._last_event = packet.timestamp
        return DIGITS[event.event]

    def _store(self, timestamp, codec, payload):
        if self.playout is None or self._far(timestamp):
            # First packet, or a jump (a long silence, a restarted clock):
            # play this one ``delay`` frames from now.
            self.packets.clear()
            self.pcm = None
            self.playout = (timestamp - self.delay * self.tpf) & 0xFFFFFFFF
        ahead = self._ahead(timestamp)
        if ahead >= 0x80000000:                 # before the playout point
            if self.packets or self.pcm is not None:
                self.late += 1                  # behind packets already here: jitter
                self._late_pending = True
                return
            # Nothing was left to play: the sender's clock is slower than
            # ours, or it paused.  Play on ``delay`` frames behind it.
            self.underruns += 1
            self.playout = (timestamp - self.delay * self.tpf) & 0xFFFFFFFF
            ahead = self.delay * self.tpf
        if len(self.packets) >= MAX_PACKETS and timestamp not in self.packets:
            self.bad += 1
            return
        self.packets[timestamp] = (codec, payload)
        if self.newest is None or ahead > self._ahead(self.newest):
            self.newest = timestamp

    def _far(self, timestamp):
        """More than MAX_SLOTS frames from the playout point, either way."""
        ahead = self._ahead(timestamp)
        return min(ahead, 0x100000000 - ahead) >= MAX_SLOTS * self.tpf

    def _ahead(self, timestamp):
        """How far ``timestamp`` is past the playout point (mod 2^32: a
        value of 2^31 or more means before it)."""
        return (timestamp - self.playout) & 0xFFFFFFFF

    # -- output ----------------------------------------------------------------

    def pull(self):
        """The next 20 ms frame (int16 samples at MIX_RATE), or None: nothing to play."""
        if self.playout is None:
            return None
        if self._late_pending:
            self._late_pending = False
            if self.delay < self.max_delay:     # packets come late: one frame more delay
                self.delay += 1
                return self._lost()             # (the playout point stays)
        frame = self._take()
        self.playout = (self.playout + self.tpf) & 0xFFFFFFFF
        if frame is None:
            return self._lost()
        self._trim()
        self.last, self.concealed = frame, 0
        return frame

    def _trim(self):
        """Skip a frame when more is buffered than the delay aims at: the
        sender's clock runs fast (beyond ``delay`` + 1), or the network
        calmed down (the delay, above what the jitter needs, shrinks)."""
        if self.newest is None:
            return
        ahead = (self.newest - self.playout) & 0xFFFFFFFF
        if ahead >= 0x80000000:
            return
        buffered = ahead // self.tpf + 1
        target = max(self.min_delay, min(self.max_delay, int(3 * self.jitter / self.tpf) + 1))
        if buffered > self.delay + 1 or (self.delay > target and buffered > target + 1):
            self._take()                        # one frame less
            self.playout = (self.playout + self.tpf) & 0xFFFFFFFF
            if self.delay > target:
                self.delay -= 1

    def _take(self):
        """Decode what plays at the playout point into one frame (None:
        nothing there).  Packets shorter than a frame are joined; what a
        longer one decodes to beyond the frame is kept for the next."""
        if self.pcm is None and len(self.packets) <= self.delay + 1:    # the usual case
            entry = self.packets.pop(self.playout, None)
            if entry is not None:
                decoded = self._decode(entry)
                if decoded is None or len(decoded) == self.frame:
                    return decoded
                self.pcm = decoded              # shorter or longer: the general way
        pcm = self.pcm if self.pcm is not None else np.zeros(0, dtype=np.int16)
        self.pcm = None
        at = (self.playout + len(pcm) * self.tpf // self.frame) & 0xFFFFFFFF
        while len(pcm) < self.frame:
            entry = self.packets.pop(at, None)
            decoded = None if entry is None else self._decode(entry)
            if decoded is None or not len(decoded):
                break
            pcm = np.concatenate((pcm, decoded)) if len(pcm) else decoded
            at = (at + len(decoded) * self.tpf // self.frame) & 0xFFFFFFFF
        # Packets whose time has passed within this frame are gone.
        for stale in [t for t in self.packets
                      if self._ahead(t) < self.tpf or self._ahead(t) >= 0x80000000]:
            del self.packets[stale]
        if not len(pcm):
            return None
        if len(pcm) > self.frame:
            self.pcm = pcm[self.frame:]
        elif len(pcm) < self.frame:
            pcm = np.concatenate((pcm, np.zeros(self.frame - len(pcm), dtype=np.int16)))
        return pcm[:self.frame]

    def _decode(self, entry):
        """A stored (codec, payload), decoded; None (counted) if it does not."""
        codec, payload = entry
        try:
            return self._coder(codec).decode(payload)
        except (CodecError, ValueError):
            self.bad += 1
            return None

    def _coder(self, codec):
        coder = self._coders.get(codec.name)
        if coder is None:
            coder = self._coders[codec.name] = Transcoder(codec, self.rate)
        return coder

    def _lost(self):
        """A frame that did not come: the codec's recovery (Opus: the next
        packet's FEC, else PLC), else the last one fading out."""
        next_packet = self.packets.get(self.playout)
        codec = next_packet[0] if next_packet else next(iter(self.codecs.values()))
        if self.last is not None and self.concealed < CONCEAL_FRAMES:
            try:
                frame = self._coder(codec).recover(next_packet and next_packet[1])
            except CodecError:
                frame = None
            if frame is not None:
                self.concealed += 1
                self.recovered += 1
                self.last = frame
                return frame
        return self._conceal()

    def _conceal(self):
        if self.last is None or self.concealed >= CONCEAL_FRAMES:
            self.last = None
            return None
        self.concealed += 1
        return self.last >> self.concealed              # half, then a quarter

    # -- RTCP --------------------------------------------------------------------

    def report_block(self, last_sr=0, delay_since_sr=0):
        """RFC 3550 §6.4.1 for the source we follow (None before any packet)."""
        if self.ssrc is None or self.max_seq is None:
            return None
        extended = self.cycles + self.max_seq
        expected = extended - self.base_seq + 1
        lost = expected - self.received
        expected_interval = expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior, self.received_prior = expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = 0 if expected_interval <= 0 or lost_interval <= 0 else \
            (lost_interval << 8) // expected_interval
        lost = max(-(1 << 23), min(lost, (1 << 23) - 1))
        return ReportBlock(self.ssrc, min(fraction, 255), lost, extended & 0xFFFFFFFF,
                           int(self.jitter), last_sr, delay_since_sr)
