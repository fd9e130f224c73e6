"""SDP (RFC 4566) and the RFC 3264 offer/answer model for the focus' audio.

Sans-IO: bytes in, objects out, no reactor.  The focus speaks Opus,
G.722, PCMU and PCMA (codecs.py; 20 ms) plus RFC 4733 telephone-event at
the codec's clock, over RTP/AVP, or SRTP keyed by SDES (RTP/SAVP,
RTP/SAVPF, or RTP/AVP with a=crypto; the grammar and the keys are
srtp.py).  An answer takes the codec the focus prefers among those
offered (``[media] codecs``, best first), so two wideband sides talk
wideband; our offer lists them in that order.

Rules:
- Parsing is strict where a mistake would mislead us (``v=0`` first, known
  ``<letter>=`` lines only, RFC 4566 §5; numeric ``m=`` port; ``c=IN``
  with a valid address; an address for every stream in use, §5.7) and
  lenient where phones are sloppy: LF-only line ends, trailing blank lines,
  no ``a=rtpmap`` for static payload types (RFC 3551 §6), no ``s=``/``t=``.
- Input is bounded: at most ``MAX_SIZE`` bytes and ``MAX_MEDIA`` m= lines.
- An answer has the offer's m= lines in the same order (RFC 3264 §6); one
  audio stream is accepted, every other stream is rejected with port 0.
- Our o= version increments each time we send a changed SDP and stays the
  same when it is unchanged (RFC 3264 §8).
- Hold: the peer's direction sendonly/inactive (RFC 3264 §8.4), or the
  RFC 2543 style c=0.0.0.0, after which nothing is sent to it.
- SDES (RFC 4568): an answer carries one a=crypto line, the best suite
  offered, with a fresh key of ours (every answer, so a re-INVITE rekeys).
  Keys go only over TLS (§8.3): over a cleartext transport an SRTP offer
  is refused and an RTP/AVP one with a=crypto answered plain, unless
  ``sdes_over_cleartext``.  ``[media] srtp`` (srtp.Policy): ``off``
  refuses RTP/SAVP, ``mandatory`` refuses plain offers.  Every 488 says
  why, also as a Warning text.
"""

import ipaddress
import os
import random
import re
from collections import namedtuple
from dataclasses import dataclass
from typing import Optional, Tuple

from . import codecs as _codecs
from . import sdes, srtp

MAX_SIZE = 16 * 1024
MAX_MEDIA = 16
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly",
          "recvonly": "sendonly", "inactive": "inactive"}
# RFC 3551 §6, table 4: static audio payload types a phone may leave unmapped.
STATIC_AUDIO = {"0": ("PCMU", 8000, 1), "3": ("GSM", 8000, 1),
                "4": ("G723", 8000, 1), "8": ("PCMA", 8000, 1),
                "9": ("G722", 8000, 1), "18": ("G729", 8000, 1)}
PTIME = "20"
UNSPECIFIED = ("0.0.0.0", "::")     # RFC 3264 §8.4: "do not send to me"
DTMF_EVENTS = "0-15"     # RFC 4733 §3.2: the DTMF events 0-9, *, #, A-D
OPUS_PT = 96             # our dynamic payload type for Opus (RFC 3551 §3: 96-127)
EVENT_PTS = {8000: 101, 48000: 102, 16000: 103}   # telephone-event at each clock

_LINE = re.compile(r"([a-z])=(.*)\Z", re.S)
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\Z")
_SESSION_LETTERS = set("osiuepcbtrzkam")
_MEDIA_LETTERS = set("icbka")

Origin = namedtuple("Origin", "username sess_id sess_version nettype addrtype address")


BAD_REQUEST, NOT_ACCEPTABLE_HERE = 400, 488
PLAIN_PROFILE = "RTP/AVP"
PROFILES = (PLAIN_PROFILE,) + srtp.SECURE_PROFILES


class SDPError(ValueError):
    """Why an SDP body is unusable; ``reason`` is short text for a log or a
    reason phrase, always starting with ``SDP:``; ``warning`` the longer
    text of the Warning header (``warning_headers``).  ``status`` is the
    answer to the request that carried it: 400 for a body that does not
    parse, 488 for a well-formed offer we cannot accept (RFC 3261 §21.4.26,
    RFC 3264 §6)."""

    def __init__(self, reason, status=BAD_REQUEST, warning=None):
        self.reason = reason if reason.startswith("SDP:") else f"SDP: {reason}"
        self.status = status
        self.warning = warning or self.reason
        super().__init__(self.reason)


def warning_headers(error, hostport):
    """The headers of a refusal for ``error``: a 488 for media says why in
    ``Warning: 399 host:port "text"`` too (RFC 3261 §20.43, 399:
    miscellaneous; the text a §25.1 quoted-string of printable ASCII)."""
    if not isinstance(error, SDPError) or error.status != NOT_ACCEPTABLE_HERE:
        return []
    host, port = hostport
    agent = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    text = "".join(c if " " <= c <= "~" else "?" for c in error.warning[:200])
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return [("Warning", f'399 {agent} "{text}"')]


def _show(text):
    """A piece of input quoted for a reason phrase: short, no control chars."""
    shown = repr(text)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _addrtype(address):
    return "IP6" if ":" in address else "IP4"


def _check_address(address, addrtype, what):
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        if not _HOST.match(address) or address.replace(".", "").isdigit():
            raise SDPError(f"bad address {_show(address)} in {what}") from None
        return address                      # an FQDN (RFC 4566 §5.7)
    if (ip.version == 6) != (addrtype == "IP6"):
        raise SDPError(f"address {_show(address)} is not {addrtype} in {what}")
    return address


def _parse_connection(value):
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SDPError(f"bad c= line {_show(value)}")
    # Multicast "/ttl/count" suffixes are dropped: the focus is unicast.
    return _check_address(parts[2].split("/")[0], parts[1], "c= line")


class MediaDescription:
    """One m= section: the m= fields, its c= address and its a= lines."""

    def __init__(self, media, port, proto, formats, connection=None,
                 attributes=None, extra=None):
        self.media = media
        self.port = port
        self.proto = proto
        self.formats = list(formats)
        self.connection = connection
        self.attributes = list(attributes or [])
        #: other lines kept for output, as (letter, value): i=, b=, k=
        self.extra = list(extra or [])
        #: the session-level direction, the default for ours (RFC 3264 §5.1)
        self.session_direction = None

    @property
    def rtpmap(self):
        """pt -> (ENCODING, clock rate, channels), static types included."""
        result = {}
        if self.proto.startswith("RTP/"):
            result.update((pt, STATIC_AUDIO[pt]) for pt in self.formats
                          if pt in STATIC_AUDIO)
        for key, value in self.attributes:
            if key != "rtpmap" or value is None:
                continue
            m = re.match(r"(\d+)\s+([^/\s]+)/(\d+)(?:/(\d+))?\s*\Z", value)
            if m:   # a malformed rtpmap maps nothing, as if it were absent
                result[m.group(1)] = (m.group(2).upper(), int(m.group(3)),
                                      int(m.group(4) or 1))
        return result

    @property
    def fmtp(self):
        """pt -> the a=fmtp parameters as written."""
        pairs = (v.split(None, 1) for k, v in self.attributes if k == "fmtp" and v)
        return {p[0]: (p[1].strip() if len(p) > 1 else "") for p in pairs}

    @property
    def direction(self):
        for key, _ in reversed(self.attributes):
            if key in DIRECTIONS:
                return key
        return self.session_direction or "sendrecv"

    def _lines(self):
        yield "m", " ".join([self.media, str(self.port), self.proto] + self.formats)
        yield from ((k, v) for k, v in self.extra if k == "i")
        if self.connection is not None:
            yield "c", f"IN {_addrtype(self.connection)} {self.connection}"
        yield from ((k, v) for k, v in self.extra if k != "i")
        for name, value in self.attributes:
            yield "a", name if value is None else f"{name}:{value}"


class SessionDescription:
    """A whole SDP body: origin, session name, c= address, media sections."""

    def __init__(self, origin, session_name="-", connection=None, media=None,
                 attributes=None, extra=None):
        self.origin = Origin(*origin)
        self.session_name = session_name
        self.connection = connection
        self.media = list(media or [])
        self.attributes = list(attributes or [])
        #: other session lines kept for output, as (letter, value), in order
        self.extra = list(extra or [])

    @classmethod
    def parse(cls, data):
        if len(data) > MAX_SIZE:
            raise SDPError(f"body larger than {MAX_SIZE} bytes")
        if b"\0" in data:
            raise SDPError("NUL byte in body")
        text = data.decode("utf-8", "surrogateescape")
        lines = [line.rstrip("\r").rstrip(" \t") for line in text.split("\n")]
        while lines and not lines[-1]:
            lines.pop()
        if not lines or lines[0] != "v=0":
            raise SDPError("first line is not v=0")
        session = cls(("-", "0", 0, "IN", "IP4", "0.0.0.0"))
        origin = current = None
        for number, line in enumerate(lines[1:], 2):
            m = _LINE.match(line)
            if not m or "\r" in line:
                raise SDPError(f"line {number} is not <letter>=<value>: {_show(line)}")
            letter, value = m.groups()
            allowed = _MEDIA_LETTERS if current else _SESSION_LETTERS
            if letter not in allowed and letter != "m":
                where = "in a media description" if current else "here"
                raise SDPError(f"{letter}= line not allowed {where} (line {number})")
            if letter == "m":
                if len(session.media) >= MAX_MEDIA:
                    raise SDPError(f"more than {MAX_MEDIA} m= lines")
                current = _parse_media(value)
                session.media.append(current)
            elif letter == "a":
                name, sep, val = value.partition(":")
                (current or session).attributes.append((name, val if sep else None))
            elif letter == "c":
                (current or session).connection = _parse_connection(value)
            elif current is not None:
                current.extra.append((letter, value))
            elif letter == "o":
                if origin is not None:
                    raise SDPError("more than one o= line")
                origin = _parse_origin(value)
            elif letter == "s":
                session.session_name = value
            else:
                session.extra.append((letter, value))
        if origin is None:
            raise SDPError("no o= line")
        if not session.media:
            raise SDPError("no m= line")
        session.origin = origin
        own = [k for k, _ in session.attributes if k in DIRECTIONS]
        for media in session.media:
            media.session_direction = own[-1] if own else None
            if media.port and media.connection is None and session.connection is None:
                raise SDPError(f"no c= line for the {media.media} stream")
        return session

    def connection_of(self, media):
        """The address a stream uses: its own c= or the session's."""
        return media.connection if media.connection is not None else self.connection

    def _lines(self):
        yield "v", "0"
        yield "o", " ".join(str(x) for x in self.origin)
        yield "s", self.session_name or "-"
        yield from ((k, v) for k, v in self.extra if k in "iuep")
        if self.connection is not None:
            yield "c", f"IN {_addrtype(self.connection)} {self.connection}"
        yield from ((k, v) for k, v in self.extra if k == "b")
        timing = [(k, v) for k, v in self.extra if k in "tr"]
        yield from timing or [("t", "0 0")]
        yield from ((k, v) for k, v in self.extra if k in "zk")
        for name, value in self.attributes:
            yield "a", name if value is None else f"{name}:{value}"
        for media in self.media:
            yield from media._lines()

    def to_bytes(self):
        return "".join(f"{k}={v}\r\n" for k, v in self._lines()).encode(
            "utf-8", "surrogateescape")


def _parse_origin(value):
    parts = value.split()
    if (len(parts) != 6 or not parts[1].isdigit() or not parts[2].isdigit()
            or parts[3] != "IN" or parts[4] not in ("IP4", "IP6")):
        raise SDPError(f"bad o= line {_show(value)}")
    return Origin(parts[0], parts[1], int(parts[2]), parts[3], parts[4], parts[5])


def _parse_media(value):
    parts = value.split()
    if len(parts) < 3:
        raise SDPError(f"bad m= line {_show(value)}")
    port = parts[1].split("/")[0]          # "port/count" (RFC 4566 §5.14)
    if not port.isdigit() or int(port) > 65535:
        raise SDPError(f"bad m= port {_show(parts[1])}")
    if int(port) and len(parts) < 4:
        raise SDPError(f"m= line without formats {_show(value)}")
    return MediaDescription(parts[0], int(port), parts[2], parts[3:])


@dataclass(frozen=True)
class Negotiated:
    """The outcome of one offer/answer for the audio of one member.

    ``payload_type``/``telephone_event`` are the numbers to send with (the
    peer's).  ``remote`` is where to send RTP; None when the peer rejected
    the stream (then ``codec`` is None too) or gave no address (c=0.0.0.0).
    ``direction`` is ours; ``on_hold``: the peer put us on hold.
    ``keys``: the SRTP keys (srtp.Keys) when the stream is SRTP, else
    None; ``profile`` the m= line's (RTP/AVP may carry keys too)."""

    codec: Optional[str]
    payload_type: Optional[int]
    telephone_event: Optional[int]
    remote: Optional[Tuple[str, int]]
    direction: str
    on_hold: bool
    keys: Optional[srtp.Keys] = None
    profile: str = PLAIN_PROFILE
    format: Optional[_codecs.Codec] = None  # the codec as its rtpmap named it

    @property
    def media_codec(self):
        """The codecs.Codec to code with (None: no audio)."""
        return self.format or (_codecs.CODECS.get(self.codec) if self.codec else None)

    @property
    def srtp_profile(self):
        """The profile the keys were agreed on, None for plain RTP."""
        return self.profile if self.keys is not None else None


class LocalSession:
    """Our o= line across one dialog (RFC 3264 §8, RFC 4566 §5.2)."""

    def __init__(self, address, username="mfocus", sess_id=None):
        self.address = address
        self.username = username
        if sess_id is None:   # RFC 4566 §5.2: unique; random is enough
            sess_id = random.SystemRandom().randrange(1, 2**62)
        self.sess_id = str(sess_id)
        self.version = None          # the version last sent, None before
        self._last = None

    def stamp(self, sdp):
        """Set ``sdp``'s o= line: a new version only if the content changed."""
        sdp.origin = Origin(self.username, self.sess_id, 0, "IN",
                            _addrtype(self.address), self.address)
        content = sdp.to_bytes()
        if self.version is None:
            self.version = 1
        elif content != self._last:
            self.version += 1
        self._last = content
        sdp.origin = sdp.origin._replace(sess_version=self.version)
        return sdp

    def session(self, media):
        return SessionDescription(("-", "0", 0, "IN", "IP4", "0.0.0.0"), "mfocus",
                                  self.address, media)


def _flags(direction):
    return "send" in direction, "recv" in direction


def _direction(send, recv):
    return DIRECTIONS[2 * (not send) + (not recv)]


def _pick(media, preference=None):
    """The codec to use from ``media``'s formats: our most preferred one of
    ``preference`` (names) it has, or with None its first one we take
    (reading an answer: the answerer chose); (Codec, pt, channels as
    written) or None, and the telephone-event format, (pt, clock) or None:
    the one at that codec's clock (RFC 4733 §2.1), else any (baresip
    offers only 8000 beside Opus)."""
    rtpmap = media.rtpmap
    found, events = {}, {}
    for pt in media.formats:
        encoding, rate, channels = rtpmap.get(pt, (None, 0, 0))
        if not pt.isdigit():
            continue
        if encoding == "TELEPHONE-EVENT":
            events.setdefault(rate, pt)
            continue
        codec = _codecs.match(encoding, rate, channels)
        if codec is not None and codec.name not in found:
            found[codec.name] = (codec, pt, channels)
    names = [n for n in (preference or found) if n in found]
    if not names:
        return None, None
    chosen = found[names[0]]
    clock = chosen[0].clock if chosen[0].clock in events else next(iter(events), None)
    return chosen, (None if clock is None else (events[clock], clock))


def _audio_lines(formats, events, direction):
    """a= lines of our audio stream: ``formats`` [(pt, rtpmap text, fmtp)],
    ``events`` [(pt, clock, fmtp)]."""
    attributes = []
    for pt, rtpmap, fmtp in formats:
        attributes.append(("rtpmap", f"{pt} {rtpmap}"))
        if fmtp:
            attributes.append(("fmtp", f"{pt} {fmtp}"))
    for pt, clock, fmtp in events:
        attributes += [("rtpmap", f"{pt} telephone-event/{clock}"), ("fmtp", f"{pt} {fmtp}")]
    return attributes + [("ptime", PTIME), (direction, None)]


def _remote(sdp, media):
    address = sdp.connection_of(media)
    if not media.port or address is None or address in UNSPECIFIED:
        return None
    return (address, media.port)


def _crypto_values(media):
    return [v for k, v in media.attributes if k == "crypto"]


def _accept(offer, m, rtp_port, transport, policy, random_bytes, preference, mix_rate):
    """Our side of audio stream ``m``: (MediaDescription, Negotiated), or
    SDPError (488) saying why it cannot be taken."""
    if m.proto.startswith("UDP/TLS/"):  # RFC 5764 §8: DTLS-SRTP keys from a handshake
        raise SDPError("DTLS-SRTP not supported", NOT_ACCEPTABLE_HERE,
                       f"DTLS-SRTP ({m.proto}, RFC 5764) is not supported: offer RTP/SAVP "
                       f"with SDES keys (a=crypto, RFC 4568) over TLS")
    if m.proto not in PROFILES:
        raise SDPError(f"unsupported media profile {_show(m.proto)[1:-1]}",
                       NOT_ACCEPTABLE_HERE,
                       f"media profile {m.proto} not supported (we take "
                       f"{', '.join(PROFILES)})")
    chosen, event = _pick(m, preference)
    try:
        keys, crypto = sdes.answer_keys(m.proto, _crypto_values(m), transport, policy,
                                        random_bytes)
    except sdes.Refused as e:
        raise SDPError(e.reason, NOT_ACCEPTABLE_HERE, e.warning) from None
    if chosen is None:
        raise SDPError("no acceptable audio codec", NOT_ACCEPTABLE_HERE,
                       f"no acceptable audio codec: we take "
                       f"{', '.join(_codecs.CODECS[n].rtpmap() for n in preference)}")
    codec, pt, channels = chosen
    named = f"{codec.encoding}/{codec.clock}" + (       # channels as the offer wrote them
        f"/{channels}" if channels != 1 else "")
    theirs = m.direction
    unspecified = offer.connection_of(m) in UNSPECIFIED
    send, recv = _flags(MIRROR[theirs])
    mine = _direction(send and not unspecified, recv)  # RFC 3264 §8.4
    events = [(event[0], event[1], m.fmtp.get(event[0]) or DTMF_EVENTS)] if event else []
    event = event[0] if event else None         # its payload type
    attrs = _audio_lines([(pt, named, codec.fmtp_at(mix_rate))], events, mine)
    if crypto is not None:      # RFC 4568 §7.1.2: exactly one, the offer's tag
        attrs.insert(0, ("crypto", crypto))
    media = MediaDescription("audio", rtp_port, m.proto, [pt] + ([event] if event else []),
                             attributes=attrs)
    negotiated = Negotiated(
        codec=codec.name, payload_type=int(pt),
        telephone_event=int(event) if event else None,
        remote=_remote(offer, m), direction=mine,
        on_hold=theirs in ("sendonly", "inactive") or unspecified,
        keys=keys, profile=m.proto, format=codec)
    return media, negotiated


def answer(offer, local, rtp_port, transport="UDP", policy=srtp.Policy(),
           random_bytes=os.urandom, codecs=_codecs.DEFAULT, mix_rate=_codecs.MIX_RATE):
    """Answer ``offer`` (RFC 3264 §6): (our SessionDescription, Negotiated).

    ``transport`` is the one the offer came over: SDES keys are answered
    only over TLS unless ``policy.sdes_over_cleartext`` (RFC 4568 §8.3);
    ``policy.mode`` may refuse SRTP or plain RTP.  Raises SDPError (488)
    when no audio stream can be accepted, with the reason of the first
    audio stream refused ("SDES keys need TLS", "SRTP required", "SRTP is
    off here", "no acceptable crypto suite", "no acceptable audio codec",
    an unsupported profile).  ``codecs``: the names we take, best first
    ([media] codecs); ``mix_rate`` the mixer's ([media] mix_rate)."""
    negotiated = refused = None
    media = []
    for m in offer.media:
        if negotiated is None and m.media == "audio" and m.port:
            try:
                ours, negotiated = _accept(offer, m, rtp_port, transport, policy,
                                           random_bytes, codecs, mix_rate)
                media.append(ours)
                continue
            except SDPError as e:
                refused = refused or e
        # Rejected (RFC 3264 §6): port 0, and still at least one format.
        media.append(MediaDescription(m.media, 0, m.proto, m.formats[:1] or ["0"]))
    if negotiated is None:
        raise refused or SDPError("no acceptable audio codec", NOT_ACCEPTABLE_HERE,
                                  "no audio stream in the offer")
    return local.stamp(local.session(media)), negotiated


def offer(local, rtp_port, direction="sendrecv", srtp_profile=None, random_bytes=os.urandom,
          codecs=_codecs.DEFAULT, mix_rate=_codecs.MIX_RATE):
    """Our offer: one audio stream, the ``codecs`` (names, best first:
    opus 96, G722 9, PCMU 0, PCMA 8) and telephone-event at each of their
    clocks (101 at 8000, 102 at 48000).

    ``srtp_profile`` (srtp.Policy.offer_profile): the offer is SRTP on
    that profile, one a=crypto line per suite with fresh keys (RFC 4568
    §7.1.1), so a re-INVITE of ours never turns an encrypted call plain
    and a handed-over SRTP member is offered SRTP; None: plain RTP/AVP."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}")
    formats, clocks = [], []
    for name in codecs:
        codec = _codecs.CODECS[name]
        pt = str(codec.static_pt if codec.static_pt is not None else OPUS_PT)
        formats.append((pt, codec.rtpmap(), codec.fmtp_at(mix_rate)))
        if codec.clock not in clocks:
            clocks.append(codec.clock)
    events = [(str(EVENT_PTS[clock]), clock, DTMF_EVENTS) for clock in clocks]
    attrs = _audio_lines(formats, events, direction)
    proto = srtp_profile or PLAIN_PROFILE
    if srtp_profile is not None:
        attrs[:0] = [("crypto", line) for line in sdes.offer_lines(random_bytes)]
    media = MediaDescription("audio", rtp_port, proto,
                             [f[0] for f in formats] + [e[0] for e in events],
                             attributes=attrs)
    return local.stamp(local.session([media]))


def accept_answer(offer, answer):
    """Read the answer to our ``offer`` (RFC 3264 §7).

    Raises SDPError when the answer does not fit the offer (another number
    or kind of m= lines, a codec we did not offer, a crypto line we did not
    offer).  When the answer rejects our audio stream (port 0), ``remote``
    and ``codec`` are None."""
    if len(answer.media) != len(offer.media):
        raise SDPError(f"answer has {len(answer.media)} m= lines, "
                       f"the offer had {len(offer.media)}")
    pairs = list(zip(offer.media, answer.media))
    for ours, theirs in pairs:
        if ours.media != theirs.media:
            raise SDPError(f"answer has m={theirs.media} where the offer "
                           f"had m={ours.media}")
    for ours, theirs in pairs:
        if ours.media != "audio" or not ours.port:
            continue
        if not theirs.port:
            return Negotiated(None, None, None, None, "inactive", False)
        offered = {enc for enc, _, _ in ours.rtpmap.values()}
        chosen, event = _pick(theirs)
        if chosen is None or chosen[0].name not in offered:
            raise SDPError("answer has no codec from the offer")
        codec, pt, _ = chosen
        if event is not None:
            event = event[0] if "TELEPHONE-EVENT" in offered else None
        try:
            keys = sdes.answered_keys(ours.proto, _crypto_values(ours), _crypto_values(theirs))
        except sdes.Refused as e:
            raise SDPError(e.reason) from None
        unspecified = answer.connection_of(theirs) in UNSPECIFIED
        send, recv = _flags(ours.direction)
        peer_send, peer_recv = _flags(theirs.direction)
        # Lenient: a peer answering sendrecv to our sendonly still gets
        # only what we offered (the intersection of both directions).
        mine = _direction(send and peer_recv and not unspecified, recv and peer_send)
        return Negotiated(
            codec=codec.name, payload_type=int(pt),
            telephone_event=int(event) if event else None,
            remote=_remote(answer, theirs), direction=mine,
            on_hold=theirs.direction in ("sendonly", "inactive") or unspecified,
            keys=keys, profile=ours.proto, format=codec)
    raise SDPError("the offer has no audio stream", NOT_ACCEPTABLE_HERE)
