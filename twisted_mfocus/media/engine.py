"""The focus's audio: RTP in and out for every party, a 20 ms mixing tick
(the Twisted edge over receiver.py and mixer.py).

``MediaEngine`` owns one ``Mixer`` per conference and one ``Stream`` per
party (a member's call, or a cascade leg to another focus).  Every tick
(``LoopingCall`` on the reactor's clock, 20 ms) it pulls each party's next
frame from its jitter buffer into the mixer, mixes, and sends each party
its payload from the party's own RTP port.  Ticks the reactor ran late
are caught up (at most ``MAX_CATCH_UP`` frames), so the audio keeps its
rate; how late each tick ran is kept for the benchmark.

- Symmetric RTP (RFC 4961): we send to where the party's packets come
  from once any arrive, else to the SDP address.
- RTCP (RFC 3550 §6): every ``RTCP_INTERVAL`` seconds a sender report with
  a report block of what we receive, to the RTCP port of the party (its
  source, or the RTP port + 1).
- A malformed datagram is counted and dropped (logged once per stream).
- RFC 4733 digits go to ``on_digit(key, digit)``.
- A lobby stream (a caller asked for a PIN, focus/pin.py) is in no mixer:
  each tick it is sent what its source gives (prompts, silence) and its
  receiver is drained, so its digits keep coming; ``add`` moves it into a
  mixer, the same Stream (SSRC, sequence, latching kept).
"""

import os
import struct
import time

from twisted.internet import task
from twisted.logger import Logger

from .mixer import Mixer
from .packet import PacketError, build_rtp, parse_rtcp, parse_rtp, sender_report
from .receiver import FRAME, Receiver

__all__ = ["MediaEngine", "Stream", "TICK"]

TICK = FRAME / 8000             # 20 ms
RTCP_INTERVAL = 5.0
MAX_CATCH_UP = 5                # frames produced at most for one late tick
LATENESS_KEPT = 100000          # tick lateness samples kept for the benchmark


def _random32():
    return struct.unpack("!I", os.urandom(4))[0]


class Stream:
    """One party's RTP: what we receive (a Receiver) and how we send."""

    log = Logger()

    def __init__(self, engine, key, endpoint, negotiated):
        self.engine = engine
        self.key = key
        self.endpoint = endpoint
        self.receiver = Receiver(event_pt=negotiated.telephone_event or 101)
        self.ssrc = _random32()
        self.seq = _random32() & 0xFFFF
        self.timestamp = _random32()
        self.sent_packets = self.sent_octets = 0
        self.bad_logged = False
        self.latched = None             # where the party's RTP comes from
        self.latched_rtcp = None
        self.update(negotiated)
        endpoint.sink = self

    def update(self, negotiated):
        self.payload_type = negotiated.payload_type
        self.remote = negotiated.remote
        self.sends = negotiated.direction in ("sendrecv", "sendonly")   # lobby only

    # -- in ------------------------------------------------------------------

    def rtp_received(self, data, addr):
        try:
            packet = parse_rtp(data)
        except PacketError as e:
            self._bad(e, addr)
            return
        self.latched = addr
        digit = self.receiver.push(packet, self.engine.clock.seconds())
        if digit is not None:
            self.engine.on_digit(self.key, digit)

    def rtcp_received(self, data, addr):
        try:
            parse_rtcp(data)
        except PacketError as e:
            self._bad(e, addr)
            return
        self.latched_rtcp = addr

    def _bad(self, error, addr):
        self.receiver.bad += 1
        if not self.bad_logged:
            self.bad_logged = True
            self.log.info("dropping bad RTP/RTCP from {addr}: {why} (logged once per call)",
                          addr=addr, why=str(error))

    # -- out -----------------------------------------------------------------

    def send(self, payload):
        dest = self.latched or self.remote
        if dest is None or self.payload_type is None:
            return
        packet = build_rtp(self.payload_type, self.seq, self.timestamp, self.ssrc, payload)
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + FRAME) & 0xFFFFFFFF
        self.sent_packets += 1
        self.sent_octets += len(payload)
        try:
            self.endpoint.send_rtp(packet, dest)
        except OSError:
            pass

    def report(self):
        """An RTCP sender report (RFC 3550 §6.4.1) to the party."""
        rtp = self.latched or self.remote
        dest = self.latched_rtcp or (rtp and (rtp[0], rtp[1] + 1))
        if not dest:
            return
        block = self.receiver.report_block()
        report = sender_report(self.ssrc, time.time(), self.timestamp, self.sent_packets,
                               self.sent_octets, [block] if block else [])
        try:
            self.endpoint.send_rtcp(report, dest)
        except OSError:
            pass

    def close(self):
        if self.endpoint.sink is self:
            self.endpoint.sink = None


class MediaEngine:
    """Every conference's mixer and every party's stream at this focus."""

    log = Logger()

    def __init__(self, clock, on_digit=lambda key, digit: None):
        self.clock = clock
        self.on_digit = on_digit
        self.mixers = {}                # conference -> Mixer
        self.streams = {}               # key -> (conference, Stream)
        self.lobby = {}                 # key -> (Stream, source): in no mixer
        self.lateness = []              # seconds each tick ran late
        self._loop = None
        self._next = None
        self._reports = None            # the RTCP loop, beside the mixing tick

    # -- parties ---------------------------------------------------------------

    def add(self, conference, key, endpoint, negotiated, peer=False):
        """Mix ``key`` (a call with a negotiated G.711 codec) into ``conference``."""
        waiting = self.lobby.pop(key, None)
        self.remove(key)
        mixer = self.mixers.get(conference)
        if mixer is None:
            mixer = self.mixers[conference] = Mixer()
        mixer.add(key, negotiated.codec, peer=peer)
        if waiting is not None:                 # out of the lobby: the same stream
            stream = waiting[0]
            stream.update(negotiated)
        else:
            stream = Stream(self, key, endpoint, negotiated)
        self.streams[key] = (conference, stream)
        self._apply(key, negotiated)
        self._start()

    def add_lobby(self, key, endpoint, negotiated, source):
        """Keep ``key`` out of every mix; each tick it is sent ``source()``
        (a payload, or None: nothing)."""
        self.remove(key)
        self.lobby[key] = (Stream(self, key, endpoint, negotiated), source)
        self._start()

    def update(self, key, negotiated):
        """A re-INVITE changed the media (hold, codec, address)."""
        entry = self.streams.get(key)
        if entry is None:
            if key in self.lobby:
                self.lobby[key][0].update(negotiated)
            return
        entry[1].update(negotiated)
        self._apply(key, negotiated)

    def _apply(self, key, negotiated):
        conference, _ = self.streams[key]
        # We send only where our direction allows; a party on hold (its
        # music on hold included) is not heard.
        receives = negotiated.direction in ("sendrecv", "sendonly")
        self.mixers[conference].set(key, receives=receives, codec=negotiated.codec,
                                    held=negotiated.on_hold)

    def mute(self, key, muted):
        entry = self.streams.get(key)
        if entry is not None:
            self.mixers[entry[0]].set(key, muted=muted)

    def muted(self, key):
        entry = self.streams.get(key)
        return entry is not None and self.mixers[entry[0]].parties[key].muted

    def remove(self, key):
        waiting = self.lobby.pop(key, None)
        if waiting is not None:
            waiting[0].close()
        entry = self.streams.pop(key, None)
        if entry is not None:
            conference, stream = entry
            stream.close()
            mixer = self.mixers[conference]
            mixer.remove(key)
            if not mixer.parties:
                del self.mixers[conference]
        elif waiting is None:
            return
        if not self.streams and not self.lobby:
            self._stop()

    # -- the tick --------------------------------------------------------------

    def _start(self):
        if self._loop is None:
            self._loop = task.LoopingCall(self._tick)
            self._loop.clock = self.clock
            self._next = self.clock.seconds()
            self._loop.start(TICK, now=False)
            self._reports = task.LoopingCall(self._report)
            self._reports.clock = self.clock
            self._reports.start(RTCP_INTERVAL, now=False)

    def _stop(self):
        for loop in (self._loop, self._reports):
            if loop is not None and loop.running:
                loop.stop()
        self._loop = self._reports = None

    def _report(self):
        for _, stream in list(self.streams.values()):
            stream.report()
        for stream, _ in list(self.lobby.values()):
            stream.report()

    def _tick(self):
        now = self.clock.seconds()
        self._next += TICK
        late = now - self._next
        if len(self.lateness) < LATENESS_KEPT:
            self.lateness.append(max(0.0, late))
        frames = 1
        if late >= TICK:                # the reactor fell behind: catch up
            frames = min(MAX_CATCH_UP, 1 + int(late / TICK))
            self._next += (frames - 1) * TICK
            if late > MAX_CATCH_UP * TICK:
                self._next = now        # too far behind: start afresh
        for _ in range(frames):
            self.tick_once()

    def tick_once(self):
        """One 20 ms frame for every conference (the benchmark calls it too)."""
        streams = self.streams
        for conference, mixer in self.mixers.items():
            for key in mixer.parties:
                mixer.put(key, streams[key][1].receiver.pull())
            for key, payload in mixer.mix().items():
                streams[key][1].send(payload)
        if self.lobby:
            self._tick_lobby()

    def _tick_lobby(self):
        """The lobby streams' frame: drained, and sent their source's payload."""
        for stream, source in list(self.lobby.values()):
            stream.receiver.pull()
            payload = source()
            if payload is not None and stream.sends:
                stream.send(payload)

    def stop(self):
        for key in list(self.streams) + list(self.lobby):
            self.remove(key)
        self._stop()
