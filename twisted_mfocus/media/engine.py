"""The focus's audio: RTP in and out for every party, a 20 ms mixing tick
(the Twisted edge over receiver.py and mixer.py).

``MediaEngine`` owns one ``Mixer`` per conference and one ``Stream`` per
party (a member's call, or a cascade leg to another focus).  Every tick
(``LoopingCall`` on the reactor's clock, 20 ms) it pulls each party's next
frame from its jitter buffer into the mixer (decoded at the codec's rate;
one below the mixer's, G.711's 8 kHz under a 16 kHz mix, is widened only
when the mixer uses it: codecs.Interpolator), mixes, and sends each party
what it hears, coded by its call's codec (codecs.py), from the party's own
RTP port.  Ticks the reactor ran late are caught up (at most
``MAX_CATCH_UP`` frames), so the audio keeps its rate; how late each tick
ran is kept for the benchmark.

- Symmetric RTP (RFC 4961): we send to where the party's packets come
  from once its source is learned, else to the SDP address.  Strict
  latching (``Stream``): once learned, packets from anywhere else are
  dropped and counted (``Stream.dropped``), so a stranger can neither be
  heard nor take the party's audio (Asterisk's AST-2017-005).
- SRTP (RFC 3711) when the answer carried keys: incoming packets are
  unprotected before anything else reads them, outgoing ones protected;
  a packet failing authentication or the replay check is dropped and
  counted, never logged per packet.
- RTCP (RFC 3550 §6): every ``RTCP_INTERVAL`` seconds a sender report with
  a report block of what we receive, to the RTCP port of the party (its
  source, or the RTP port + 1).
- A malformed datagram is counted and dropped (logged once per stream and
  reason).
- RFC 4733 digits go to ``on_digit(key, digit)``.
- What many parties hear alike (the whole mix, for every member not
  speaking; our members' mix, for every peer) is coded once per tick and
  codec by a coder of the mix's own (``shared``), not once per party: a
  member moves between its own coder and the shared one as it starts and
  stops speaking (Opus decoders take that as a brief glitch).
- A lobby stream (a caller asked for a PIN, focus/pin.py) is in no mixer:
  each tick it is sent what its source gives (prompts, silence) and its
  receiver is drained, so its digits keep coming; ``add`` moves it into a
  mixer, the same Stream (SSRC, sequence, latching kept).
- A recording (media/recording.py, focus/recordings.py) is a ``tap``:
  each tick it is given its conference's whole mix (every voice once: our
  members and the peers' streams, which carry the other foci's members),
  or None while nobody is mixed; a tap keeps the tick running.
- Metrics (metrics.py): the packet counts are the streams' own, summed when
  scraped (``rtp_totals``, ended streams kept), so the packet path does no
  more work for them; a tick's lateness is observed once per tick, each
  receiving party's jitter buffer delay once per RTCP report.
"""

import array
import enum
import os
import struct
import time

from twisted.internet import task
from twisted.logger import Logger

from .mixer import Mixer
from .packet import PacketError, build_rtp, parse_rtcp, parse_rtp, sender_report
from .codecs import MIX_RATE, Transcoder, widening
from .receiver import Receiver
from .srtp import SrtpContext, SrtpError

__all__ = ["Drop", "Latch", "MediaEngine", "Stream", "TICK"]

TICK = 0.020                    # seconds of audio in one frame
RTCP_INTERVAL = 5.0
MAX_CATCH_UP = 5                # frames produced at most for one late tick
LATENESS_KEPT = 100000          # tick lateness samples kept for the benchmark
LEARN_PACKETS = 4               # packets in sequence that teach a source behind NAT
SPARE_MIXERS = 4                # empty mixers kept for reuse
RELATCH_AFTER = 10.0            # seconds of silence after which a source is learned again


class Latch(enum.Enum):
    """Where a stream takes RTP from (strict latching, cf. AST-2017-005)."""

    LEARNING = "learning"       # no source yet, or relearning after a re-INVITE/silence
    LOCKED = "locked"           # only the learned source is taken


class Drop(enum.StrEnum):
    """Why a datagram was dropped (``Stream.dropped`` counts by these)."""

    SOURCE = "source"           # not from the member's learned source
    AUTH = "auth"               # SRTP/SRTCP authentication failed (RFC 3711 §3.3)
    REPLAY = "replay"           # SRTP replay list (RFC 3711 §3.3.2)
    MALFORMED = "malformed"     # not RTP/RTCP at all


class Stream:
    """One party's RTP: what we receive (a Receiver) and how we send.

    Strict latching: a stream learns its party's source, then takes
    packets from that source only (``Latch``).  A source is learned from a
    packet with a negotiated payload type that comes from the SDP address
    or authenticates as SRTP, or else after ``LEARN_PACKETS`` in sequence
    from one address with one SSRC (a member behind NAT).  It is learned
    again after ``update`` (a re-INVITE) or after ``engine.relatch_after``
    seconds without a packet taken.  Until one is learned we send to the
    SDP address, or to the source locked before (never taken back without
    learning: it may be one that came after a silence)."""

    log = Logger()

    def __init__(self, engine, key, endpoint, negotiated):
        self.engine = engine
        self.key = key
        self.endpoint = endpoint
        #: made by update, for the answer's codec: the receiver decodes at the
        #: codec's rate, the widener brings what the mixer uses up to its rate
        self.receiver = self.coder = self.widener = None
        # RFC 3550 §5.1, §8.1: SSRC and initial sequence number and timestamp
        # random (unpredictable: known plaintext makes SRTP's job harder).
        self.ssrc, seq, self.timestamp = struct.unpack("!III", os.urandom(12))
        self.seq = seq & 0xFFFF
        self.sent_packets = self.sent_octets = 0
        self.received = 0               # RTP packets taken
        self.dropped = dict.fromkeys(Drop, 0)
        self.logged = set()             # the Drop reasons logged (once per call)
        self.latch = Latch.LEARNING
        self.latched = None             # the learned RTP source: where we send
        self.latched_rtcp = None
        self.last_heard = None          # clock time of the last packet taken (RTP or RTCP)
        self.quiet_since = engine.clock.seconds()   # silence is counted from here at most
        self.peer = False               # a cascade leg: another focus (no RTP timeout)
        self.silent = False             # reported silent (on_silent) once
        self._candidate = None          # (addr, ssrc, seq, count) while learning
        self.negotiated = self.srtp = None
        self.update(negotiated)
        endpoint.sink = self

    def update(self, negotiated):
        """A new offer/answer (or the first): payload types, keys, address;
        the source is learned again."""
        if negotiated is not self.negotiated:
            self.latch, self._candidate = Latch.LEARNING, None
            self.quiet_since = self.engine.clock.seconds()  # resumed: time to send again
        self.negotiated = negotiated
        codec, engine = negotiated.media_codec, self.engine
        if self.coder is None or codec != self.coder.codec:    # new coding state
            self.coder = Transcoder(codec, engine.rate)
            self.widener = widening(codec, engine.rate)
        types = {negotiated.payload_type: codec}
        rate = engine.rate if self.widener is None else codec.rate
        if self.receiver is None or self.receiver.rate != rate:
            self.receiver = Receiver(types, event_pt=negotiated.telephone_event or 101,
                                     min_delay=engine.jitter[0], max_delay=engine.jitter[1],
                                     rate=rate)
        else:
            self.receiver.retune(types, negotiated.telephone_event or self.receiver.event_pt)
        self.ticks = codec.ticks_per_frame      # RTP timestamp units per frame
        self.payload_type = negotiated.payload_type
        self.expected = {negotiated.payload_type, self.receiver.event_pt} - {None}
        self.remote = negotiated.remote
        self.sends = negotiated.direction in ("sendrecv", "sendonly")   # lobby only
        keys = negotiated.keys
        if keys is None:
            self.srtp = None
        elif self.srtp is None:
            self.srtp = SrtpContext(keys)
        else:
            self.srtp.rekey(keys)       # RFC 4568 §7.1.4: new keys, same SSRC

    # -- in ------------------------------------------------------------------

    def rtp_received(self, data, addr):
        now = self.engine.clock.seconds()
        if self.latch is Latch.LOCKED and addr != self.latched:
            if now - self.last_heard < self.engine.relatch_after:
                self._drop(Drop.SOURCE, addr, f"not the member's source {self.latched}")
                return
            self.latch, self._candidate = Latch.LEARNING, None     # long silence
        if len(data) < 12 or data[0] >> 6 != 2:
            self._drop(Drop.MALFORMED, addr, f"not RTP ({len(data)} bytes)")
            return
        if self.srtp is not None:
            try:
                data = self.srtp.unprotect_rtp(data)
            except SrtpError as e:
                self._drop(Drop(e.reason), addr, str(e))
                return
        try:
            packet = parse_rtp(data)
        except PacketError as e:
            self._drop(Drop.MALFORMED, addr, str(e))
            return
        if self.latch is Latch.LEARNING and not self._learn(packet, addr):
            self._drop(Drop.SOURCE, addr, "a source still to be learned")
            return
        self.received += 1
        self.last_heard = now
        digit = self.receiver.push(packet, now)
        if digit is not None:
            self.engine.on_digit(self.key, digit)

    def _learn(self, packet, addr):
        """Is ``addr`` the party's source?  Locks it if so."""
        if packet.payload_type not in self.expected:
            return False
        if not (addr == self.remote or self.srtp is not None):
            last = self._candidate
            count = 1
            if last is not None and last[:2] == (addr, packet.ssrc) and \
                    packet.seq == (last[2] + 1) & 0xFFFF:
                count = last[3] + 1
            self._candidate = (addr, packet.ssrc, packet.seq, count)
            if count < LEARN_PACKETS:
                return False
        if self.latched is not None and addr != self.latched:
            self.log.info("{key}: RTP source now {addr} (was {old})", key=self.key,
                          addr=addr, old=self.latched)
        if addr != self.latched:
            self.latched_rtcp = None
        self.latch, self.latched, self._candidate = Latch.LOCKED, addr, None
        return True

    def rtcp_received(self, data, addr):
        # RTCP is taken from the host RTP is locked to, or before that the
        # SDP's (its port may differ behind NAT: RFC 3550 §11 does not fix it).
        host = (self.latched or self.remote or (None,))[0]
        if addr[0] != host:
            self._drop(Drop.SOURCE, addr, f"RTCP not from the member's host {host}")
            return
        if self.srtp is not None:
            try:
                data = self.srtp.unprotect_rtcp(data)
            except SrtpError as e:
                self._drop(Drop(e.reason), addr, str(e))
                return
        try:
            parse_rtcp(data)
        except PacketError as e:
            self._drop(Drop.MALFORMED, addr, str(e))
            return
        self.latched_rtcp = addr
        self.last_heard = self.engine.clock.seconds()

    def _drop(self, reason, addr, why):
        """Counted; logged once per call and reason (a flood makes no lines)."""
        self.dropped[reason] += 1
        if reason is Drop.MALFORMED:
            self.receiver.bad += 1
        if reason not in self.logged:
            self.logged.add(reason)
            self.log.info("{key}: dropping RTP/RTCP from {addr} ({reason}): {why} "
                          "(logged once per call)", key=self.key, addr=addr,
                          reason=reason.value, why=why)

    # -- out -----------------------------------------------------------------

    def send(self, frame):
        """Send one 20 ms frame (int16 at the mixer's rate), coded by ours."""
        if (self.latched or self.remote) is not None and self.payload_type is not None:
            self.send_payload(self.coder.encode(frame))

    def send_payload(self, payload):
        """Send one 20 ms payload in our codec (coded once for many)."""
        dest = self.latched or self.remote
        if dest is None or self.payload_type is None:
            return
        packet = build_rtp(self.payload_type, self.seq, self.timestamp, self.ssrc, payload)
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + self.ticks) & 0xFFFFFFFF
        self.sent_packets += 1
        self.sent_octets += len(payload)
        try:
            if self.srtp is not None:
                packet = self.srtp.protect_rtp(packet)
            self.endpoint.send_rtp(packet, dest)
        except (OSError, SrtpError):
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
            if self.srtp is not None:
                report = self.srtp.protect_rtcp(report)     # RFC 3711 §3.4
            self.endpoint.send_rtcp(report, dest)
        except (OSError, SrtpError):
            pass

    def close(self):
        if self.endpoint.sink is self:
            self.endpoint.sink = None


class MediaEngine:
    """Every conference's mixer and every party's stream at this focus."""

    log = Logger()

    def __init__(self, clock, on_digit=lambda key, digit: None, relatch_after=RELATCH_AFTER,
                 rtp_timeout=0, hold_timeout=0, on_silent=lambda key: None, speakers=0,
                 jitter=(1, 8), rate=MIX_RATE):
        self.clock = clock
        self.rate = rate                        # [media] mix_rate
        #: [media] jitter_min/jitter_max: the jitter buffer's delay bounds, in frames
        self.jitter = jitter
        self.speakers = speakers                # [media] speakers: the loudest mixed
        self.on_digit = on_digit
        self.relatch_after = relatch_after      # [media] relatch_after
        #: [media] rtp_timeout / hold_timeout (0: none): seconds without a packet
        #: from a party that should send (or one on hold) before on_silent(key)
        self.rtp_timeout, self.hold_timeout = rtp_timeout, hold_timeout
        self.on_silent = on_silent
        self.mixers = {}                # conference -> Mixer
        self._spare = []                # empty mixers, for the next conference
        #: (conference, peers?, Codec) -> the Transcoder of a shared mix
        self.shared = {}
        self.streams = {}               # key -> (conference, Stream)
        self.lobby = {}                 # key -> (Stream, source): in no mixer
        #: conference -> feed(frame or None): a recording, given the whole mix
        self.taps = {}
        #: seconds each tick ran late (raw doubles: no float object per tick)
        self.lateness = array.array("d")
        self._loop = None
        self._next = None
        self._reports = None            # the RTCP loop, beside the mixing tick
        #: metrics.Metrics, set at wiring time (None: nothing observed)
        self.metrics = None
        #: the RTP counts of the streams that ended: [received, sent, {Drop: n}]
        self._ended = [0, 0, dict.fromkeys(Drop, 0)]

    # -- parties ---------------------------------------------------------------

    def add(self, conference, key, endpoint, negotiated, peer=False):
        """Mix ``key`` (a call with a negotiated codec) into ``conference``."""
        waiting = self.lobby.pop(key, None)
        self.remove(key)
        mixer = self.mixers.get(conference)
        if mixer is None:
            mixer = self.mixers[conference] = self._spare.pop() if self._spare else \
                Mixer(speakers=self.speakers, frame=self.rate // 50)
        mixer.add(key, peer=peer)
        if waiting is not None:                 # out of the lobby: the same stream
            stream = waiting[0]
            stream.update(negotiated)
        else:
            stream = Stream(self, key, endpoint, negotiated)
        stream.peer = peer
        self.streams[key] = (conference, stream)
        self._apply(key, negotiated)
        self._start()

    def add_lobby(self, key, endpoint, negotiated, source):
        """Keep ``key`` out of every mix; each tick it is sent ``source()``
        (a frame at the mixer's rate, or None: nothing)."""
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
        self.mixers[conference].set(key, receives=receives, held=negotiated.on_hold)

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
            self._close(waiting[0])
        entry = self.streams.pop(key, None)
        if entry is not None:
            conference, stream = entry
            self._close(stream)
            mixer = self.mixers[conference]
            mixer.remove(key)
            if not mixer.parties:
                del self.mixers[conference]
                if len(self._spare) < SPARE_MIXERS:   # a room that empties comes back
                    self._spare.append(mixer)
                for slot in [s for s in self.shared if s[0] == conference]:
                    del self.shared[slot]
        elif waiting is None:
            return
        if not self.streams and not self.lobby and not self.taps:
            self._stop()

    def tap(self, conference, feed):
        """Give ``feed`` the whole mix of ``conference`` every tick, from
        the next one (None for a tick when nobody there is mixed)."""
        self.taps[conference] = feed
        self._start()

    def untap(self, conference):
        if self.taps.pop(conference, None) is not None and \
                not (self.streams or self.lobby or self.taps):
            self._stop()

    def _close(self, stream):
        """Close ``stream``, keeping its counts for ``rtp_totals``."""
        stream.close()
        ended = self._ended
        ended[0] += stream.received
        ended[1] += stream.sent_packets
        for reason, n in stream.dropped.items():
            ended[2][reason] += n

    def level(self, key):
        """How loud party ``key`` has been lately, 0..1 (mixer.py
        ``Mixer.level``), or None if it is in no mixer (the lobby, gone)."""
        entry = self.streams.get(key)
        mixer = self.mixers.get(entry[0]) if entry is not None else None
        return mixer.level(key) if mixer is not None else None

    def rtp_totals(self):
        """(RTP packets received, sent, {Drop: datagrams dropped}) by every
        stream so far, ended ones included: never decreasing (metrics.py
        reads them when scraped)."""
        received, sent, dropped = self._ended[0], self._ended[1], dict(self._ended[2])
        for stream in [s for _, s in self.streams.values()] + [s for s, _ in self.lobby.values()]:
            received += stream.received
            sent += stream.sent_packets
            for reason, n in stream.dropped.items():
                dropped[reason] += n
        return received, sent, dropped

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
        metrics, now = self.metrics, self.clock.seconds()
        for key, (_, stream) in list(self.streams.items()):
            stream.report()
            if metrics is not None and stream.last_heard is not None and \
                    now - stream.last_heard < RTCP_INTERVAL:      # receiving: its delay counts
                metrics.jitter_delay.observe(stream.receiver.delay * TICK)
            if self._silent(stream):
                stream.silent = True
                self.on_silent(key)
        for stream, _ in list(self.lobby.values()):
            stream.report()

    def _silent(self, stream):
        """Has a member's stream been quiet past its timeout?  A sendrecv
        member gets ``rtp_timeout``; one on hold (sendonly or inactive: it
        may send nothing) ``hold_timeout``; RTP or RTCP both count."""
        if stream.peer or stream.silent:
            return False
        talking = stream.negotiated.direction == "sendrecv"
        limit = self.rtp_timeout if talking else self.hold_timeout
        heard = max(stream.last_heard or 0.0, stream.quiet_since)
        return bool(limit) and self.clock.seconds() - heard > limit

    def _tick(self):
        now = self.clock.seconds()
        self._next += TICK
        late = now - self._next
        if len(self.lateness) < LATENESS_KEPT:
            self.lateness.append(max(0.0, late))
        if self.metrics is not None:
            self.metrics.tick_lateness.observe(max(0.0, late))
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
                stream = streams[key][1]
                frame, widener = stream.receiver.pull(), stream.widener
                if frame is None or widener is None:
                    mixer.put(key, frame)
                else:                   # at the codec's rate: widened if mixed
                    widener.push(frame)
                    mixer.put(key, frame, widener.last)
            coded = {}                  # this tick's shared payloads, by coder
            for key, frame in mixer.mix().items():
                stream = streams[key][1]
                if frame is mixer.whole or frame is mixer.ours:
                    # Heard by many: coded once per codec, one shared coder.
                    slot = (conference, frame is mixer.ours, stream.coder.codec)
                    payload = coded.get(slot)
                    if payload is None:
                        coder = self.shared.get(slot)
                        if coder is None:
                            coder = self.shared[slot] = Transcoder(slot[2], self.rate)
                        payload = coded[slot] = coder.encode(frame)
                    stream.send_payload(payload)
                else:
                    stream.send(frame)
        if self.taps:
            mixers = self.mixers
            for conference, feed in list(self.taps.items()):
                mixer = mixers.get(conference)
                feed(None if mixer is None else mixer.whole)
        if self.lobby:
            self._tick_lobby()

    def _tick_lobby(self):
        """The lobby streams' frame: drained, and sent their source's payload."""
        for stream, source in list(self.lobby.values()):
            stream.receiver.pull()
            frame = source()
            if frame is not None and stream.sends:
                stream.send(frame)

    def stop(self):
        self.taps.clear()
        for key in list(self.streams) + list(self.lobby):
            self.remove(key)
        self._stop()
