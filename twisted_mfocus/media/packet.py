"""RTP and RTCP on the wire (RFC 3550), and RFC 4733 telephone-events.

Pure functions over bytes: no sockets, no clock.  A malformed packet is a
``PacketError`` saying what is wrong (the caller drops the datagram and
logs once); every length is checked against the datagram before use.
"""

import struct
from typing import NamedTuple

__all__ = ["PacketError", "RTP", "parse_rtp", "build_rtp", "Event", "parse_event",
           "ReportBlock", "sender_report", "receiver_report", "parse_rtcp", "ntp_time"]

_RTP_HEADER = struct.Struct("!BBHII")
_EVENT = struct.Struct("!BBH")
_SR = struct.Struct("!BBHIIIIII")         # header, SSRC, NTP (2), RTP ts, packets, octets
_RR = struct.Struct("!BBHI")              # header, SSRC
_BLOCK = struct.Struct("!IIIIII")         # one report block (RFC 3550 §6.4.1)
_NTP_EPOCH = 2208988800                   # 1900-01-01 to 1970-01-01, seconds


class PacketError(ValueError):
    """A datagram that is not a usable RTP/RTCP packet; says why."""


class RTP(NamedTuple):
    payload_type: int
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes


def parse_rtp(data):
    """RFC 3550 §5.1: version 2, CSRCs, header extension (§5.3.1) and
    padding (§5.1 P bit) are skipped; the payload is what remains."""
    if len(data) < 12:
        raise PacketError(f"RTP packet of {len(data)} bytes is shorter than its header")
    first, second, seq, timestamp, ssrc = _RTP_HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise PacketError(f"RTP version {first >> 6}, not 2")
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if len(data) < offset + 4:
            raise PacketError("RTP header extension runs past the packet")
        offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
    end = len(data)
    if first & 0x20:
        if end == 0 or data[-1] == 0:
            raise PacketError("RTP padding count is zero")
        end -= data[-1]
    if end < offset:
        raise PacketError("RTP header, extension or padding run past the packet")
    return RTP(second & 0x7F, bool(second & 0x80), seq, timestamp, ssrc,
               bytes(data[offset:end]))


def build_rtp(payload_type, seq, timestamp, ssrc, payload, marker=False):
    return _RTP_HEADER.pack(0x80, (0x80 if marker else 0) | payload_type, seq & 0xFFFF,
                            timestamp & 0xFFFFFFFF, ssrc) + payload


class Event(NamedTuple):
    """One RFC 4733 §2.3 named event report."""

    event: int          # 0-9, 10 '*', 11 '#', 12-15 A-D
    end: bool
    volume: int
    duration: int


def parse_event(payload):
    if len(payload) < 4:
        raise PacketError("telephone-event payload shorter than 4 bytes")
    event, flags, duration = _EVENT.unpack_from(payload)
    return Event(event, bool(flags & 0x80), flags & 0x3F, duration)


# -- RTCP ---------------------------------------------------------------------

class ReportBlock(NamedTuple):
    """RFC 3550 §6.4.1: what we received from one source."""

    ssrc: int
    fraction_lost: int      # 0-255, of the packets expected since the last report
    cumulative_lost: int    # signed 24 bits
    highest_seq: int        # extended
    jitter: int             # timestamp units
    last_sr: int            # middle 32 bits of the last SR's NTP time
    delay_since_sr: int     # 1/65536 s


def ntp_time(unix_time):
    """(seconds, fraction) of NTP time (RFC 3550 §4)."""
    seconds = int(unix_time) + _NTP_EPOCH
    return seconds & 0xFFFFFFFF, int((unix_time % 1.0) * (1 << 32)) & 0xFFFFFFFF


def _block(b):
    lost = b.cumulative_lost & 0xFFFFFF
    return _BLOCK.pack(b.ssrc, (b.fraction_lost & 0xFF) << 24 | lost, b.highest_seq & 0xFFFFFFFF,
                       b.jitter & 0xFFFFFFFF, b.last_sr & 0xFFFFFFFF,
                       b.delay_since_sr & 0xFFFFFFFF)


def sender_report(ssrc, unix_time, rtp_timestamp, packets, octets, blocks=()):
    """An SR (PT 200, §6.4.1) with up to 31 report blocks."""
    blocks = list(blocks)[:31]
    words = 6 + 6 * len(blocks)
    seconds, fraction = ntp_time(unix_time)
    return _SR.pack(0x80 | len(blocks), 200, words, ssrc, seconds, fraction,
                    rtp_timestamp & 0xFFFFFFFF, packets & 0xFFFFFFFF,
                    octets & 0xFFFFFFFF) + b"".join(_block(b) for b in blocks)


def receiver_report(ssrc, blocks=()):
    """An RR (PT 201, §6.4.2)."""
    blocks = list(blocks)[:31]
    return _RR.pack(0x80 | len(blocks), 201, 1 + 6 * len(blocks), ssrc) + \
        b"".join(_block(b) for b in blocks)


def parse_rtcp(data):
    """The SR/RR packets of a compound RTCP packet (§6.1) as
    (packet type, sender SSRC, sender info or None, [ReportBlock]); other
    packet types (SDES, BYE, APP) are skipped."""
    out, offset = [], 0
    if len(data) < 4:
        raise PacketError("RTCP packet shorter than its header")
    while offset + 4 <= len(data):
        first, ptype, words = struct.unpack_from("!BBH", data, offset)
        if first >> 6 != 2:
            raise PacketError(f"RTCP version {first >> 6}, not 2")
        end = offset + 4 * (words + 1)
        if end > len(data):
            raise PacketError("RTCP length runs past the datagram")
        count = first & 0x1F
        if ptype in (200, 201):
            head = 28 if ptype == 200 else 8
            if end - offset < head + 24 * count:
                raise PacketError(f"RTCP {ptype} too short for {count} report blocks")
            ssrc = struct.unpack_from("!I", data, offset + 4)[0]
            info = struct.unpack_from("!IIIII", data, offset + 8) if ptype == 200 else None
            blocks = []
            for i in range(count):
                s, word, high, jitter, lsr, dlsr = _BLOCK.unpack_from(
                    data, offset + head + 24 * i)
                lost = word & 0xFFFFFF
                if lost & 0x800000:
                    lost -= 1 << 24
                blocks.append(ReportBlock(s, word >> 24, lost, high, jitter, lsr, dlsr))
            out.append((ptype, ssrc, info, blocks))
        offset = end
    return out
