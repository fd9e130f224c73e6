"""One member's inbound RTP: source tracking, statistics, an adaptive jitter
buffer, loss concealment and telephone-events (RFC 3550, RFC 4733).

Sans-IO: ``push(packet, arrival)`` with the arrival time in seconds from
the caller's clock, ``pull()`` once per mixer tick.  Frames are 20 ms
(160 samples at 8000 Hz); packets of other durations are cut into the
frame slots their timestamps fall in.

- **Sources** (RFC 3550 §8.2, A.1): the first SSRC heard is followed; a
  different SSRC that keeps sending (``NEW_SOURCE_PACKETS`` in a row)
  replaces it (a phone that restarted its stream) and resets the buffer.
- **Statistics** (A.1, A.3, A.8): extended highest sequence number,
  expected and lost packets, interarrival jitter; ``report_block`` gives
  the RTCP report block.
- **Jitter buffer**: playout starts ``delay`` frames behind the first
  packet and advances one frame per ``pull``.  A packet older than the
  playout point is late (counted, dropped) and makes the delay one frame
  longer (up to ``max_delay``: one concealment frame is played while the
  playout point waits); when more is buffered than the jitter needs
  (about three times it, in frames, at least ``min_delay``) one frame is
  skipped.  A packet far ahead (a silence, a clock jump) restarts playout.
- **Concealment**: a missing frame repeats the last one at half level,
  then a quarter; after ``CONCEAL_FRAMES`` silence (the member contributes
  nothing).
- **Events** (RFC 4733 §2.5): a telephone-event is reported once, when
  its first packet (a new event timestamp) arrives.
"""

import numpy as np

from .g711 import CODECS, decode
from .packet import PacketError, ReportBlock, parse_event

__all__ = ["Receiver", "FRAME", "DIGITS"]

FRAME = 160                     # samples per 20 ms tick at 8000 Hz
NEW_SOURCE_PACKETS = 3
CONCEAL_FRAMES = 2
MAX_SLOTS = 64                  # frames ahead of playout at most (1.28 s), else resync
DIGITS = "0123456789*#ABCD"


class Receiver:
    """See the module docstring."""

    def __init__(self, codecs=None, event_pt=None, min_delay=1, max_delay=8):
        self.codecs = dict(CODECS if codecs is None else codecs)   # PT -> codec name
        self.event_pt = event_pt
        self.min_delay, self.max_delay = min_delay, max_delay
        self.ssrc = None
        self._candidate, self._candidate_count = None, 0
        self._reset()
        self.late = 0
        self.bad = 0

    def _reset(self):
        self.slots = {}             # frame timestamp -> int16 samples (FRAME)
        self.playout = None         # timestamp of the next frame to play
        self.newest = None          # highest frame timestamp received
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
        self._store(packet.timestamp, decode(codec, packet.payload))
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
        transit = arrival * 8000 - timestamp
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

    def _store(self, timestamp, samples):
        if self.playout is None or self._far(timestamp):
            # First packet, or a jump (a long silence, a restarted clock):
            # play this one ``delay`` frames from now.
            self.slots.clear()
            self.playout = (timestamp - self.delay * FRAME) & 0xFFFFFFFF
        start = 0
        while start < len(samples):
            ahead = self._ahead(timestamp + start)
            if ahead >= 0x80000000:             # before the playout point: late
                self.late += 1
                self._late_pending = True
                return
            slot = (self.playout + (ahead // FRAME) * FRAME) & 0xFFFFFFFF
            offset = ahead % FRAME
            take = min(FRAME - offset, len(samples) - start)
            frame = self.slots.get(slot)
            if frame is None:
                frame = self.slots[slot] = np.zeros(FRAME, dtype=np.int16)
            frame[offset:offset + take] = samples[start:start + take]
            if self.newest is None or self._ahead(slot) > self._ahead(self.newest):
                self.newest = slot
            start += take

    def _far(self, timestamp):
        """More than MAX_SLOTS frames from the playout point, either way."""
        ahead = self._ahead(timestamp)
        return min(ahead, 0x100000000 - ahead) >= MAX_SLOTS * FRAME

    def _ahead(self, timestamp):
        """How far ``timestamp`` is past the playout point (mod 2^32: a
        value of 2^31 or more means before it)."""
        return (timestamp - self.playout) & 0xFFFFFFFF

    # -- output ----------------------------------------------------------------

    def pull(self):
        """The next 20 ms frame (int16 samples), or None: nothing to play."""
        if self.playout is None:
            return None
        if self._late_pending:
            self._late_pending = False
            if self.delay < self.max_delay:     # packets come late: one frame more delay
                self.delay += 1
                return self._conceal()          # (the playout point stays)
        frame = self.slots.pop(self.playout, None)
        self.playout = (self.playout + FRAME) & 0xFFFFFFFF
        if frame is None:
            return self._conceal()
        target = max(self.min_delay, min(self.max_delay, int(3 * self.jitter / FRAME) + 1))
        if self.delay > target and self.newest is not None and \
                self._ahead(self.newest) < 0x80000000 and \
                self._ahead(self.newest) // FRAME + 1 > target + 1:
            self.slots.pop(self.playout, None)  # more buffered than needed: skip one
            self.playout = (self.playout + FRAME) & 0xFFFFFFFF
            self.delay -= 1
        self.last, self.concealed = frame, 0
        return frame

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
